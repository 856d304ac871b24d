"""Every field of StandardHandlers, set to None and (where it makes sense) replaced by a stock
ignite piece or one of ours, between build and attach: each time the run honours it."""
import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events
from ignite.handlers import (EMAHandler, ModelCheckpoint, PiecewiseLinear, ProgressBar,
                             TerminateOnNan)

from resnest_engine.engine import create_evaluator, create_optimizer, create_trainer
from resnest_engine.handlers import (DropBlockRamp, FinalWeights, MetricsHistory, StandardHandlers,
                                     TensorBoard, TrainLogger, Validation, attach_standard_handlers,
                                     build_standard_handlers, create_ema, create_lr_scheduler,
                                     read_checkpoint)
from tests.support.tiny_models import make_loader, make_tiny_model

EPOCHS, N, BATCH = 2, 16, 4
STEPS = N // BATCH  # per epoch
LR = 0.1


class Run:
    """A 2-epoch run of a tiny model with every standard piece on: schedule with an LR-scaled
    group, EMA, validation, DropBlock ramp, best and resume checkpoints (also mid-epoch), logs."""

    def __init__(self, out: Path, nan_at: int = 0, **policy):
        self.out = out
        self.model = make_tiny_model()
        head, body = self.model[-1], self.model[:-1]
        self.optimizer = create_optimizer([{"params": body.parameters(), "lr_scale": 0.5},
                                           {"params": head.parameters()}], "sgd", LR)

        def loss_fn(y_pred, y):
            loss = F.cross_entropy(y_pred, y)
            return loss * float("nan") if self.trainer.state.iteration == nan_at else loss

        self.trainer = create_trainer(self.model, self.optimizer, loss_fn)
        self.val = make_loader(n=8, batch_size=4, seed=5)
        self.ramp = DropBlockRamp(self.model, 0.1, EPOCHS * STEPS)
        options = dict(output_dir=str(out), ckpt_every_iters=3, log_every=1, progress_bar="off")
        options.update(policy)
        self.handlers = build_standard_handlers(
            self.trainer, self.model, self.optimizer,
            lr_scheduler=create_lr_scheduler(self.optimizer, "cos", LR, EPOCHS * STEPS),
            ema=create_ema(self.model, 0.5),
            validation=Validation({"raw": create_evaluator(self.model)}, self.val),
            dropblock=self.ramp, **options)
        self.lrs = []
        self.trainer.add_event_handler(
            Events.ITERATION_COMPLETED,
            lambda e: self.lrs.append([g["lr"] for g in self.optimizer.param_groups]))

    def run(self):
        attach_standard_handlers(self.trainer, self.handlers)
        self.trainer.run(make_loader(n=N, batch_size=BATCH, seed=3), max_epochs=EPOCHS)
        return self

    def files(self, pattern):
        return sorted(p.name for p in (self.out / "checkpoints").glob(pattern))

    def metrics(self):
        return json.loads((self.out / "metrics.json").read_text())

    def final_weights(self):
        return torch.load(self.out / "model_weights.pt", weights_only=True)


def _same(state, module):
    return all(torch.equal(state[k], v) for k, v in module.state_dict().items())


# Each case: (field, value: None or a function of the Run giving the replacement, check(run)).
def _lr_none(r):
    assert r.lrs == [[LR * 0.5, LR]] * (EPOCHS * STEPS)  # the optimizer's own LRs (scaled once)


def _lr_replaced(r):
    assert [round(lrs[1], 12) for lrs in r.lrs] == [round(LR * (1 - i / 8), 12) for i in range(8)]


def _scale_none(r):
    assert all(a == b for a, b in r.lrs)  # both groups at the schedule's value


def _scale_replaced(r):
    assert all(a == pytest.approx(b / 4) for a, b in r.lrs)


def _dropblock_none(r):
    assert r.ramp.prob == 0.0  # never called


def _dropblock_replaced(r):
    assert r.handlers.dropblock.prob == pytest.approx(0.3) and r.ramp.prob == 0.0


def _nan_none(r):
    assert r.trainer.state.iteration == EPOCHS * STEPS  # nothing stopped the run
    assert (r.out / "model_weights.pt").exists()


def _nan_replaced(r):
    assert r.trainer.state.iteration == 2  # TerminateOnNan stopped at the bad step
    assert not (r.out / "model_weights.pt").exists()


def _ema_none(r):
    assert set(r.handlers.evaluators) == {"raw"}
    m = r.metrics()
    assert m["weights"] == "raw" and not any(k.startswith("ema_") for h in m["history"] for k in h)
    assert _same(r.final_weights(), r.model)
    best = r.files("best-*.pt")
    assert best == [f"best-e{m['best_epoch']:03d}-top1={m['best_top1']:.2f}.pt"]


def _ema_replaced(r):
    new = r.handlers.ema
    assert set(r.handlers.evaluators) == {"raw", "ema"}
    assert _same(r.final_weights(), new.ema_model)
    assert not _same(r.final_weights(), r.model)
    ema_top1 = [h["ema_top1"] for h in r.metrics()["history"]]
    ev = create_evaluator(new.ema_model)
    ev.run(r.val)
    assert ema_top1[-1] == pytest.approx(ev.state.metrics["top1"])


def _logger_none(r, caplog):
    assert not [m for m in caplog.messages if m.startswith("Batch:")]


def _logger_replaced(r, caplog):
    assert len([m for m in caplog.messages if m.startswith("Batch:")]) == EPOCHS  # every 4 steps


def _bar_replaced(r, capsys):
    assert "[2/2]" in capsys.readouterr().err


def _validation_none(r):
    assert r.handlers.evaluators == {} and r.files("best-*.pt") == []
    assert r.metrics()["history"] == []


def _validation_replaced(r):
    assert [h["epoch"] for h in r.metrics()["history"]] == [2]


def _history_none(r):
    assert not (r.out / "metrics.json").exists() and (r.out / "model_weights.pt").exists()


def _history_replaced(r):
    other = json.loads((r.out / "other.json").read_text())
    assert [h["epoch"] for h in other["history"]] == [1, 2] and not (r.out / "metrics.json").exists()


def _tb_none(r):
    assert not (r.out / "tb").exists()


def _tb_replaced(r):
    assert list((r.out / "tb2").glob("events.out.tfevents.*")) and not (r.out / "tb").exists()


def _best_none(r):
    assert r.files("best-*.pt") == []


def _best_replaced(r):
    assert r.files("best-*.pt") == [] and len(list((r.out / "mc").glob("best_*.pt"))) == 1


def _best_on_raw(r):
    m = r.metrics()
    raw = [h["top1"] for h in m["history"]]
    (best,) = r.files("best-*.pt")
    assert best.endswith(f"top1={max(raw):.2f}.pt")


def _resume_none(r):
    assert r.files("resume-*.pt") == []


def _resume_replaced(r):
    assert r.files("resume-*.pt") == [] and len(list((r.out / "mc").glob("run_*.pt"))) == 1


def _every_epochs_off(r):
    assert r.files("resume-*.pt") == ["resume-e001-i0000003.pt", "resume-e002-i0000006.pt"]


def _every_iters_off(r):
    assert r.files("resume-*.pt") == ["resume-e001-i0000004.pt", "resume-e002-i0000008.pt"]
    assert r.files("epoch-*.pt") == []


def _epoch_none(r):
    assert r.files("epoch-*.pt") == [] and r.files("resume-*.pt")


def _final_none(r):
    assert not (r.out / "model_weights.pt").exists() and (r.out / "metrics.json").exists()


def _final_replaced(r):
    saved = torch.load(r.out / "other.pt", weights_only=True)
    assert _same(saved, r.handlers.ema.ema_model)  # the current EMA, read when it runs


class Tracker:
    """A tracker of one's own (what ``tracking`` takes: MLflowTracking's ``attach``)."""

    def __init__(self):
        self.points = []

    def attach(self, trainer, train_logger, evaluators):
        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=train_logger.every),
                                  lambda e: self.points.append(("loss", e.state.iteration)))
        for name, ev in evaluators.items():
            ev.add_event_handler(Events.COMPLETED,
                                 lambda e, n=name: self.points.append((n, trainer.state.epoch)))


def _tracking_none(r):
    assert not (r.out / "mlruns").exists()


def _tracking_replaced(r):
    points = r.handlers.tracking.points
    assert [p for p in points if p[0] != "loss"] == [("raw", 1), ("ema", 1), ("raw", 2), ("ema", 2)]
    assert [p[1] for p in points if p[0] == "loss"] == list(range(1, EPOCHS * STEPS + 1))


CASES = [
    ("lr_scheduler", None, _lr_none),
    ("lr_scheduler", lambda r: PiecewiseLinear(r.optimizer, "lr", [(0, LR), (8, 0.0)]), _lr_replaced),
    ("lr_scale", None, _scale_none),
    ("lr_scale", lambda r: (lambda e: r.optimizer.param_groups[0].update(
        lr=r.optimizer.param_groups[1]["lr"] / 4)), _scale_replaced),
    ("dropblock", None, _dropblock_none),
    ("dropblock", lambda r: DropBlockRamp(r.model, 0.3, EPOCHS * STEPS), _dropblock_replaced),
    ("nan_guard", None, _nan_none),
    ("nan_guard", lambda r: TerminateOnNan(output_transform=lambda out: out["loss"]), _nan_replaced),
    ("ema", None, _ema_none),
    ("ema", lambda r: EMAHandler(r.model, momentum=0.3), _ema_replaced),
    ("train_logger", None, _logger_none),
    ("train_logger", lambda r: TrainLogger(every=4, optimizer=r.optimizer), _logger_replaced),
    ("progress_bar", None, lambda r, capsys: None),
    ("progress_bar", lambda r: ProgressBar(persist=True), _bar_replaced),
    ("validation", None, _validation_none),
    ("validation", lambda r: Validation({"raw": create_evaluator(r.model)}, r.val, every=2),
     _validation_replaced),
    ("history", None, _history_none),
    ("history", lambda r: MetricsHistory(r.out / "other.json"), _history_replaced),
    ("tensorboard", None, _tb_none),
    ("tensorboard", lambda r: TensorBoard(r.out / "tb2"), _tb_replaced),
    ("best_checkpointer", None, _best_none),
    ("best_checkpointer", lambda r: ModelCheckpoint(
        r.out / "mc", "best", n_saved=1, score_function=lambda ev: ev.state.metrics["top1"]),
     _best_replaced),
    ("best_on", lambda r: "raw", _best_on_raw),
    ("resume_checkpointer", None, _resume_none),
    ("resume_checkpointer", lambda r: ModelCheckpoint(r.out / "mc", "run", n_saved=1),
     _resume_replaced),
    ("resume_every_epochs", lambda r: 0, _every_epochs_off),
    ("resume_every_iters", lambda r: 0, _every_iters_off),
    ("epoch_checkpointer", None, _epoch_none),
    ("final_weights", None, _final_none),
    ("final_weights", lambda r: FinalWeights(r.out / "other.pt", r.model), _final_replaced),
    ("tracking", None, _tracking_none),
    ("tracking", lambda r: Tracker(), _tracking_replaced),
]
NOT_PIECES = {"to_save"}  # what a checkpoint holds: edited in place (test below), not swapped


def test_every_field_has_a_case():
    fields = {f.name for f in dataclasses.fields(StandardHandlers)}
    assert {c[0] for c in CASES} | NOT_PIECES == fields
    assert {c[0] for c in CASES if c[1] is None} | NOT_PIECES | {
        "best_on", "resume_every_epochs", "resume_every_iters"} == fields


@pytest.mark.parametrize("field,value,check", CASES,
                         ids=[f"{c[0]}-{'none' if c[1] is None else 'replaced'}" for c in CASES])
def test_swap(tmp_path, field, value, check, caplog, capsys):
    r = Run(tmp_path, nan_at=2 if field == "nan_guard" else 0)
    if field == "history" and value is None:
        r.handlers.final_weights = FinalWeights(tmp_path / "model_weights.pt", r.model)
    setattr(r.handlers, field, value(r) if value is not None else None)
    with caplog.at_level("INFO", logger="resnest_engine"):
        r.run()
    args = check.__code__.co_varnames[:check.__code__.co_argcount]
    check(r, *[{"caplog": caplog, "capsys": capsys}[a] for a in args[1:]])


def test_ema_removed_leaves_no_ema_anywhere(tmp_path):
    r = Run(tmp_path)
    r.handlers.ema = None
    r.run()
    ckpt = read_checkpoint(tmp_path / "checkpoints" / "resume-e002-i0000008.pt")
    assert ckpt["ema"] == {} and "ema" not in r.handlers.evaluators
    assert r.handlers.history.weights == "raw"


def test_to_save_is_edited_in_place(tmp_path):
    r = Run(tmp_path)
    r.handlers.to_save.pop("metrics")  # the checkpointers hold this dict
    r.run()
    ckpt = torch.load(tmp_path / "checkpoints" / "resume-e002-i0000008.pt", weights_only=True)
    assert "metrics" not in ckpt and "model" in ckpt


def test_nan_guard_forced_check_reads_the_current_cadence(tmp_path):
    """Mid-epoch resume points switched on after build: the guard (checking every 100 steps)
    still checks before each one, so no resume point follows the bad step."""
    r = Run(tmp_path, nan_at=2, ckpt_every_iters=0, nan_check_every=100)
    r.handlers.resume_every_iters = 3
    r.run()
    assert r.handlers.nan_guard.detected and r.trainer.state.iteration == 3
    assert r.files("resume-*.pt") == []


def test_interrupt_resume_point_checks_the_loss_first(tmp_path):
    """A resume point asked for between two NaN checks (SIGTERM) checks the steps since the
    last one first: a bad step stops the run and nothing is written."""
    r = Run(tmp_path, nan_at=2, ckpt_every_iters=0, ckpt_every=0, nan_check_every=100)
    r.trainer.add_event_handler(Events.ITERATION_COMPLETED(once=3),
                                r.handlers.write_resume_point)
    r.run()
    assert r.handlers.nan_guard.detected and r.files("resume-*.pt") == []
    assert r.trainer.state.iteration == 3
