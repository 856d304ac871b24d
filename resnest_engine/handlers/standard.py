"""The standard set of handlers: built from one options object, wired in a documented order.

Two steps, so any piece can be swapped for one of your own or one of ignite's::

    handlers = build_standard_handlers(trainer, model, optimizer, val_loader, opts)
    handlers.lr_scheduler = CosineAnnealingScheduler(optimizer, "lr", 0.1, 0.0, cycle_size=n)
    attach_standard_handlers(trainer, handlers)

:func:`attach_standard_handlers` builds nothing; it places each non-None piece of a
:class:`StandardHandlers` on its event, in this order (ignite runs the handlers of one event in
insertion order):

- ``ITERATION_STARTED``: LR schedule, per-group LR scale, DropBlock ramp.
- ``ITERATION_COMPLETED``: NaN guard, EMA update, text log, progress bar, mid-epoch resume point
  (every ``resume_every_iters`` steps).
- ``EPOCH_COMPLETED``: validation (each evaluator's ``COMPLETED``: metrics.json, TensorBoard, then
  the best-N checkpoint on ``best_on``), resume point (every ``resume_every_epochs`` epochs and
  the last), the newest epoch-end point (when there are mid-epoch points).
- ``COMPLETED``: final weights (``model_weights.pt``) and metrics.json, only when training finished.

Nothing is written after the NaN guard has fired (its ``detected`` flag).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Sequence

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, EMAHandler, ModelCheckpoint
from torch import nn

from ..engine.distributed import broadcast_buffers, unwrap_model
from ..engine.evaluator import create_evaluator
from ..engine.events import epochs_filter, mid_epoch_filter, register_train_events
from ..engine.rng import get_rng_state, set_rng_state
from .checkpoint import (FORMAT_VERSION, AtomicDiskSaver, Stateful, atomic_save,
                         create_best_checkpointer, create_epoch_checkpointer,
                         create_resume_checkpointer)
from .dropblock import DropBlockRamp
from .ema import create_ema
from .logging import TensorBoard, TrainLogger, create_progress_bar
from .metrics_history import MetricsHistory
from .nan_guard import NanGuard
from .schedules import LRScale, create_lr_scheduler
from .validation import Validation

__all__ = ["FinalWeights", "StandardHandlers", "StandardOptions", "attach_standard_handlers",
           "build_standard_handlers", "training_finished"]


@dataclass
class StandardOptions:
    """What :func:`build_standard_handlers` builds. Steps are optimizer steps."""

    epochs: int
    epoch_length: int
    lr: float
    output_dir: Optional[str] = None  # None: nothing is written (no checkpoints, logs, metrics)
    lr_scheduler: str = "cos"
    warmup_epochs: int = 0
    warmup_start_factor: float = 0.0
    min_lr: float = 0.0
    milestones: Sequence[int] = ()  # epochs, for the step schedule
    gamma: float = 0.1
    poly_power: float = 0.9
    dropblock_prob: float = 0.0
    ema_decay: float = 0.0
    val_every: int = 1
    val_start: Optional[int] = None  # first validated epoch; None = val_every
    ckpt_every: int = 1  # epochs; 0 = off
    ckpt_every_iters: int = 0
    keep_checkpoints: int = 2
    keep_best: int = 1
    nan_check_every: int = 1
    log_every: int = 50
    tensorboard: bool = True
    progress_bar: str = "auto"
    amp: str = "off"  # for the EMA evaluator (the raw one is passed in or built the same way)
    channels_last: bool = False
    meta: Dict[str, Any] = field(default_factory=dict)  # stored in every checkpoint


def training_finished(engine: Engine) -> bool:
    """True when the engine ran all its epochs (not stopped early by a signal or the NaN guard)."""
    s = engine.state
    return s.max_epochs is not None and s.iteration >= s.max_epochs * s.epoch_length


class FinalWeights:
    """Callable for ``COMPLETED``: when training finished, write ``model``'s (the EMA model's, if
    given) state_dict to ``path`` atomically (rank 0) and ``history``'s metrics.json."""

    def __init__(self, path: Path, model: nn.Module, history: Optional[MetricsHistory] = None,
                 ema: Optional[EMAHandler] = None) -> None:
        self.path, self.model, self.history, self.ema = Path(path), model, history, ema

    def __call__(self, engine: Engine) -> None:
        if not training_finished(engine):
            return
        final = self.ema.ema_model if self.ema is not None else unwrap_model(self.model)
        _sync_ema(self.ema)
        if idist.get_rank() == 0:
            atomic_save(final.state_dict(), self.path)
        if self.history is not None:
            self.history.write()


@dataclass
class StandardHandlers:
    """The pieces :func:`attach_standard_handlers` wires. Replace any of them (an ignite
    ``ParamScheduler`` or ``LRScheduler``, a ``ModelCheckpoint``, your own logger) or set one to
    None to leave it off. ``to_save`` is what a checkpoint holds (pass it to ``load_checkpoint``
    to resume); its scheduler, EMA, history and best-checkpointer entries read these fields when
    a checkpoint is written, so a replaced piece is the one saved."""

    to_save: Dict[str, Any]
    lr_scheduler: Optional[Callable[[Engine], None]] = None
    lr_scale: Optional[LRScale] = None
    dropblock: Optional[DropBlockRamp] = None
    nan_guard: Optional[NanGuard] = None
    ema: Optional[EMAHandler] = None
    train_logger: Optional[TrainLogger] = None
    progress_bar: Any = None  # ignite ProgressBar
    validation: Optional[Validation] = None
    history: Optional[MetricsHistory] = None
    tensorboard: Optional[TensorBoard] = None
    best_checkpointer: Optional[Checkpoint] = None
    best_on: str = "raw"  # the evaluator whose top-1 picks the best checkpoints
    resume_checkpointer: Optional[Checkpoint] = None
    resume_every_epochs: int = 1
    resume_every_iters: int = 0
    epoch_checkpointer: Optional[Checkpoint] = None
    final_weights: Optional[FinalWeights] = None

    @property
    def evaluators(self) -> Dict[str, Engine]:
        """The validation's evaluators (``{"raw": ..., "ema": ...}``); none without validation."""
        return self.validation.evaluators if self.validation is not None else {}

    def writes_allowed(self) -> bool:
        return self.nan_guard is None or not self.nan_guard.detected

    def write(self, engine: Engine, checkpointer: Optional[Checkpoint]) -> None:
        """Call ``checkpointer`` on ``engine`` unless the NaN guard fired, EMA buffers synced first.
        ignite's ``ModelCheckpoint`` (which takes the objects per call) gets ``to_save``."""
        if checkpointer is None or not self.writes_allowed():
            return
        _sync_ema(self.ema)
        if isinstance(checkpointer, ModelCheckpoint):
            checkpointer(engine, self.to_save)
        else:
            checkpointer(engine)

    def write_resume_point(self, engine: Engine) -> None:
        self.write(engine, self.resume_checkpointer)


def build_standard_handlers(trainer: Engine, model: nn.Module, optimizer: torch.optim.Optimizer,
                            val_loader: Optional[Iterable], opts: StandardOptions,
                            evaluator: Optional[Engine] = None) -> StandardHandlers:
    """The default pieces for ``opts`` (nothing is attached yet): schedule, NaN guard, EMA,
    logging, validation (``evaluator`` or one built from ``model``), checkpoints, metrics.json."""
    out_dir = Path(opts.output_dir) if opts.output_dir else None
    total = opts.epochs * opts.epoch_length
    raw_model = unwrap_model(model)
    to_save: Dict[str, Any] = {}
    h = StandardHandlers(to_save=to_save, resume_every_epochs=opts.ckpt_every,
                         resume_every_iters=opts.ckpt_every_iters if out_dir else 0)
    h.lr_scheduler = create_lr_scheduler(
        optimizer, opts.lr_scheduler, opts.lr, total, opts.warmup_epochs * opts.epoch_length,
        opts.warmup_start_factor, opts.min_lr, [m * opts.epoch_length for m in opts.milestones],
        opts.gamma, opts.poly_power)
    h.lr_scale = LRScale(optimizer) if LRScale.needed(optimizer) else None
    h.dropblock = DropBlockRamp(raw_model, opts.dropblock_prob, total) if opts.dropblock_prob > 0 else None
    # A resume point is never written after an unchecked step.
    due = mid_epoch_filter(h.resume_every_iters)
    h.nan_guard = NanGuard(opts.nan_check_every, force=lambda e: due(e, e.state.iteration))
    h.ema = create_ema(model, opts.ema_decay) if opts.ema_decay > 0 else None
    h.train_logger = TrainLogger(opts.log_every, optimizer)
    h.progress_bar = create_progress_bar(opts.progress_bar)
    if val_loader is not None:
        ev_kwargs = dict(amp=opts.amp, channels_last=opts.channels_last,
                         prepare_batch=getattr(val_loader, "prepare_batch", None))
        evaluators = {"raw": evaluator or create_evaluator(raw_model, **ev_kwargs)}
        if h.ema is not None:
            evaluators["ema"] = create_evaluator(h.ema.ema_model, **ev_kwargs)
        h.validation = Validation(evaluators, val_loader, opts.val_every, opts.val_start)
    h.best_on = "ema" if h.ema is not None else "raw"
    h.history = MetricsHistory(out_dir / "metrics.json" if out_dir else None, weights=h.best_on)
    if out_dir is not None and opts.tensorboard:
        h.tensorboard = TensorBoard(out_dir / "tb")

    to_save.update({
        "format_version": Stateful(lambda: FORMAT_VERSION),
        "meta": Stateful(lambda: dict(opts.meta)),
        "model": raw_model,
        "optimizer": optimizer,
        "trainer": trainer,
        "schedulers": Stateful(lambda: {"lr": h.lr_scheduler.state_dict()},
                               lambda s: h.lr_scheduler.load_state_dict(s["lr"])),
        "scaler": Stateful(lambda: _scaler(trainer).state_dict() if _scaler(trainer) else {},
                           lambda s: _scaler(trainer).load_state_dict(s) if _scaler(trainer) and s else None),
        "ema": Stateful(lambda: h.ema.ema_model.state_dict() if h.ema is not None else {},
                        lambda s: h.ema.ema_model.load_state_dict(s) if h.ema is not None and s else None),
        "rng": Stateful(get_rng_state, set_rng_state),
        "metrics": Stateful(lambda: h.history.state_dict() if h.history else {},
                            lambda s: h.history.load_state_dict(s) if h.history and s else None),
    })
    if out_dir is None:
        return h
    saver = AtomicDiskSaver(out_dir / "checkpoints")
    if h.evaluators and opts.keep_best > 0:
        h.best_checkpointer = create_best_checkpointer(to_save, saver, trainer, "top1", opts.keep_best)
        to_save["best_checkpointer"] = Stateful(
            lambda: h.best_checkpointer.state_dict() if h.best_checkpointer else {},
            lambda s: h.best_checkpointer.load_state_dict(s) if h.best_checkpointer and s else None)
    h.resume_checkpointer = create_resume_checkpointer(to_save, saver, opts.keep_checkpoints)
    if h.resume_every_iters > 0:
        # Mid-epoch points rotate epoch-end points out; keep the newest one for elastic resume.
        h.epoch_checkpointer = create_epoch_checkpointer(to_save, saver)
    h.final_weights = FinalWeights(out_dir / "model_weights.pt", model, h.history, h.ema)
    return h


def attach_standard_handlers(trainer: Engine, handlers: StandardHandlers) -> None:
    """Place every non-None piece of ``handlers`` on ``trainer`` (and the evaluators), in the
    order the module docstring lists."""
    h = handlers
    register_train_events(trainer)
    for piece in (h.lr_scheduler, h.lr_scale, h.dropblock):
        if piece is not None:
            trainer.add_event_handler(Events.ITERATION_STARTED, piece)

    if h.nan_guard is not None:
        h.nan_guard.attach(trainer)
    if h.ema is not None:
        h.ema.attach(trainer, name="ema_momentum", event=Events.ITERATION_COMPLETED)
    if h.train_logger is not None:
        h.train_logger.attach(trainer)
    if h.progress_bar is not None:
        h.progress_bar.attach(trainer, output_transform=lambda out: {"loss": out["loss"]})
    if h.resume_checkpointer is not None and h.resume_every_iters > 0:
        trainer.add_event_handler(
            Events.ITERATION_COMPLETED(event_filter=mid_epoch_filter(h.resume_every_iters)),
            h.write, h.resume_checkpointer)

    evaluators = h.evaluators
    if h.history is not None and evaluators:
        h.history.attach(trainer, evaluators, h.to_save.get("optimizer"))
    if h.tensorboard is not None:
        h.tensorboard.attach(trainer, h.train_logger, evaluators)
    if h.best_checkpointer is not None and h.best_on in evaluators:
        evaluators[h.best_on].add_event_handler(Events.COMPLETED, h.write, h.best_checkpointer)
    if h.validation is not None:
        h.validation.attach(trainer)

    if h.resume_checkpointer is not None and h.resume_every_epochs > 0:
        trainer.add_event_handler(Events.EPOCH_COMPLETED(event_filter=epochs_filter(h.resume_every_epochs)),
                                  h.write, h.resume_checkpointer)
    if h.epoch_checkpointer is not None:
        trainer.add_event_handler(Events.EPOCH_COMPLETED, h.write, h.epoch_checkpointer)
    if h.final_weights is not None:
        trainer.add_event_handler(Events.COMPLETED, h.final_weights)


def _scaler(trainer: Engine) -> Any:
    return getattr(trainer.state, "scaler", None)


def _sync_ema(ema: Optional[EMAHandler]) -> None:
    if ema is not None:
        broadcast_buffers(ema.ema_model)
