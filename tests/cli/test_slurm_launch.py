"""``srun resnest-train`` (issue 12, item 2): each SLURM task is one process, ignite's ``idist``
takes the ranks and the rendezvous from SLURM's variables, rank 0 alone writes the run, and
``--resume auto`` continues it after a requeue. Run here as two tasks on loopback with the
variables ``srun`` would set, training on tar shards in the window order."""
import json
import shutil
import socket

import pytest
import yaml

from tests.support.cli import TINY, assert_user_error, cli_env, merge, popen_cli, run_cli, run_main

CONFIG = merge(TINY, {"TRAINING": {"EPOCHS": 2}})
START_LINE = "resnest-train arguments"
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS",
              "SLURM_JOB_NODELIST", "SLURM_JOB_NUM_NODES", "SLURM_TASKS_PER_NODE")
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _job_id():
    """A job id whose port (ignite: 15000 + its last 4 digits) is free now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if 15000 <= port <= 24999:
            return f"7{port - 15000:04d}"
    for _ in range(200):  # the ephemeral range does not overlap 15000..24999: probe it
        import random
        port = random.randint(15000, 24999)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return f"7{port - 15000:04d}"
    pytest.skip("no free port in 15000..24999")


def _srun(*args, ntasks=2, extra_env=None, timeout=240):
    """What ``srun --ntasks N resnest-train ARGS`` starts on one node: N tasks, SLURM's
    variables set; returns [(returncode, stdout, stderr)] by task."""
    job = _job_id()
    base = {k: v for k, v in cli_env().items() if k not in TORCHRUN_VARS + SLURM_VARS}
    procs = []
    for task in range(ntasks):
        env = dict(base, SLURM_JOB_ID=job, SLURM_PROCID=str(task), SLURM_LOCALID=str(task),
                   SLURM_NTASKS=str(ntasks), SLURM_JOB_NODELIST="localhost",
                   SLURM_JOB_NUM_NODES="1", SLURM_TASKS_PER_NODE=str(ntasks), **(extra_env or {}))
        procs.append(popen_cli(*args, env=env))
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            results.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return results


def _cut_back_to_epoch_1(full, target):
    """A copy of run ``full`` as a job pre-empted after epoch 1 would have left it."""
    shutil.copytree(full, target)
    for name in ("model_weights.pt", "metrics.json"):
        (target / name).unlink()
    kept = []
    for p in (target / "checkpoints").glob("*.pt"):
        if p.name.startswith("best-") or int(p.stem.split("-i")[-1]) > 3:
            p.unlink()
        else:
            kept.append(p.name)
    assert kept, "no resume point at the end of epoch 1"
    log = target / "log.txt"
    log.write_text(log.read_text().split("Epoch: 2, Time cost")[0])


@pytest.mark.slow
def test_two_slurm_tasks_match_spawn_and_resume_after_requeue(tmp_path):
    # The data: a tar shard set (4 train shards of 12) in the window order, so SLURM's tasks and
    # the spawned workers each read their contiguous part of the shards (and of the val shard)
    from resnest_engine.workflows.shards import write_shards
    from tests.support.data import make_folder
    src = make_folder(tmp_path / "data" / "src",
                      {"train": {c: 12 for c in "abcd"}, "val": {c: 4 for c in "abcd"}})
    write_shards(src, str(tmp_path / "data" / "set"), shard_size=12, progress=False)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(merge(CONFIG, {"DATA": {
        **CONFIG["DATA"], "DATASET": "shards", "ROOT": str(tmp_path / "data" / "set"),
        "SHUFFLE": "window", "SHUFFLE_WINDOW": 2}})))
    out = tmp_path / "slurm"
    results = _srun("--config-file", cfg, "--outdir", out)
    for code, stdout, err in results:
        assert code == 0, (code, stdout, err)

    spawn = run_cli("--config-file", cfg, "--outdir", tmp_path / "spawn", "--nproc-per-node", 2)
    assert spawn.returncode == 0, spawn.stderr
    a = json.loads((out / "metrics.json").read_text())
    b = json.loads((tmp_path / "spawn" / "metrics.json").read_text())
    assert [h["epoch"] for h in a["history"]] == [1, 2]
    assert a["history"] == b["history"]  # same world size, same seed: the same numbers

    # One run directory, written by rank 0 alone; no lock left behind.
    log = (out / "log.txt").read_text()
    assert log.count(START_LINE) == 1 and "(world size 2)" in log
    assert "Train order: window" in log
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml", "data", "slurm", "spawn"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        p.name for p in (tmp_path / "spawn").iterdir())

    # The requeued job runs the same command: a finished run is left as it is ...
    before = (out / "metrics.json").read_text()
    for code, stdout, err in _srun("--config-file", cfg, "--outdir", out, "--resume", "auto"):
        assert code == 0 and "already finished" in stdout, (code, stdout, err)
    assert (out / "metrics.json").read_text() == before

    # ... and one pre-empted after epoch 1 continues where it stopped, to the same numbers.
    _cut_back_to_epoch_1(out, tmp_path / "requeued")
    results = _srun("--config-file", cfg, "--outdir", tmp_path / "requeued", "--resume", "auto")
    for code, stdout, err in results:
        assert code == 0, (code, stdout, err)
    c = json.loads((tmp_path / "requeued" / "metrics.json").read_text())
    assert c["history"] == a["history"]
    assert "Resumed from " in (tmp_path / "requeued" / "log.txt").read_text()


def _slurm_env(monkeypatch, ntasks, procid=0):
    for k in TORCHRUN_VARS + SLURM_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "12345")
    monkeypatch.setenv("SLURM_PROCID", str(procid))
    monkeypatch.setenv("SLURM_LOCALID", str(procid))
    monkeypatch.setenv("SLURM_NTASKS", str(ntasks))
    monkeypatch.setenv("SLURM_JOB_NODELIST", "node[01-02]")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")


def _fake_gpus(monkeypatch, n):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


def _resolved(*args):
    from resnest_engine.cli.args import build_parser
    from resnest_engine.cli.launch import resolve_launch_args
    return resolve_launch_args(build_parser().parse_args(["--config-file", "x.yaml", *args]))


def test_slurm_task_is_one_process_of_ntasks(monkeypatch):
    from resnest_engine.cli import launch as cli
    _fake_gpus(monkeypatch, 8)  # every task sees the node's 8 GPUs: still one process each
    _slurm_env(monkeypatch, 16, procid=5)
    a = _resolved()
    assert cli._under_slurm() and a.nproc_per_node is None
    assert cli._world_size(a) == 16 and not cli._writes_run_dir(a)
    _slurm_env(monkeypatch, 16, procid=0)
    assert cli._writes_run_dir(_resolved())
    # torchrun inside a SLURM allocation: torchrun's variables win.
    for k, v in dict(RANK="3", WORLD_SIZE="4", LOCAL_RANK="3", MASTER_ADDR="h").items():
        monkeypatch.setenv(k, v)
    assert not cli._under_slurm() and cli._world_size(_resolved()) == 4


def test_single_task_slurm_job_is_a_plain_launch(monkeypatch):
    from resnest_engine.cli import launch as cli
    _slurm_env(monkeypatch, 1)
    _fake_gpus(monkeypatch, 0)
    a = _resolved()
    assert not cli._under_slurm() and cli._world_size(a) == 1 and cli._writes_run_dir(a)
    assert cli._world_size(_resolved("--nproc-per-node", "2")) == 2
    _fake_gpus(monkeypatch, 4)  # as without SLURM: one process per visible GPU
    assert cli._world_size(_resolved()) == 4


@pytest.mark.parametrize("flags, needle", [
    (["--nproc-per-node", "2"], "--nproc-per-node"),
    (["--world-size", "2", "--rank", "0", "--nproc-per-node", "1", "--dist-url",
      "tcp://127.0.0.1:29999"], "--nnodes/--world-size, --node-rank/--rank, --master-addr"),
])
def test_launch_flags_under_srun_are_one_line(tmp_path, monkeypatch, flags, needle):
    _slurm_env(monkeypatch, 2)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    r = run_main("--config-file", cfg, "--outdir", tmp_path / "out", *flags)
    assert_user_error(r, needle, "not with srun", "SLURM_NTASKS=2")
    assert not (tmp_path / "out").exists()
