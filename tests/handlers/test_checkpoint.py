"""Checkpoints: best-N and resume rotation, crash and disk-full safety, safe loading."""
from __future__ import annotations

import errno
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events

from tests.support.standard_setup import scripted_evaluator, standard_handlers
from resnest_engine.engine import create_trainer
from resnest_engine.handlers import (CheckpointError, attach_standard_handlers, check_architecture,
                                     list_checkpoints, load_checkpoint, read_checkpoint)
from resnest_engine.handlers.checkpoint import AtomicDiskSaver, atomic_save
from resnest_engine.handlers.checkpoint import CHECKPOINT_KEYS
from tests.support.cli import cli_env
from tests.support.fault_injection import KILL_IN_SAVE_ENV

from tests.support.tiny_models import make_loader, make_tiny_model

REPO = Path(__file__).resolve().parents[2]


def _setup(out_dir, *, epochs=3, el=4, val=None, evaluator=None, deterministic=False, **opt_kw):
    model = make_tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = create_trainer(model, opt, F.cross_entropy, deterministic=deterministic, seed=3)
    kw = dict(log_every=1000, progress_bar="off", tensorboard=False)
    kw.update(opt_kw)
    opts = dict(epochs=epochs, epoch_length=el, lr=0.1, output_dir=str(out_dir), **kw)
    handlers = standard_handlers(trainer, model, opt, val, **opts, evaluator=evaluator)
    attach_standard_handlers(trainer, handlers)
    return model, opt, trainer, handlers




def _names(d, pattern):
    return sorted(p.name for p in Path(d).glob(pattern))


def test_best_n_rotation(tmp_path):
    scores = [10.0, 30.5, 20.25, 40.0, 5.0]
    _, _, trainer, handlers = _setup(tmp_path, epochs=5, val=[0], keep_best=2,
                                     evaluator=scripted_evaluator(scores))
    trainer.run(make_loader(n=16, batch_size=4), max_epochs=5)
    ckpt_dir = tmp_path / "checkpoints"
    assert _names(ckpt_dir, "best-*") == ["best-e002-top1=30.50.pt", "best-e004-top1=40.00.pt"]
    best = read_checkpoint(ckpt_dir / "best-e004-top1=40.00.pt")
    assert best["trainer"]["iteration"] == 16 and best["trainer"]["epoch_length"] == 4
    assert set(CHECKPOINT_KEYS) <= set(best)  # a best checkpoint is resumable too
    assert _names(ckpt_dir, "resume-*") == ["resume-e004-i0000016.pt", "resume-e005-i0000020.pt"]
    assert _names(ckpt_dir, ".*") == []
    assert handlers.best_checkpointer is not None


def test_resume_rotation_keeps_k_newest_across_resume(tmp_path):
    _, _, trainer, h = _setup(tmp_path, epochs=5, keep_checkpoints=2, ckpt_every_iters=3)
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=3), lambda e: e.terminate())
    trainer.run(make_loader(n=16, batch_size=4), max_epochs=5)
    ckpt_dir = tmp_path / "checkpoints"
    # iterations 3, 4 (epoch end), 6, 8, 9, 12: two newest remain
    assert _names(ckpt_dir, "resume-*") == ["resume-e003-i0000009.pt", "resume-e003-i0000012.pt"]
    newest = list_checkpoints(ckpt_dir)[0]
    assert newest.name == "resume-e003-i0000012.pt"

    _, _, trainer2, h2 = _setup(tmp_path, epochs=5, keep_checkpoints=2, ckpt_every_iters=3)
    ckpt = read_checkpoint(newest)
    load_checkpoint(ckpt, h2.to_save)
    h2.resume_checkpointer.load_state_dict(ckpt["checkpointer"])
    trainer2.run(make_loader(n=16, batch_size=4), max_epochs=5)
    # The old run's files rotate out as well.
    assert _names(ckpt_dir, "resume-*") == ["resume-e005-i0000018.pt", "resume-e005-i0000020.pt"]


KILL_SCRIPT = textwrap.dedent("""
    import sys, torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from resnest_engine.engine import create_trainer
    from resnest_engine.handlers import (attach_standard_handlers, build_standard_handlers,
                                         create_lr_scheduler)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_trainer(model, opt, F.cross_entropy)
    handlers = build_standard_handlers(
        trainer, model, opt, lr_scheduler=create_lr_scheduler(opt, "cos", 0.1, 8),
        output_dir=sys.argv[1], ckpt_every_iters=1, keep_checkpoints=int(sys.argv[2]),
        log_every=1000, progress_bar="off", tensorboard=False)
    attach_standard_handlers(trainer, handlers)
    data = DataLoader(TensorDataset(torch.randn(16, 3, 2, 2), torch.randint(0, 10, (16,))),
                      batch_size=2)
    trainer.run(data, max_epochs=1)
    print("finished")
""")


@pytest.mark.slow
@pytest.mark.parametrize("k,kill_at", [(2, 4)])
def test_kill_during_checkpoint_write_leaves_k_valid_files(tmp_path, k, kill_at):
    script = tmp_path / "train.py"
    script.write_text(KILL_SCRIPT)
    out = tmp_path / "run"
    env = dict(cli_env(), **{KILL_IN_SAVE_ENV: str(kill_at)})
    proc = subprocess.run([sys.executable, str(script), str(out), str(k)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert "finished" not in proc.stdout
    ckpt_dir = out / "checkpoints"
    files = list_checkpoints(ckpt_dir)
    assert len(files) >= k
    # The newest complete save is kill_at - 1 (one resume point per iteration).
    assert files[0].name == f"resume-e001-i{kill_at - 1:07d}.pt"
    for f in files:
        ckpt = read_checkpoint(f)
        assert ckpt["trainer"]["iteration"] == int(f.stem.split("-i")[-1])
    stray = _names(ckpt_dir, ".*.tmp-*")
    assert len(stray) == 1  # the interrupted write's temp file, never renamed into place
    AtomicDiskSaver(ckpt_dir)  # a new run clears it
    assert _names(ckpt_dir, ".*.tmp-*") == []
    assert len(list_checkpoints(ckpt_dir)) == len(files)


def test_disk_full_raises_and_keeps_previous_files(tmp_path, monkeypatch):
    _, _, trainer, _ = _setup(tmp_path, epochs=4, keep_checkpoints=2)
    real_save = torch.save
    calls = {"n": 0}

    def failing_save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 3:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(CheckpointError, match="No space left") as info:
        trainer.run(make_loader(n=16, batch_size=4), max_epochs=4)
    assert "resume-e003-i0000012.pt" in str(info.value)
    monkeypatch.undo()
    ckpt_dir = tmp_path / "checkpoints"
    assert _names(ckpt_dir, "*") == ["resume-e001-i0000004.pt", "resume-e002-i0000008.pt"]
    assert _names(ckpt_dir, ".*") == []  # no temp file left behind
    for f in list_checkpoints(ckpt_dir):
        read_checkpoint(f)


def test_atomic_save_open_failure(tmp_path, monkeypatch):
    target = tmp_path / "x.pt"
    atomic_save({"a": torch.ones(2)}, target)
    import builtins
    real_open = builtins.open

    def no_space(path, *args, **kwargs):
        if ".tmp-" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_space)
    with pytest.raises(CheckpointError, match="No space left on device"):
        atomic_save({"a": torch.zeros(2)}, target)
    monkeypatch.undo()
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_read_checkpoint_refuses_pickled_code(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "model": {}, "x": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(path)
    assert not marker.exists()
    # Same with a bare pickle file (not a torch zip archive).
    bare = tmp_path / "bare.pt"
    bare.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    with pytest.raises(CheckpointError):
        read_checkpoint(bare)
    assert not marker.exists()
    # Control: the payload does run when unpickled unsafely.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "ran"


def test_read_checkpoint_rejects_bad_files(tmp_path):
    _, _, trainer, _ = _setup(tmp_path / "run", epochs=1)
    trainer.run(make_loader(n=16, batch_size=4), max_epochs=1)
    good = list_checkpoints(tmp_path / "run" / "checkpoints")[0]
    assert read_checkpoint(good)["format_version"] == 1

    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="cannot load"):
        read_checkpoint(garbage)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot load"):
        read_checkpoint(truncated)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError):
        read_checkpoint(empty)
    plain = tmp_path / "weights.pt"
    torch.save({"fc.weight": torch.ones(1)}, plain)
    with pytest.raises(CheckpointError, match="format_version"):
        read_checkpoint(plain)
    future = tmp_path / "future.pt"
    torch.save({"format_version": 99}, future)
    with pytest.raises(CheckpointError, match="format_version 99"):
        read_checkpoint(future)
    partial = tmp_path / "partial.pt"
    torch.save({"format_version": 1, "model": {}}, partial)
    with pytest.raises(CheckpointError, match="lacks keys: meta"):
        read_checkpoint(partial)


def test_deterministic_checkpoint_loads_weights_only(tmp_path):
    _, _, trainer, _ = _setup(tmp_path, epochs=1, el=4, deterministic=True, ckpt_every_iters=2)
    trainer.run(make_loader(n=16, batch_size=4, shuffle=True), max_epochs=1)
    mid = tmp_path / "checkpoints" / "resume-e001-i0000002.pt"
    raw = torch.load(mid, map_location="cpu", weights_only=True)  # no allowlist needed
    ckpt = read_checkpoint(mid)
    rng = ckpt["trainer"]["rng_states"]
    assert set(rng) == {"python", "torch", "numpy"}
    assert isinstance(rng["torch"], torch.Tensor) and isinstance(rng["numpy"]["keys"], torch.Tensor)
    assert ckpt["trainer"]["seed"] == 3 and ckpt["trainer"]["iteration"] == 2
    assert set(ckpt["rng"]) >= {"python", "numpy", "torch"}
    assert raw["trainer"]["iteration"] == 2


def test_check_architecture_names_mismatched_keys(tmp_path):
    _, _, trainer, h = _setup(tmp_path, epochs=1)
    trainer.run(make_loader(n=16, batch_size=4), max_epochs=1)
    ckpt = read_checkpoint(list_checkpoints(tmp_path / "checkpoints")[0])
    check_architecture(ckpt, make_tiny_model().state_dict())  # same architecture: fine
    other = make_tiny_model(num_classes=7)
    with pytest.raises(CheckpointError, match=r"5\.weight \(10, 4\) vs \(7, 4\)") as info:
        check_architecture(ckpt, other.state_dict(), "run.pt")
    assert "run.pt" in str(info.value) and "5.bias" in str(info.value)
    no_bn = make_tiny_model(bn=False)
    with pytest.raises(CheckpointError) as info:
        check_architecture(ckpt, no_bn.state_dict())
    msg = str(info.value)
    assert "unexpected: " in msg and "1.running_mean" in msg
    assert "missing: 4.weight, 4.bias" in msg  # the Linear moved from index 5 to 4
