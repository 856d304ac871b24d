"""Faults: SIGTERM, NaN loss, a dying DDP process, SIGKILL of the launcher. (A full disk, a dead
DataLoader worker and a flipped bit: test_real_faults.py, with the real mechanisms.)"""
import os
import signal
import subprocess
import time

import pytest
import yaml

from tests.support.cli import TINY, cli_env, free_port, merge, popen_cli, run_cli, run_main

pytestmark = pytest.mark.slow  # every test here runs resnest-train processes


def _cfg(tmp_path, extra=None):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(merge(TINY, extra)))
    return path


def _wait_for(path, text, proc, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and text in path.read_text():
            return
        if proc.poll() is not None:
            raise AssertionError(f"exited early: {proc.communicate()}")
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared in {path}")


# NAN_CHECK_EVERY 1: under DDP the ranks agree on a SIGTERM stop every NAN_CHECK_EVERY steps
# (default 50, more than this run's 2-step epochs); 1 stops right after the signal.
SLOW = {"TRAINING": {"EPOCHS": 50, "CKPT_EVERY": 0, "NAN_CHECK_EVERY": 1},
        "DATA": {"SYNTHETIC_SIZE": 32}}


@pytest.mark.parametrize("nproc", [1, 2])
def test_sigterm_writes_resume_point_and_says_how_to_resume(tmp_path, nproc):
    cfg = _cfg(tmp_path, SLOW)
    out = tmp_path / "run"
    extra = ["--nproc-per-node", 2, "--master-port", free_port()] if nproc == 2 else []
    proc = popen_cli("--config-file", cfg, "--outdir", out, *extra)
    _wait_for(out / "log.txt", "Batch: 2|", proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 4, (stdout, stderr)
    assert "--resume auto" in (out / "log.txt").read_text()
    points = sorted((out / "checkpoints").glob("resume-*.pt"))
    assert points, "no resume point written"
    # The resumed run picks up from that point (stopped again by SIGTERM to keep the test short).
    n_before = len((out / "log.txt").read_text().splitlines())
    proc = popen_cli("--config-file", cfg, "--outdir", out, "--resume", "auto", *extra)
    _wait_for(out / "log.txt", "Resumed from", proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 4, (stdout, stderr)
    assert len((out / "log.txt").read_text().splitlines()) > n_before


def test_nan_loss_stops_with_status_3_and_keeps_last_good_checkpoint(tmp_path):
    cfg = _cfg(tmp_path, {"TRAINING": {"EPOCHS": 4, "CKPT_EVERY": 1},
                          "OPTIMIZER": {"LR": 1.0e+12, "WARMUP_EPOCHS": 0, "WEIGHT_DECAY": 0.0}})
    out = tmp_path / "run"
    r = run_main("--config-file", cfg, "--outdir", out)
    assert r.returncode == 3, (r.stdout, r.stderr)
    log = (out / "log.txt").read_text()
    assert "NaN/Inf at iteration" in log and "OPTIMIZER.LR" in log
    assert not (out / "model_weights.pt").exists()


@pytest.mark.parametrize("launcher", ["spawn", "torchrun"])
def test_dead_ddp_process_does_not_hang_the_others(tmp_path, launcher):
    cfg = _cfg(tmp_path, {"TRAINING": {"EPOCHS": 3, "DIST_TIMEOUT": 30, "CKPT_EVERY_ITERS": 1}})
    out = tmp_path / "run"
    env = {**cli_env(), "RESNEST_ENGINE_KILL_AT_ITER": "4", "RESNEST_ENGINE_KILL_RANK": "1"}
    if launcher == "spawn":  # MASTER_PORT: a free port from cli_env()
        module, launch = "resnest_engine.cli", ["--nproc-per-node", "2"]
    else:
        module = "torch.distributed.run"
        launch = ["--nproc-per-node", "2", "--master-port", str(free_port()), "-m",
                  "resnest_engine.cli"]
    t0 = time.time()
    r = run_cli(*launch, "--config-file", cfg, "--outdir", out, env=env, timeout=200,
                module=module)
    assert r.returncode != 0
    assert time.time() - t0 < 120, "the surviving process waited too long"
    # The run continues from its last checkpoint, on 2 processes again (the built-in launcher for
    # both: what is checked is the checkpoint the dead run left, not the launcher again).
    r = run_cli("--nproc-per-node", "2", "--config-file", cfg, "--outdir", out, "--resume", "auto",
                timeout=200)
    assert r.returncode == 0, r.stderr
    assert (out / "model_weights.pt").exists()


def test_workers_die_with_the_launcher(tmp_path):
    cfg = _cfg(tmp_path, SLOW)
    out = tmp_path / "run"
    proc = popen_cli("--config-file", cfg, "--outdir", out, "--nproc-per-node", 2, "--master-port", free_port())
    _wait_for(out / "log.txt", "Batch: 1|", proc)
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert children
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 20
    alive = children
    while alive and time.time() < deadline:
        alive = [c for c in children if os.path.exists(f"/proc/{c}") and
                 "Z" not in open(f"/proc/{c}/stat").read().split()[2]]
        time.sleep(0.2)
    assert not alive, f"orphans still running: {alive}"
