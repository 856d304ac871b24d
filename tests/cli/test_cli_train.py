"""End-to-end CLI runs on a tiny synthetic config, as a user types them: one run trained once for
the module in a resnest-train process, then one test per thing a command does with it (outputs,
--eval-only, --export, the --outdir rules, --resume), each calling the command's ``main`` in this
process (the same code after the interpreter starts, without its 4 CPU-seconds of imports); and
the launchers (spawn, torchrun, two nodes) against each other, in processes."""
import json
import shutil
from types import SimpleNamespace

import pytest
import torch
import yaml

from resnest_engine.models import get_model

from tests.support.cli import TINY, free_port, merge, popen_cli, run_cli, run_main

pytestmark = pytest.mark.slow  # resnest-train runs, in processes and in this one


def _config(path, extra=None):
    path.write_text(yaml.safe_dump(merge(TINY, extra)))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """``resnest-train --config-file tiny.yaml --outdir run``: 2 epochs, run to the end. Tests
    that change the run directory work on a copy."""
    d = tmp_path_factory.mktemp("cli_train")
    cfg = _config(d / "tiny.yaml")
    out = d / "run"
    r = run_cli("--config-file", cfg, "--outdir", out)
    assert r.returncode == 0, r.stderr
    return SimpleNamespace(
        cfg=cfg, out=out, stdout=r.stdout,
        metrics=json.loads((out / "metrics.json").read_text()),
        last_ckpt=sorted((out / "checkpoints").glob("resume-*.pt"))[-1])


def test_run_writes_config_log_metrics_weights_and_checkpoints(finished):
    out = finished.out
    for name in ("config.yaml", "log.txt", "metrics.json", "model_weights.pt", "checkpoints"):
        assert (out / name).exists(), name
    metrics = finished.metrics
    assert metrics["epoch"] == 2 and metrics["weights"] == "raw"
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    log = (out / "log.txt").read_text()
    assert "Batch: 1| Loss:" in log and "Validation: Top1:" in log


@pytest.mark.parametrize("source", ["weights", "checkpoint"])
def test_eval_only_reproduces_the_final_numbers(finished, source):
    weights = finished.out / "model_weights.pt" if source == "weights" else finished.last_ckpt
    r = run_main("--config-file", finished.cfg, "--outdir", finished.out, "--eval-only",
                "--resume", weights)
    assert r.returncode == 0, r.stderr
    m = finished.metrics
    assert f"Validation: Top1: {m['top1']:.3f} | Top5: {m['top5']:.3f}" in r.stdout, r.stdout


def _final_model(finished):
    model = get_model("resnest14", num_classes=4)
    model.load_state_dict(torch.load(finished.out / "model_weights.pt", weights_only=True),
                          strict=True)
    return model.eval()


def test_export_writes_a_state_dict_of_the_final_weights(finished, tmp_path):
    r = run_main("--config-file", finished.cfg, "--outdir", finished.out, "--export",
                tmp_path / "w.pt", "--resume", finished.last_ckpt)
    assert r.returncode == 0, r.stderr
    model = get_model("resnest14", num_classes=4)
    model.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True), strict=True)
    final = torch.load(finished.out / "model_weights.pt", weights_only=True)
    assert all(torch.equal(final[k], v) for k, v in model.state_dict().items())


def test_export_pt2_writes_a_program_that_computes_the_final_model(finished, tmp_path):
    r = run_main("--config-file", finished.cfg, "--outdir", finished.out, "--export",
                tmp_path / "m.pt2", "--resume", finished.last_ckpt)
    assert r.returncode == 0, r.stderr
    program = torch.export.load(str(tmp_path / "m.pt2"))
    x = torch.randn(1, 3, 32, 32)
    # the program runs eager's ATen kernels: bitwise in fact; rtol 1e-4 = 840 eps32
    torch.testing.assert_close(program.module()(x), _final_model(finished)(x), rtol=1e-4,
                               atol=1e-5)


def test_an_existing_run_directory_is_refused(finished):
    before = (finished.out / "metrics.json").read_text()
    r = run_main("--config-file", finished.cfg, "--outdir", finished.out)
    assert r.returncode == 2 and "already exists" in r.stderr and r.stderr.count("\n") == 1
    assert (finished.out / "metrics.json").read_text() == before


def test_a_finished_run_resumed_with_auto_is_left_as_it_is(finished):
    before = (finished.out / "metrics.json").read_text()
    r = run_main("--config-file", finished.cfg, "--outdir", finished.out, "--resume", "auto")
    assert r.returncode == 0 and "already finished" in r.stdout, r.stderr
    assert (finished.out / "metrics.json").read_text() == before


def test_force_moves_the_old_run_aside_and_trains_afresh(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished.out, out)
    before = (out / "metrics.json").read_text()
    r = run_main("--config-file", finished.cfg, "--outdir", out, "--force", "TRAINING.EPOCHS=1",
                "OPTIMIZER.WARMUP_EPOCHS=0")
    assert r.returncode == 0, r.stderr
    backups = list(tmp_path.glob("run.bak-*"))  # moved aside, nothing deleted
    assert len(backups) == 1 and (backups[0] / "metrics.json").read_text() == before
    assert [h["epoch"] for h in json.loads((out / "metrics.json").read_text())["history"]] == [1]


def test_resume_auto_with_nothing_there_starts_from_the_beginning(tmp_path):
    cfg = _config(tmp_path / "tiny.yaml", {"TRAINING": {"EPOCHS": 1},
                                           "OPTIMIZER": {"WARMUP_EPOCHS": 0}})
    out = tmp_path / "run"
    r = run_main("--config-file", cfg, "--outdir", out, "--resume", "auto")
    assert r.returncode == 0, r.stderr
    assert "starting from the beginning" in r.stderr
    assert [h["epoch"] for h in json.loads((out / "metrics.json").read_text())["history"]] == [1]


@pytest.fixture
def longer_config(tmp_path):
    """The run's config file edited afterwards (3 epochs instead of 2)."""
    return _config(tmp_path / "tiny.yaml", {"TRAINING": {"EPOCHS": 3}})


def test_resume_refuses_a_trajectory_change_on_the_command_line(finished, longer_config):
    before = (finished.out / "metrics.json").read_text()
    r = run_main("--config-file", longer_config, "--outdir", finished.out, "--resume",
                finished.last_ckpt, "OPTIMIZER.LR=0.1")
    assert r.returncode == 2 and "OPTIMIZER.LR" in r.stderr, r.stderr
    assert (finished.out / "metrics.json").read_text() == before


def test_resume_keeps_the_saved_config_and_takes_harmless_overrides(finished, longer_config):
    # The saved config wins over the edited file (still 2 epochs: nothing left to do), and an
    # override that does not change the trajectory is accepted.
    before = (finished.out / "metrics.json").read_text()
    r = run_main("--config-file", longer_config, "--outdir", finished.out, "--resume", "auto",
                "DATA.WORKERS=1")
    assert r.returncode == 0 and "already finished" in r.stdout, r.stderr
    assert (finished.out / "metrics.json").read_text() == before


# --- launchers: same recipe, same world size, same seed: the same numbers ----------------------

@pytest.fixture(scope="module")
def launch_config(tmp_path_factory):
    """One epoch on a tar shard set (4 train shards of 12) in the window order: every launcher's
    processes read their contiguous part of the shards."""
    from resnest_engine.workflows.shards import write_shards
    from tests.support.data import make_folder
    d = tmp_path_factory.mktemp("launch")
    src = make_folder(d / "src", {"train": {c: 12 for c in "abcd"}, "val": {c: 4 for c in "abcd"}})
    write_shards(src, str(d / "set"), shard_size=12, progress=False)
    data = {**TINY["DATA"], "DATASET": "shards", "ROOT": str(d / "set"), "SHUFFLE": "window",
            "SHUFFLE_WINDOW": 2}
    return _config(d / "tiny.yaml", {"DATA": data, "TRAINING": {**TINY["TRAINING"], "EPOCHS": 1},
                                     "OPTIMIZER": {**TINY["OPTIMIZER"], "WARMUP_EPOCHS": 0}})


@pytest.fixture(scope="module")
def spawned(launch_config, tmp_path_factory):
    """Two processes started by ``resnest-train --nproc-per-node 2``: their history."""
    out = tmp_path_factory.mktemp("spawn") / "run"
    r = run_cli("--config-file", launch_config, "--outdir", out, "--nproc-per-node", 2,
                "--master-port", free_port())
    assert r.returncode == 0, r.stderr
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1]
    assert "Train order: window" in (out / "log.txt").read_text()
    return history


def test_torchrun_matches_spawn(launch_config, spawned, tmp_path):
    out = tmp_path / "torchrun"
    r = run_cli("--nproc-per-node", "2", "--master-port", free_port(), "-m", "resnest_engine.cli",
                "--config-file", launch_config, "--outdir", out, module="torch.distributed.run")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "metrics.json").read_text())["history"] == spawned


def test_two_nodes_match_spawn(launch_config, spawned, tmp_path):
    out = tmp_path / "nodes"
    common = ["--config-file", str(launch_config), "--outdir", str(out), "--nnodes", "2",
              "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port",
              str(free_port())]
    procs = [popen_cli(*common, "--node-rank", rank) for rank in (0, 1)]
    try:
        for p in procs:
            _, err = p.communicate(timeout=240)
            assert p.returncode == 0, err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert json.loads((out / "metrics.json").read_text())["history"] == spawned


def test_quick_start_reruns_keep_at_most_one_previous_run(tmp_path):
    """`make digits` reruns with --force --keep-previous 1: three runs leave the newest run and
    the one before it, and say what was deleted."""
    cfg = _config(tmp_path / "tiny.yaml", {"TRAINING": {"EPOCHS": 1},
                                           "OPTIMIZER": {"WARMUP_EPOCHS": 0},
                                           "DATA": {"SYNTHETIC_SIZE": 16}})
    out = tmp_path / "output" / "run"
    for seed in (1, 2, 3):
        r = run_main("--config-file", cfg, "--outdir", out, "--force", "--keep-previous", "1",
                     f"SEED={seed}")
        assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in out.parent.iterdir())
    assert len(names) == 2 and names[0] == "run" and names[1].startswith("run.bak-"), names
    kept = yaml.safe_load((out.parent / names[1] / "config.yaml").read_text())
    assert kept["SEED"] == 2 and yaml.safe_load((out / "config.yaml").read_text())["SEED"] == 3
    assert "deleted the older previous run" in r.stderr and "--keep-previous 1" in r.stderr
    r = run_main("--config-file", cfg, "--outdir", out, "--keep-previous", "1")
    assert r.returncode == 2 and "only with --force" in r.stderr
