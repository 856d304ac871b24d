"""Writes on a real full file system (a small tmpfs filled by real writes) and checksums of what
is written: each failure is one WriteError line naming the file, nothing earlier is damaged."""
import json
import logging
import os

import pytest
import torch
from ignite.engine import Engine

from resnest_engine.storage.checksum import VERIFY_ENV, tensor_checksum
from resnest_engine.storage.files import WriteError, atomic_write_text
from resnest_engine.handlers import CheckpointError, read_checkpoint, setup_logger
from resnest_engine.handlers.checkpoint import AtomicDiskSaver, CheckpointWriteError, save_weights
from resnest_engine.handlers.tensorboard import TensorBoard
from resnest_engine.models import WeightsError
from resnest_engine.models.weights import read_state_dict
from tests.support.fault_injection import fill_disk
from tests.support.real_files import Tmpfs, flip_tensor_bit

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI is)")


@pytest.fixture
def small_disk(tmp_path):
    disk = Tmpfs(tmp_path / "disk", "8m")
    yield disk.path
    disk.unmount()


def _ckpt(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"format_version": 1, "meta": {"model": "x"}, "model": {"w": torch.randn(512, 1024, generator=g)},
            "optimizer": {}, "trainer": {"iteration": seed}, "schedulers": {}, "scaler": {},
            "ema": {}, "rng": {}, "metrics": {}}


@root_only
def test_a_checkpoint_on_a_full_disk_is_one_line_and_the_old_one_stays(small_disk):
    saver = AtomicDiskSaver(small_disk)
    saver(_ckpt(1), "resume-a.pt")
    fill_disk(small_disk)
    with pytest.raises(CheckpointWriteError) as info:
        saver(_ckpt(2), "resume-a.pt")
    msg = str(info.value)
    assert msg.startswith(f"cannot write {small_disk / 'resume-a.pt'}: No space left on device "
                          "(the file needs about 2.0 MB; ")
    assert "\n" not in msg and msg.endswith(" free)")
    assert sorted(p.name for p in small_disk.iterdir()) == [".filler", "resume-a.pt"]
    assert read_checkpoint(small_disk / "resume-a.pt")["trainer"]["iteration"] == 1


@root_only
def test_weights_and_text_on_a_full_disk(small_disk):
    fill_disk(small_disk)
    with pytest.raises(CheckpointWriteError, match=r"model_weights\.pt: No space left on device"):
        save_weights({"w": torch.zeros(300_000)}, small_disk / "model_weights.pt")
    with pytest.raises(WriteError, match=r"metrics\.json: No space left on device \(the file "
                                         r"needs about 97\.7 kB; "):
        atomic_write_text(small_disk / "metrics.json", "x" * 100_000)
    assert sorted(p.name for p in small_disk.iterdir()) == [".filler"]


@root_only
def test_the_text_log_on_a_full_disk_fails_once_then_stays_quiet(small_disk, capsys):
    log = setup_logger(small_disk / "log.txt", stream=False)
    try:
        log.info("first line")
        fill_disk(small_disk)
        with pytest.raises(WriteError, match=r"log\.txt: No space left on device"):
            for _ in range(10_000):  # the page cache takes a few lines before the disk says no
                log.info("x" * 500)
        log.info("after the failure: dropped, no retry, no traceback")
        assert "Traceback" not in capsys.readouterr().err
        assert (small_disk / "log.txt").read_text().startswith("[")
    finally:
        setup_logger(None, stream=False)


@root_only
def test_tensorboard_on_a_full_disk_raises_on_the_training_thread_and_does_not_hang(small_disk,
                                                                                   capsys):
    trainer = Engine(lambda e, b: {"loss": torch.tensor(1.0)})

    class Window:
        every, window = 1, {"loss": 1.0}

    tb = TensorBoard(small_disk / "tb")
    tb.attach(trainer, Window())
    fill_disk(small_disk)
    logging.getLogger("ignite.engine").setLevel(logging.CRITICAL)
    with pytest.raises(WriteError, match=r"cannot write .*events\.out\.tfevents.*: No space left"):
        trainer.run(range(100_000), max_epochs=1)  # fails long before the end; never blocks
    assert trainer.state.iteration < 100_000
    assert "Traceback" not in capsys.readouterr().err  # nothing from tensorboardX's thread


def test_a_flipped_bit_in_a_checkpoint_is_refused(tmp_path, monkeypatch):
    AtomicDiskSaver(tmp_path)(_ckpt(3), "resume-a.pt")
    path = tmp_path / "resume-a.pt"
    assert torch.load(path, weights_only=True)["checksum"].startswith("crc32:")
    flip_tensor_bit(path)
    torch.load(path, weights_only=True)  # torch itself loads it: the flip is silent
    with pytest.raises(CheckpointError, match=r"resume-a\.pt: it is corrupt: its contents changed "
                                              r"after it was written \(checksum crc32:"):
        read_checkpoint(path)
    monkeypatch.setenv(VERIFY_ENV, "0")  # the documented switch
    read_checkpoint(path)


def test_a_flipped_bit_in_plain_weights_is_refused_through_the_sidecar(tmp_path):
    state = {"w": torch.randn(64, 64), "b": torch.zeros(3, dtype=torch.bfloat16),
             "n": torch.tensor(7)}
    path = tmp_path / "model_weights.pt"
    save_weights(state, path)
    side = json.loads((tmp_path / "model_weights.pt.checksum").read_text())
    assert side == {"algorithm": "crc32", "tensors": tensor_checksum(state), "previous": None}
    plain = torch.load(path, weights_only=True)  # still a plain state_dict for timm/torch
    assert set(plain) == {"w", "b", "n"}
    assert read_state_dict(path)["n"].item() == 7
    flip_tensor_bit(path)
    with pytest.raises(WeightsError, match="model_weights.pt.*it is corrupt"):
        read_state_dict(path)


def test_the_sidecar_keeps_the_previous_checksum_for_an_interrupted_replace(tmp_path):
    path = tmp_path / "w.pt"
    old, new = {"w": torch.ones(4)}, {"w": torch.zeros(4)}
    save_weights(old, path)
    save_weights(new, path)
    side = json.loads((tmp_path / "w.pt.checksum").read_text())
    assert side["tensors"] == tensor_checksum(new) and side["previous"] == tensor_checksum(old)
    torch.save(old, path)  # as if the rename of the new file never happened
    assert torch.equal(read_state_dict(path)["w"], old["w"])


def test_files_without_a_checksum_still_load(tmp_path):
    plain = tmp_path / "timm.pth"
    torch.save({"state_dict": {"module.fc.weight": torch.ones(2, 2)}}, plain)
    assert torch.equal(read_state_dict(plain)["fc.weight"], torch.ones(2, 2))
    older = tmp_path / "resume-old.pt"
    torch.save(_ckpt(4), older)  # a resume point of a version that wrote no checksum
    assert read_checkpoint(older)["trainer"]["iteration"] == 4


def test_checksum_covers_tensors_dtypes_shapes_and_plain_values():
    base = {"a": torch.arange(6.0), "meta": {"epoch": 3, "name": "x"}}
    c = tensor_checksum(base)
    assert c == tensor_checksum({"meta": {"name": "x", "epoch": 3}, "a": torch.arange(6.0)})
    for changed in ({"a": torch.arange(6.0).reshape(2, 3), "meta": base["meta"]},
                    {"a": torch.arange(6).double(), "meta": base["meta"]},
                    {"a": torch.arange(6.0), "meta": {"epoch": 4, "name": "x"}},
                    {"b": torch.arange(6.0), "meta": base["meta"]}):
        assert tensor_checksum(changed) != c
