"""Exact resume on sharded data (issue 26): a run on tar shards in S3 (moto's server on
127.0.0.1) or on Parquet, SIGKILLed mid-epoch and resumed with --resume auto, ends bitwise where
the uninterrupted run ends; a 2-process run reads the shards from S3 and resumes on 1 process;
a resume against another data set is refused in one line."""
import json
import signal

import pytest
import yaml

from resnest_engine.workflows.shards import write_shards
from tests.cli.test_elastic_resume import stopped_at
from tests.support.cli import (assert_same_result, assert_user_error, cli_env, run_cli,
                               run_main)
from tests.support.parquet import folder_to_parquet
from tests.support.real_files import write_digits
from tests.support.remote import S3Server, set_env

pytestmark = pytest.mark.slow  # every test here runs and kills resnest-train processes

# 50 real digit scans (32x32 grey PNGs), global batch 16: 3 steps an epoch; a resume point every
# 2 steps; one DataLoader worker, so the per-sample keys cross a process boundary.
CONFIG = {"FORMAT": "resnest-engine/1", "SEED": 0,
          "MODEL": {"NAME": "resnest14", "ZERO_INIT_LAST": True},
          "DATA": {"IMAGE_SIZE": 32, "CROP_SIZE": 32, "SMALL_IMAGE": True, "HFLIP": False,
                   "COLOR_JITTER": 0.0, "PCA_LIGHTING": 0.0, "WORKERS": 1, "CACHE": False},
          "TRAINING": {"EPOCHS": 2, "BATCH_SIZE": 16, "TEST_BATCH_SIZE": 20,
                       "DETERMINISTIC": True, "CKPT_EVERY_ITERS": 2, "KEEP_CHECKPOINTS": 2},
          "OPTIMIZER": {"NAME": "adamw", "LR": 0.012, "WARMUP_EPOCHS": 0},
          "LOGGING": {"LOG_EVERY": 1, "TENSORBOARD": False}}


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """The digits folder as a shard set (13 samples a shard: 4 train shards) in S3 and as
    Parquet in the Hub's layout (row groups of 8), and another set of each (60 train images)."""
    d = tmp_path_factory.mktemp("sets")
    write_digits(d / "digits", 5, 2)  # 50 train, 20 val
    write_shards(d / "digits", str(d / "shards"), shard_size=13, progress=False)
    write_digits(d / "other", 6, 2)  # 60 train: another set
    write_shards(d / "other", str(d / "other-shards"), shard_size=13, progress=False)
    for src, name in (("digits", "parquet"), ("other", "other-parquet")):
        folder_to_parquet(d / src, d / name, layout="hub", files_per_split=2, row_group_size=8)
    server = S3Server()
    try:
        with pytest.MonkeyPatch.context() as mp:
            set_env(mp, server.env)
            urls = {"shards": server.upload(d / "shards", "data", "digits"),
                    "other": server.upload(d / "other-shards", "data", "other")}
        yield d, server, urls
    finally:
        server.stop()


def _config(tmp_path, **data):
    cfg = json.loads(json.dumps(CONFIG))
    cfg["DATA"].update(data)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _kill_and_resume(tmp_path, cfg, env, *wrong_resume, resume_with=()):
    ref = run_main("--config-file", cfg, "--outdir", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "run"
    killed = run_cli("--config-file", cfg, "--outdir", out,
                     env={**cli_env(), **env, "RESNEST_ENGINE_KILL_AT_ITER": "4"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr  # mid-epoch 2, after point i4
    if wrong_resume:
        before = sorted(p.name for p in (out / "checkpoints").iterdir())
        r = run_main("--config-file", cfg, "--outdir", out, "--resume", "auto", *wrong_resume)
        assert_user_error(r, "was trained on another data set",
                          "resume with the shards or Parquet files it was trained on")
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before
    resumed = run_main("--config-file", cfg, "--outdir", out, "--resume", "auto", *resume_with)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resumed from" in (out / "log.txt").read_text()
    assert_same_result(tmp_path / "ref", out)
    return (out / "log.txt").read_text()


def test_sigkill_on_s3_shards_and_resume_from_a_local_copy_is_bitwise(tmp_path, sets,
                                                                      monkeypatch):
    d, server, urls = sets
    set_env(monkeypatch, server.env)
    # auto: the window order (a URL root); each run fetches into its own cold cache
    cfg = _config(tmp_path, DATASET="shards", ROOT=urls["shards"],
                  CACHE_DIR=str(tmp_path / "cache"))
    # resumed from a local copy of the same set: same fingerprint, and the order the run
    # started with (auto alone would pick the global order for a local root)
    log = _kill_and_resume(tmp_path, cfg, server.env, f"DATA.ROOT={urls['other']}",
                           resume_with=[f"DATA.ROOT={d / 'shards'}"])
    assert log.count("Train order: window") == 3  # the run, the refused resume, the resume
    assert "data choices kept for the auto keys: DATA.SHUFFLE=window, DATA.SHUFFLE_WINDOW=4" \
        in log


def test_sigkill_and_resume_on_parquet_is_bitwise(tmp_path, sets):
    d, _, _ = sets
    # the window order over Parquet row groups (8 rows each)
    cfg = _config(tmp_path, DATASET="parquet", ROOT=str(d / "parquet"), SHUFFLE="window",
                  SHUFFLE_WINDOW=2)
    log = _kill_and_resume(tmp_path, cfg, {}, f"DATA.ROOT={d / 'other-parquet'}")
    assert log.count("Train order: window") == 3  # the run, the refused resume, the resume


def test_two_processes_read_s3_shards_and_resume_on_one(tmp_path, sets, monkeypatch):
    d, server, urls = sets
    set_env(monkeypatch, server.env)
    cfg = _config(tmp_path, DATASET="shards", ROOT=urls["shards"],
                  CACHE_DIR=str(tmp_path / "cache"))
    cfg.write_text(yaml.safe_dump({**yaml.safe_load(cfg.read_text()),
                                   "TRAINING": {**CONFIG["TRAINING"], "EPOCHS": 3,
                                                "CKPT_EVERY_ITERS": 1, "KEEP_CHECKPOINTS": 12}}))
    full = run_cli("--config-file", cfg, "--outdir", tmp_path / "full", "--nproc-per-node", "2",
                   env={**cli_env(), **server.env}, timeout=300)
    assert full.returncode == 0, full.stderr
    log = (tmp_path / "full" / "log.txt").read_text()
    assert "Train order: window" in log and "on 2 process(es)" in log
    # both processes fetched into the one cache: each shard once, verified
    index = json.loads((d / "shards" / "train" / "index.json").read_text())
    cached = sorted(p.name for p in (tmp_path / "cache" / "train").glob("*.tar"))
    assert cached == sorted(f"{s['sha256'][:16]}-{s['name']}" for s in index["shards"])
    # stopped mid-epoch 2 and resumed on 1 process: from the epoch-1 end, the same sequence
    stopped_at(tmp_path / "full", tmp_path / "elastic", 4, True)
    resumed = run_main("--config-file", cfg, "--outdir", tmp_path / "elastic", "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    log = (tmp_path / "elastic" / "log.txt").read_text()
    assert "Resuming a 2-process run on 1 processes" in log
    a = json.loads((tmp_path / "full" / "metrics.json").read_text())
    b = json.loads((tmp_path / "elastic" / "metrics.json").read_text())
    assert [h["epoch"] for h in b["history"]] == [1, 2, 3] and b["history"][0] == a["history"][0]
