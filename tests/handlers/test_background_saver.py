"""Checkpoints written by a background thread: the same files, the state of the step, a save
waits for the one before, and a failed write (a real full tmpfs) surfaces at the next check."""
import os
import threading
import time

import pytest
import torch
import torch.nn.functional as F

from resnest_engine.engine import create_trainer
from resnest_engine.handlers import attach_standard_handlers, read_checkpoint
from resnest_engine.handlers.checkpoint import AtomicDiskSaver, CheckpointWriteError
from resnest_engine.handlers.background_saver import BackgroundDiskSaver
from tests.support.fault_injection import fill_disk
from tests.support.real_files import Tmpfs
from tests.support.standard_setup import standard_handlers
from tests.support.tiny_models import make_loader, make_tiny_model


def _state(seed):
    g = torch.Generator().manual_seed(seed)
    return {"format_version": 1, "meta": {"model": "tiny", "n": seed},
            "model": {"w": torch.randn(256, 256, generator=g), "n": torch.tensor(seed)},
            "optimizer": {"state": {0: {"momentum_buffer": torch.randn(8, generator=g)}},
                          "param_groups": [{"lr": 0.1, "params": [0]}]},
            "trainer": {"iteration": seed}, "schedulers": {}, "scaler": {}, "ema": {}, "rng": {},
            "metrics": {}}


def test_the_file_is_the_synchronous_one(tmp_path):
    sync, background = AtomicDiskSaver(tmp_path / "a"), BackgroundDiskSaver(tmp_path / "b")
    sync(_state(1), "resume-x.pt")
    background(_state(1), "resume-x.pt")
    background.wait()
    a = read_checkpoint(tmp_path / "a" / "resume-x.pt")
    b = read_checkpoint(tmp_path / "b" / "resume-x.pt")
    assert a["checksum"] == b["checksum"] and torch.equal(a["model"]["w"], b["model"]["w"])


def test_the_file_holds_the_state_of_the_step_and_buffers_are_reused(tmp_path):
    saver = BackgroundDiskSaver(tmp_path)
    live = _state(2)
    expected = live["model"]["w"].clone()
    gate = threading.Event()
    original = saver._write

    def slow_write(*args):
        gate.wait()
        original(*args)

    saver._write = slow_write
    saver(live, "resume-1.pt")
    live["model"]["w"].add_(1.0)  # training goes on while the file is written
    gate.set()
    saver.wait()
    assert torch.equal(read_checkpoint(tmp_path / "resume-1.pt")["model"]["w"], expected)
    staged = saver._staging._buffers["/'model'/'w'"]
    ptr = staged.data_ptr()
    saver(live, "resume-2.pt")
    saver.wait()
    assert saver._staging._buffers["/'model'/'w'"].data_ptr() == ptr  # reused, not reallocated
    assert torch.equal(read_checkpoint(tmp_path / "resume-2.pt")["model"]["w"], expected + 1)


def test_a_save_waits_for_the_one_before(tmp_path):
    saver = BackgroundDiskSaver(tmp_path)
    gate, order = threading.Event(), []
    original = saver._write

    def gated(checkpoint, filename, pending):
        if filename == "resume-1.pt":
            gate.wait()
        original(checkpoint, filename, pending)
        order.append(filename)

    saver._write = gated
    saver(_state(1), "resume-1.pt")
    t0 = time.perf_counter()
    threading.Timer(0.3, gate.set).start()
    saver(_state(2), "resume-2.pt")  # blocks until the first is on disk
    # the first file was written before the call returned (the second may be done by now too)
    assert time.perf_counter() - t0 >= 0.25 and order[:1] == ["resume-1.pt"]
    saver.wait()
    assert order == ["resume-1.pt", "resume-2.pt"]


def test_rotation_deletes_only_after_the_new_file_is_written(tmp_path):
    saver = BackgroundDiskSaver(tmp_path)
    saver(_state(1), "resume-1.pt")
    saver.wait()
    saver.remove("resume-1.pt")  # ignite asks before it saves the next
    saver(_state(2), "resume-2.pt")
    saver.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resume-2.pt"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI is)")
def test_a_failed_background_write_is_raised_by_the_next_check(tmp_path):
    tmpfs = Tmpfs(tmp_path / "disk", "4m")
    disk = tmpfs.path
    try:
        saver = BackgroundDiskSaver(disk)
        saver(_state(1), "resume-1.pt")
        saver.wait()
        fill_disk(disk)
        saver(_state(2), "resume-2.pt")  # returns at once: the write fails on the writer thread
        deadline = time.monotonic() + 30
        with pytest.raises(CheckpointWriteError) as info:
            while time.monotonic() < deadline:
                saver.check()
                time.sleep(0.01)
        assert str(info.value).startswith(f"cannot write {disk / 'resume-2.pt'}: No space left")
        assert sorted(p.name for p in disk.iterdir()) == [".filler", "resume-1.pt"]
        assert read_checkpoint(disk / "resume-1.pt")["trainer"]["iteration"] == 1
    finally:
        tmpfs.unmount()


def _run(out, async_checkpoint):
    model = make_tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = create_trainer(model, opt, F.cross_entropy, deterministic=True, seed=1)
    h = standard_handlers(trainer, model, opt, make_loader(n=8, batch_size=4, seed=5), epochs=2,
                          epoch_length=4, lr=0.1, output_dir=str(out), ckpt_every_iters=2,
                          keep_checkpoints=3, log_every=1000, progress_bar="off",
                          tensorboard=False, async_checkpoint=async_checkpoint)
    assert bool(h.background_savers()) is async_checkpoint
    attach_standard_handlers(trainer, h)
    trainer.run(make_loader(n=16, batch_size=4, seed=3), max_epochs=2)
    return {p.name: read_checkpoint(p) if not p.name.startswith("model") else None
            for p in sorted((out / "checkpoints").iterdir())}


def test_standard_runs_write_the_same_files_either_way(tmp_path):
    sync = _run(tmp_path / "sync", False)
    background = _run(tmp_path / "background", True)
    assert list(sync) == list(background) and len(sync) >= 4, list(sync)
    for name in sync:  # the same states: the checksum covers every tensor and value
        assert sync[name]["checksum"] == background[name]["checksum"], name
    a = torch.load(tmp_path / "sync" / "model_weights.pt", weights_only=True)
    b = torch.load(tmp_path / "background" / "model_weights.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
