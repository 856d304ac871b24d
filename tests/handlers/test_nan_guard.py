"""NaN guard: stops at (or right after) the bad step; no resume point after it."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events

from tests.support.standard_setup import standard_handlers
from resnest_engine.engine import create_trainer
from resnest_engine.handlers import NanGuard, attach_standard_handlers, list_checkpoints


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def log_records():
    h = _Records()
    log = logging.getLogger("resnest_engine")
    old_level = log.level
    log.addHandler(h)
    log.setLevel(logging.INFO)
    yield h.messages
    log.removeHandler(h)
    log.setLevel(old_level)


def _nan_trainer(model, bad_iteration, **kwargs):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    holder = {}

    def loss_fn(logits, y):
        loss = F.cross_entropy(logits, y)
        if holder["trainer"].state.iteration == bad_iteration:
            loss = loss * float("nan")
        return loss

    trainer = create_trainer(model, opt, loss_fn, **kwargs)
    holder["trainer"] = trainer
    return trainer, opt


@pytest.mark.parametrize("every,stop_at", [(1, 3), (4, 4), (2, 4), (100, 5)])
def test_stops_at_or_right_after_bad_iteration(every, stop_at, tiny_model, loader, log_records):
    trainer, _ = _nan_trainer(tiny_model(), bad_iteration=3)
    guard = NanGuard(every)
    guard.attach(trainer)
    assert guard.detected is False
    completed = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: completed.append(e.state.iteration))
    trainer.run(loader(n=20, batch_size=4), max_epochs=3)  # epoch_length 5: epoch end forces a check
    assert guard.detected is True
    assert trainer.state.iteration == stop_at
    assert completed[-1] == stop_at
    errors = [m for m in log_records if "NaN" in m]
    assert len(errors) == 1
    assert f"iteration {stop_at} (epoch 1)" in errors[0]
    assert "LR" in errors[0]


def test_no_false_alarm(tiny_model, loader):
    trainer, _ = _nan_trainer(tiny_model(), bad_iteration=-1)
    guard = NanGuard(3)
    guard.attach(trainer)
    trainer.run(loader(n=16, batch_size=4), max_epochs=2)
    assert guard.detected is False and trainer.state.iteration == 8


def test_force_checks_before_a_resume_point(tiny_model, loader):
    trainer, _ = _nan_trainer(tiny_model(), bad_iteration=3)
    guard = NanGuard(100, force=lambda e: e.state.iteration == 3)
    guard.attach(trainer)
    trainer.run(loader(n=40, batch_size=4), max_epochs=1)
    assert trainer.state.iteration == 3 and guard.detected


@pytest.mark.parametrize("nan_check_every", [1, 5])
def test_no_resume_point_after_bad_step(nan_check_every, tmp_path, tiny_model, loader, log_records):
    model = tiny_model()
    trainer, opt = _nan_trainer(model, bad_iteration=3)
    opts = dict(epochs=2, epoch_length=4, lr=0.1, output_dir=str(tmp_path),
                           ckpt_every_iters=1, keep_checkpoints=3, nan_check_every=nan_check_every,
                           log_every=1000, progress_bar="off", tensorboard=False)
    handlers = standard_handlers(trainer, model, opt, loader(n=8, batch_size=4), **opts)
    attach_standard_handlers(trainer, handlers)
    trainer.run(loader(n=16, batch_size=4), max_epochs=2)
    assert handlers.nan_guard.detected and trainer.state.iteration == 3
    files = list_checkpoints(tmp_path / "checkpoints")
    assert [f.name for f in files] == ["resume-e001-i0000002.pt", "resume-e001-i0000001.pt"]
    assert not (tmp_path / "model_weights.pt").exists()  # the run did not finish
    assert not (tmp_path / "metrics.json").exists()  # no validation after the bad step
    assert any("iteration 3" in m for m in log_records)


def test_epoch_end_checkpoint_skipped_after_unchecked_nan(tmp_path, tiny_model, loader):
    """Checks every 100 steps, but the epoch end forces one before its resume point."""
    model = tiny_model()
    trainer, opt = _nan_trainer(model, bad_iteration=3)
    opts = dict(epochs=2, epoch_length=4, lr=0.1, output_dir=str(tmp_path),
                           nan_check_every=100, log_every=1000, progress_bar="off",
                           tensorboard=False)
    handlers = standard_handlers(trainer, model, opt, None, **opts)
    attach_standard_handlers(trainer, handlers)
    trainer.run(loader(n=16, batch_size=4), max_epochs=2)
    assert handlers.nan_guard.detected and trainer.state.iteration == 4
    assert list_checkpoints(tmp_path / "checkpoints") == []


def test_default_checks_every_50_steps():
    """The default cadence: one host read per 50 steps (the text log's default), not per step."""
    assert NanGuard().every == 50


def test_a_checkpoint_between_checks_asks_the_guard_first(tmp_path, tiny_model, loader):
    """A checkpoint written at any iteration through ``handlers.write`` (here a resume point of
    the caller's, between two checks) checks the steps since the last check first: nothing
    holds the bad step's state."""
    model = tiny_model()
    trainer, opt = _nan_trainer(model, bad_iteration=2)
    handlers = standard_handlers(trainer, model, opt, None, epochs=1, epoch_length=8, lr=0.1,
                                 output_dir=str(tmp_path), ckpt_every=0, nan_check_every=100,
                                 log_every=1000, progress_bar="off", tensorboard=False)
    attach_standard_handlers(trainer, handlers)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(event_filter=lambda _, i: i in (1, 3)),
                              handlers.write, handlers.resume_checkpointer)
    trainer.run(loader(n=32, batch_size=4), max_epochs=1)
    assert handlers.nan_guard.detected and trainer.state.iteration == 3
    assert [f.name for f in list_checkpoints(tmp_path / "checkpoints")] == [
        "resume-e001-i0000001.pt"]


def test_a_run_ended_between_checks_is_checked(tiny_model, loader, log_records):
    """A handler's terminate() between two checks: the guard checks at the end of the run."""
    trainer, _ = _nan_trainer(tiny_model(), bad_iteration=2)
    guard = NanGuard(100)
    guard.attach(trainer)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: e.terminate())
    trainer.run(loader(n=40, batch_size=4), max_epochs=1)
    assert guard.detected and trainer.state.iteration == 3
    assert sum("iteration 3" in m for m in log_records) == 1


def test_checks_read_the_device_only_when_due(tiny_model, loader, monkeypatch):
    """Unchecked steps read nothing to the host; each check reads the accumulated flag once."""
    trainer, _ = _nan_trainer(tiny_model(), bad_iteration=-1)
    guard = NanGuard(4)
    guard.attach(trainer)
    reads = []
    original = torch.Tensor.__float__
    monkeypatch.setattr(torch.Tensor, "__float__",
                        lambda t: reads.append(trainer.state.iteration) or original(t))
    trainer.run(loader(n=40, batch_size=4), max_epochs=1)  # 10 steps: checks at 4, 8, 10
    monkeypatch.undo()
    assert reads == [4, 8, 10] and not guard.detected
