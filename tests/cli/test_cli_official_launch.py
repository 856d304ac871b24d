"""The official train.py's launch habits: --rank/--dist-url/--dist-backend, one process per GPU by
default, --export NAME and --eval-only without --resume (the --outdir run's weights)."""
import json
import shutil

import pytest
import torch
import yaml

from resnest_engine.cli.args import build_parser, resolve_official_flags
from resnest_engine.cli.launch import default_nproc_per_node, resolve_launch_args
from resnest_engine.cli.launch import _world_size

from tests.support.cli import TINY, assert_user_error, merge, run_cli, run_main


def parse(*flags):
    return build_parser().parse_args(["--config-file", "x.yaml", *map(str, flags)])


@pytest.fixture
def gpus(monkeypatch):
    """Fake ``n`` visible CUDA devices (0: no CUDA), outside torchrun."""
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(k, raising=False)

    def _set(n):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    return _set


# --- official launch flags ---------------------------------------------------------------------

def test_official_flags_map_to_ours():
    a = resolve_official_flags(parse("--world-size", 2, "--rank", 1, "--dist-url",
                                     "tcp://10.0.0.1:23456", "--dist-backend", "gloo"))
    assert (a.nnodes, a.node_rank, a.master_addr, a.master_port, a.backend) == (
        2, 1, "10.0.0.1", 23456, "gloo")
    # Both spellings with the same value are fine.
    a = resolve_official_flags(parse("--rank", 0, "--node-rank", 0, "--dist-url", "tcp://h:5",
                                     "--master-addr", "h", "--master-port", 5,
                                     "--dist-backend", "nccl", "--backend", "nccl"))
    assert (a.node_rank, a.master_addr, a.master_port, a.backend) == (0, "h", 5, "nccl")


@pytest.mark.parametrize("url", ["http://x:1", "tcp://x", "tcp://:5", "tcp://x:70000", "tcp://x:0",
                                 "tcp://x:port", "x:23456"])
def test_bad_dist_url(tmp_path, url):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    r = run_main("--config-file", cfg, "--outdir", tmp_path / "out", "--dist-url", url)
    assert_user_error(r, "--dist-url", "tcp://HOST:PORT")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags,needles", [
    (["--rank", 1, "--node-rank", 0], ["--rank", "--node-rank"]),
    (["--dist-url", "tcp://10.0.0.1:23456", "--master-addr", "10.0.0.2"], ["--dist-url", "--master-addr"]),
    (["--dist-url", "tcp://10.0.0.1:23456", "--master-port", 29500], ["--dist-url", "--master-port"]),
    (["--dist-backend", "gloo", "--backend", "nccl"], ["--dist-backend", "--backend"]),
    # After the official flags are folded in, the usual rules apply with the usual messages.
    (["--world-size", 2, "--rank", 2, "--nproc-per-node", 1, "--dist-url", "tcp://127.0.0.1:29999"],
     ["--node-rank must be in [0, 1]"]),
    (["--world-size", 2, "--rank", 1, "--nproc-per-node", 1],
     ["--node-rank, --master-addr and --master-port"]),
])
def test_conflicting_or_incomplete_launch_flags(tmp_path, gpus, flags, needles):
    gpus(0)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    assert_user_error(run_main("--config-file", cfg, "--outdir", tmp_path / "out", *flags), *needles)


# --- one process per GPU -----------------------------------------------------------------------

def test_one_process_per_gpu_by_default(gpus, capsys):
    gpus(4)
    a = parse()
    assert default_nproc_per_node(a) == 4
    resolve_launch_args(a)
    assert a.nproc_per_node == 4 and _world_size(a) == 4
    assert capsys.readouterr().err.strip() == (
        "found 4 CUDA devices: starting 4 processes (one per GPU; --nproc-per-node 1 for one)")
    # Multi-node with GPUs: --nproc-per-node may be omitted; the world is GPUs x nodes.
    a = resolve_launch_args(parse("--world-size", 2, "--rank", 1, "--dist-url", "tcp://10.0.0.1:23456"))
    assert a.nproc_per_node == 4 and _world_size(a) == 8
    # --eval-only/--export run in this process: no spawn default.
    a = resolve_launch_args(parse("--eval-only"), spawn=False)
    assert a.nproc_per_node is None and _world_size(a) == 1


def test_nproc_per_node_opts_out_and_cpu_stays_one(gpus, capsys, monkeypatch):
    gpus(4)
    a = resolve_launch_args(parse("--nproc-per-node", 1))
    assert a.nproc_per_node == 1 and _world_size(a) == 1
    assert capsys.readouterr().err == ""
    gpus(1)  # a single GPU: this process, as before
    assert resolve_launch_args(parse()).nproc_per_node is None
    gpus(0)
    a = resolve_launch_args(parse())
    assert a.nproc_per_node is None and _world_size(a) == 1
    assert capsys.readouterr().err == ""
    gpus(4)  # a torchrun worker never spawns
    for k, v in (("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "h")):
        monkeypatch.setenv(k, v)
    assert default_nproc_per_node(parse()) is None


def test_batch_check_uses_the_gpu_count(tmp_path, gpus):
    gpus(3)  # TINY's batch of 16 does not divide by 3 processes
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    r = run_main("--config-file", cfg, "--outdir", tmp_path / "out")
    assert r.returncode == 2 and "does not divide by 3 processes" in r.stderr, r.stderr
    assert "found 3 CUDA devices" in r.stderr


# --- --export / --eval-only without --resume ---------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 2-epoch run, one step an epoch, trained in this process (a few seconds), with
    its best checkpoint (the export falls back to it)."""
    d = tmp_path_factory.mktemp("trained")
    cfg = d / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(merge(TINY, {"DATA": {"SYNTHETIC_SIZE": 16},
                                               "TRAINING": {"KEEP_BEST": 1},
                                               "OPTIMIZER": {"WARMUP_EPOCHS": 0}})))
    r = run_main("--config-file", cfg, "--outdir", d / "run")
    assert r.returncode == 0, r.stderr
    return cfg, d / "run"


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # run_cli: the console command
def test_export_without_resume_writes_name_pth(tmp_path, trained):
    cfg, run = trained
    r = run_cli("--config-file", cfg, "--outdir", run, "--export", "model_weights", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"exporting final weights {run / 'model_weights.pt'}" in r.stderr
    out = tmp_path / "model_weights.pth"
    assert _equal(torch.load(out, weights_only=True),
                  torch.load(run / "model_weights.pt", weights_only=True))
    assert not list(tmp_path.glob(".*tmp*"))


def test_export_falls_back_to_best_then_newest_resume_point(tmp_path, trained):
    cfg, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "model_weights.pt").unlink()
    best = sorted((copy / "checkpoints").glob("best-*.pt"))
    assert best
    r = run_main("--config-file", cfg, "--outdir", copy, "--export", tmp_path / "b.pt")
    assert r.returncode == 0, r.stderr
    assert f"exporting best checkpoint {best[-1]}" in r.stderr
    for p in best:
        p.unlink()
    newest = max((copy / "checkpoints").glob("resume-*.pt"))
    r = run_main("--config-file", cfg, "--outdir", copy, "--export", tmp_path / "n.pt")
    assert r.returncode == 0, r.stderr
    assert f"exporting newest resume point {newest}" in r.stderr
    # The run finished at the newest resume point: its weights are the final ones.
    assert _equal(torch.load(tmp_path / "n.pt", weights_only=True),
                  torch.load(run / "model_weights.pt", weights_only=True))


def test_export_or_eval_without_a_run_is_one_line(tmp_path, trained):
    cfg, _ = trained
    for flag in (["--export", tmp_path / "w"], ["--eval-only"]):
        r = run_main("--config-file", cfg, "--outdir", tmp_path / "empty", *flag)
        assert_user_error(r, flag[0], "no trained weights", "--resume PATH")
    assert not (tmp_path / "empty").exists() and not (tmp_path / "w.pth").exists()


def test_export_never_overwrites_the_run(tmp_path, trained):
    cfg, run = trained
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for name in (run / "model_weights.pt", run / "metrics.json", run / "config.yaml",
                 run / "log.txt", run / "checkpoints" / "x.pt", run / "checkpoints" / "mine"):
        r = run_main("--config-file", cfg, "--outdir", run, "--export", name)
        assert_user_error(r, "--export", "run directory")
    src = tmp_path / "src.pt"
    shutil.copy(run / "model_weights.pt", src)
    r = run_main("--config-file", cfg, "--outdir", run, "--resume", src, "--export", src)
    assert_user_error(r, "--export", "being exported")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.slow  # run_cli: the console command
def test_eval_only_without_resume_writes_eval_metrics(tmp_path, trained):
    cfg, run = trained
    metrics_before = (run / "metrics.json").read_bytes()
    r = run_main("--config-file", cfg, "--outdir", run, "--eval-only")
    assert r.returncode == 0, r.stderr
    assert f"evaluating final weights {run / 'model_weights.pt'}" in r.stderr
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("Validation:")]
    assert len(line) == 1
    got = json.loads((run / "eval_metrics.json").read_text())
    assert set(got) == {"top1", "top5"} and all(isinstance(v, float) for v in got.values())
    assert line[0] == f"Validation: Top1: {got['top1']:.3f} | Top5: {got['top5']:.3f}"
    assert f"wrote {run / 'eval_metrics.json'}" in r.stdout
    assert (run / "metrics.json").read_bytes() == metrics_before
    final = json.loads(metrics_before)
    assert (f"{final['top1']:.3f}", f"{final['top5']:.3f}") == (f"{got['top1']:.3f}",
                                                                 f"{got['top5']:.3f}")
    assert not list(run.glob(".*tmp*"))
