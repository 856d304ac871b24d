"""No host sync in the training step: between the log iterations (``LOGGING.LOG_EVERY``) and the
NaN checks (``TRAINING.NAN_CHECK_EVERY``, epoch ends, resume points), nothing on the training
thread reads a tensor to the host.

The digits recipe runs in this process, on a folder of 240 real digit scans (24 steps of 10),
with every standard handler on (progress bar, text log, LR schedule, DropBlock ramp, EMA, NaN
guard, TensorBoard, MLflow in a file store, resume points mid-epoch and at the epoch end, the
best checkpoint, validation) and the step's options that touch tensors (mixup, gradient
clipping). ``Tensor.item``, ``__float__``, ``__bool__``, ``__int__``, ``cpu``, ``tolist`` and
``numpy`` are wrapped by counters that count only calls on the training thread, keyed by the
trainer's iteration at the time. On the CPU every such call is
one that would wait for the device on a GPU."""
import collections
import os
import sys
import threading

import pytest
import torch
import torchvision.transforms.v2._augment as tv_augment
import yaml

from resnest_engine.config import load_config
from resnest_engine.workflows import train as train_module
from tests.support.cli import REPO, process_state_restored
from tests.support.real_files import write_digits

READS = ("item", "__float__", "__bool__", "__int__", "cpu", "tolist", "numpy")
EVERY = 10  # LOG_EVERY and NAN_CHECK_EVERY
CKPT_ITERS = 15  # a mid-epoch resume point (a forced NaN check) between two log iterations


# Callers whose reads are of tensors made on the host, which never wait for the device: the
# mixup/cutmix draws come from torch's CPU generator (ours: ``float(torch.rand(()))``;
# torchvision's MixUp/CutMix: ``float(Beta(...).sample(()))`` of a CPU Beta), whose stream a
# checkpoint restores, so an exact resume draws the same.
HOST_TENSOR_CALLERS = (str(REPO / "resnest_engine" / "data" / "mixup.py"), tv_augment.__file__)


class HostReads:
    """Counts the calls of :data:`READS` on ``thread``, by ``iteration()`` at the call, each
    named ``name@file:line`` of its caller (the calls of :data:`HOST_TENSOR_CALLERS` apart)."""

    def __init__(self, monkeypatch, thread, iteration):
        self.counts = collections.Counter()
        self.names = collections.defaultdict(collections.Counter)
        self.host_tensor_reads = 0
        for name in READS:
            original = getattr(torch.Tensor, name)

            def counted(t, *args, _original=original, _name=name, **kwargs):
                if threading.get_ident() == thread:
                    it = iteration()
                    caller = sys._getframe(1).f_code
                    if it is None:
                        pass
                    elif caller.co_filename in HOST_TENSOR_CALLERS:
                        self.host_tensor_reads += 1
                    else:
                        where = f"{os.path.relpath(caller.co_filename, REPO)}:{sys._getframe(1).f_lineno}"
                        self.counts[it] += 1
                        self.names[it][f"{_name}@{where}"] += 1
                return _original(t, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


def test_no_host_reads_between_log_and_check_iterations(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    pytest.importorskip("sklearn")  # the digits
    recipe = yaml.safe_load((REPO / "recipes" / "digits.yaml").read_text())
    # the recipe's steps, not its data set's size: a tenth of the digits' images, 24 steps
    write_digits(tmp_path / "digits", 24, 5)
    recipe["DATA"].update(DATASET="imagefolder", ROOT=str(tmp_path / "digits"),
                          WORKERS=1,  # the loader's own work off the training thread
                          MIXUP=0.2)  # the batch transform in the step
    recipe["MODEL"]["DROPBLOCK_PROB"] = 0.1  # its ramp on ITERATION_STARTED
    recipe["TRAINING"].update(EPOCHS=1, BATCH_SIZE=10, TEST_BATCH_SIZE=50, EMA_DECAY=0.9,
                              NAN_CHECK_EVERY=EVERY, CKPT_EVERY=1, CKPT_EVERY_ITERS=CKPT_ITERS,
                              ASYNC_CHECKPOINT=True, CLIP_GRAD=5.0)
    recipe["LOGGING"] = dict(LOG_EVERY=EVERY, PROGRESS_BAR="on", TENSORBOARD=True, MLFLOW=True)
    path = tmp_path / "digits.yaml"
    path.write_text(yaml.safe_dump(recipe))
    cfg = load_config(path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # no SQLite store to create

    trainers = []
    build_trainer = train_module.build_trainer

    def capture(*args, **kwargs):
        trainers.append(build_trainer(*args, **kwargs))
        return trainers[-1]

    monkeypatch.setattr(train_module, "build_trainer", capture)
    reads = HostReads(monkeypatch, threading.get_ident(),
                      lambda: trainers[0].state.iteration if trainers else None)
    with process_state_restored():
        result = train_module.train(cfg, tmp_path / "run")
    monkeypatch.undo()  # the counters off before asserting

    assert result.outcome is train_module.Outcome.FINISHED
    trainer = trainers[0]
    last = trainer.state.iteration
    assert last == trainer.state.epoch_length > 2 * EVERY
    assert list((tmp_path / "run" / "tb").iterdir())
    assert list((tmp_path / "mlruns").rglob("train/loss"))  # MLflow tracked the steps
    assert list((tmp_path / "run" / "checkpoints").glob("*.pt"))
    # the log and check iterations do read (so the counters count)
    assert reads.counts[EVERY] > 0 and reads.counts[last] > 0
    assert reads.host_tensor_reads > 0  # mixup drew its lambdas on the training thread
    allowed = {0, CKPT_ITERS, last} | set(range(EVERY, last + 1, EVERY))
    free = {it: dict(reads.names[it]) for it in range(1, last + 1) if it not in allowed}
    assert {it: names for it, names in free.items() if names} == {}
