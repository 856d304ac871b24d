"""A run SIGKILLed at any moment and resumed with --resume auto ends bitwise where it would have."""
import signal

import pytest
import yaml

from tests.support.cli import TINY, assert_same_result, cli_env, merge, run_cli, run_main

pytestmark = pytest.mark.slow  # every test here runs and kills resnest-train processes

# A worker process: the augmentation keys must travel. DATA.CACHE true: the runs read the
# decoded store in shared memory (one case kills a per-sample run and resumes it on the cache).
CONFIG = {"TRAINING": {"EPOCHS": 3, "CKPT_EVERY_ITERS": 2, "KEEP_CHECKPOINTS": 2},
          "DATA": {"WORKERS": 1, "CACHE": True}}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, request):
    d = tmp_path_factory.mktemp("reference")
    cfg = d / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(merge(TINY, CONFIG)))
    # In this process (no interpreter start-up): only the killed runs need a process of their own.
    # Bitwise the same as a resnest-train process: one thread here and there (OMP_NUM_THREADS=1).
    r = run_main("--config-file", cfg, "--outdir", d / "run")
    assert r.returncode == 0, r.stderr
    return cfg, d / "run"


@pytest.mark.parametrize("env, killed_run", [
    ({"RESNEST_ENGINE_KILL_AT_ITER": "5"}, ()),  # mid-epoch (3 steps per epoch), between points
    ({"RESNEST_ENGINE_KILL_IN_SAVE": "3"}, ()),  # inside the 3rd checkpoint write
    ({"RESNEST_ENGINE_KILL_AT_ITER": "5"}, ("DATA.CACHE=false",)),  # per-sample, then cache
], ids=["mid-epoch", "inside-checkpoint-write", "per-sample-then-cache"])
def test_sigkill_and_resume_is_bitwise_identical(tmp_path, reference, env, killed_run):
    cfg, ref = reference
    out = tmp_path / "run"
    killed = run_cli("--config-file", cfg, "--outdir", out, *killed_run,
                     env={**cli_env(), **env})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / "model_weights.pt").exists()
    # the run directory's config is the killed run's; DATA.CACHE may change on resume
    resumed = run_main("--config-file", cfg, "--outdir", out, "--resume", "auto",
                      *(("DATA.CACHE=true",) if killed_run else ()))
    assert resumed.returncode == 0, resumed.stderr
    log = (out / "log.txt").read_text()
    assert "Resumed from" in log
    assert log.count("Data cache: train split decoded once") == 2 - len(killed_run), log
    assert not list((out / "checkpoints").glob(".*.tmp-*")), "a stray temp file was left"
    assert_same_result(ref, out)


def test_resume_auto_falls_back_when_the_newest_point_is_corrupt(tmp_path, reference):
    cfg, ref = reference
    import shutil
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    (out / "model_weights.pt").unlink()
    newest, previous = sorted((out / "checkpoints").glob("resume-*.pt"), reverse=True)[:2]
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a full disk
    r = run_main("--config-file", cfg, "--outdir", out, "--resume", "auto")
    assert r.returncode == 0, r.stderr
    assert f"skipping {newest}" in r.stderr
    assert f"Resumed from {previous}" in (out / "log.txt").read_text()
    assert_same_result(ref, out)


def test_sigkill_and_resume_with_device_prefetch_on_is_bitwise_identical(tmp_path, reference):
    # DATA.PREFETCH true: the engine runs the DevicePrefetcher (a pass-through on the CPU); its
    # mid-epoch resume must start the wrapped loader where the killed run stopped.
    cfg, ref = reference
    out = tmp_path / "run"
    killed = run_cli("--config-file", cfg, "--outdir", out, "DATA.PREFETCH=true",
                     env={**cli_env(), "RESNEST_ENGINE_KILL_AT_ITER": "5"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = run_main("--config-file", cfg, "--outdir", out, "--resume", "auto",
                       "DATA.PREFETCH=true")
    assert resumed.returncode == 0, resumed.stderr
    log = (out / "log.txt").read_text()
    assert "Resumed from" in log and log.count("Device prefetch: on (as set") == 2, log
    assert_same_result(ref, out)
