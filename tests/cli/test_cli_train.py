"""End-to-end CLI runs on tiny synthetic configs: outputs, eval-only, export, outdir rules, resume."""
import json
import socket

import torch

from resnest_engine.models import get_model

from tests.cli.cli_helpers import cli_env, run_cli


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_train_eval_export_and_outdir_rules(tmp_path, write_config):
    cfg = write_config()
    out = tmp_path / "run"
    r = run_cli("--config-file", cfg, "--outdir", out)
    assert r.returncode == 0, r.stderr
    for name in ("config.yaml", "log.txt", "metrics.json", "model_weights.pt", "checkpoints"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epoch"] == 2 and metrics["weights"] == "raw"
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    log = (out / "log.txt").read_text()
    assert "Batch: 1| Loss:" in log and "Validation: Top1:" in log

    # --eval-only reproduces the final numbers, from the weights file and from the checkpoint.
    r = run_cli("--config-file", cfg, "--outdir", out, "--eval-only", "--resume",
                out / "model_weights.pt")
    assert r.returncode == 0, r.stderr
    assert f"Validation: Top1: {metrics['top1']:.3f} | Top5: {metrics['top5']:.3f}" in r.stdout
    ckpt = sorted((out / "checkpoints").glob("resume-*.pt"))[-1]
    r = run_cli("--config-file", cfg, "--outdir", out, "--eval-only", "--resume", ckpt)
    assert f"Validation: Top1: {metrics['top1']:.3f}" in r.stdout, r.stderr

    # --export writes a state_dict that loads strictly into get_model, and a .pt2 program.
    r = run_cli("--config-file", cfg, "--outdir", out, "--export", tmp_path / "w.pt", "--resume", ckpt)
    assert r.returncode == 0, r.stderr
    model = get_model("resnest14", num_classes=4)
    model.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True), strict=True)
    final = torch.load(out / "model_weights.pt", weights_only=True)
    assert all(torch.equal(final[k], v) for k, v in model.state_dict().items())
    r = run_cli("--config-file", cfg, "--outdir", out, "--export", tmp_path / "m.pt2", "--resume", ckpt)
    assert r.returncode == 0, r.stderr
    program = torch.export.load(str(tmp_path / "m.pt2"))
    x = torch.randn(1, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(program.module()(x), model(x), rtol=1e-4, atol=1e-5)

    # An existing run directory is refused; --force moves it aside, deleting nothing.
    before = (out / "metrics.json").read_text()
    r = run_cli("--config-file", cfg, "--outdir", out)
    assert r.returncode == 2 and "already exists" in r.stderr and r.stderr.count("\n") == 1
    assert (out / "metrics.json").read_text() == before
    # A finished run resumed with auto: nothing to do, nothing changed.
    r = run_cli("--config-file", cfg, "--outdir", out, "--resume", "auto")
    assert r.returncode == 0 and "already finished" in r.stdout
    assert (out / "metrics.json").read_text() == before
    r = run_cli("--config-file", cfg, "--outdir", out, "--force", "TRAINING.EPOCHS=1",
                "OPTIMIZER.WARMUP_EPOCHS=0")
    assert r.returncode == 0, r.stderr
    backups = list(tmp_path.glob("run.bak-*"))
    assert len(backups) == 1 and (backups[0] / "metrics.json").read_text() == before


def test_resume_rules(tmp_path, write_config):
    cfg = write_config({"TRAINING": {"EPOCHS": 3}})
    out = tmp_path / "run"
    # --resume auto with nothing there starts from the beginning.
    r = run_cli("--config-file", cfg, "--outdir", out, "--resume", "auto", "TRAINING.EPOCHS=1",
                "OPTIMIZER.WARMUP_EPOCHS=0")
    assert r.returncode == 0, r.stderr
    assert "starting from the beginning" in r.stderr
    ckpt = sorted((out / "checkpoints").glob("resume-*.pt"))[-1]
    # The saved config wins: changing the trajectory on resume is refused ...
    r = run_cli("--config-file", cfg, "--outdir", out, "--resume", ckpt, "OPTIMIZER.LR=0.1")
    assert r.returncode == 2 and "OPTIMIZER.LR" in r.stderr
    # ... harmless overrides are fine (and the run is already finished: nothing to do).
    r = run_cli("--config-file", cfg, "--outdir", out, "--resume", "auto", "DATA.WORKERS=1")
    assert r.returncode == 0 and "already finished" in r.stdout, r.stderr


def test_two_processes_spawned_torchrun_and_two_nodes(tmp_path, write_config):
    cfg = write_config({"TRAINING": {"EPOCHS": 1}, "OPTIMIZER": {"WARMUP_EPOCHS": 0}})
    outs = {}
    r = run_cli("--config-file", cfg, "--outdir", tmp_path / "spawn", "--nproc-per-node", 2,
                "--master-port", _free_port())
    assert r.returncode == 0, r.stderr
    outs["spawn"] = json.loads((tmp_path / "spawn" / "metrics.json").read_text())

    import subprocess
    import sys
    port = _free_port()
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                        "--master-port", str(port), "-m", "resnest_engine.cli", "--config-file",
                        str(cfg), "--outdir", str(tmp_path / "torchrun")],
                       capture_output=True, text=True, timeout=240, env=cli_env())
    assert r.returncode == 0, r.stderr
    outs["torchrun"] = json.loads((tmp_path / "torchrun" / "metrics.json").read_text())

    port = _free_port()
    common = ["--config-file", str(cfg), "--outdir", str(tmp_path / "nodes"), "--nnodes", "2",
              "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port)]
    procs = [subprocess.Popen([sys.executable, "-m", "resnest_engine.cli", *common,
                               "--node-rank", str(rank)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=cli_env()) for rank in (0, 1)]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    outs["nodes"] = json.loads((tmp_path / "nodes" / "metrics.json").read_text())
    # Same recipe, same world size, same seed: the same numbers, however it was launched.
    assert outs["spawn"]["history"] == outs["torchrun"]["history"] == outs["nodes"]["history"]
