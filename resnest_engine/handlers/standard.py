"""Attach the standard set of handlers from one options object, in a documented order.

Order (ignite runs handlers in insertion order):

- ITERATION_STARTED: LR schedule, DropBlock ramp.
- ITERATION_COMPLETED: NaN guard, EMA update, text log (+ TensorBoard), resume point (every N
  iterations).
- EPOCH_COMPLETED: validation (raw, EMA) (+ TensorBoard), metrics.json, best-N checkpoint,
  resume point (every N epochs).
- COMPLETED: final weights (``model_weights.pt``) and metrics.json, only when training finished.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Sequence

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, EMAHandler
from ignite.handlers.param_scheduler import ParamScheduler
from torch import nn

from ..engine.evaluator import create_evaluator
from ..engine.rng import get_rng_state, set_rng_state
from ..engine.trainer import _unwrap
from .checkpoint import (FORMAT_VERSION, AtomicDiskSaver, Stateful, atomic_save,
                         create_best_checkpointer, create_epoch_checkpointer,
                         create_resume_checkpointer)
from .dropblock import attach_dropblock_ramp
from .ema import attach_ema, broadcast_buffers
from .logging import TrainLogger, attach_progress_bar, attach_tensorboard
from .metrics_history import MetricsHistory
from .nan_guard import NanGuard
from .schedules import attach_lr_scheduler, create_lr_scheduler
from .validation import attach_validation


@dataclass
class StandardOptions:
    """What :func:`attach_standard_handlers` turns on. Steps are optimizer steps."""

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
    amp: str = "off"
    channels_last: bool = False
    meta: Dict[str, Any] = field(default_factory=dict)  # stored in every checkpoint
    resume_iteration: int = 0  # the checkpoint's iteration when resuming (TensorBoard purges after it)


@dataclass
class StandardHandlers:
    """Everything :func:`attach_standard_handlers` attached, and ``to_save``: the objects a
    checkpoint holds (pass it to ``load_checkpoint`` to resume)."""

    lr_scheduler: ParamScheduler
    evaluators: Dict[str, Engine]
    history: MetricsHistory
    to_save: Dict[str, Any]
    nan_guard: NanGuard
    ema: Optional[EMAHandler] = None
    resume_checkpointer: Optional[Checkpoint] = None
    best_checkpointer: Optional[Checkpoint] = None
    tb_logger: Any = None


def training_finished(engine: Engine) -> bool:
    s = engine.state
    return (not getattr(s, "nan_detected", False) and s.max_epochs is not None
            and s.iteration >= s.max_epochs * s.epoch_length)


def attach_standard_handlers(trainer: Engine, model: nn.Module, optimizer: torch.optim.Optimizer,
                             val_loader: Optional[Iterable], opts: StandardOptions,
                             evaluator: Optional[Engine] = None) -> StandardHandlers:
    """Attach schedules, NaN guard, EMA, logging, validation, checkpoints and metrics.json."""
    out_dir = Path(opts.output_dir) if opts.output_dir else None
    total = opts.epochs * opts.epoch_length
    sched = create_lr_scheduler(
        optimizer, opts.lr_scheduler, opts.lr, total, opts.warmup_epochs * opts.epoch_length,
        opts.warmup_start_factor, opts.min_lr, [m * opts.epoch_length for m in opts.milestones],
        opts.gamma, opts.poly_power)
    attach_lr_scheduler(trainer, sched)
    if opts.dropblock_prob > 0:
        attach_dropblock_ramp(trainer, _unwrap(model), opts.dropblock_prob, total)

    def resume_due_iter(engine: Engine) -> bool:
        it = engine.state.iteration
        # An epoch-end point is written at EPOCH_COMPLETED, after validation.
        return (out_dir is not None and opts.ckpt_every_iters > 0
                and it % opts.ckpt_every_iters == 0 and it % engine.state.epoch_length != 0)

    nan_guard = NanGuard(opts.nan_check_every, force=resume_due_iter).attach(trainer)
    ema = attach_ema(trainer, model, opts.ema_decay) if opts.ema_decay > 0 else None
    TrainLogger(opts.log_every).attach(trainer)
    attach_progress_bar(trainer, opts.progress_bar)

    evaluators: Dict[str, Engine] = {}
    if val_loader is not None:
        ev_kwargs = dict(amp=opts.amp, channels_last=opts.channels_last,
                         prepare_batch=getattr(val_loader, "prepare_batch", None))
        evaluators["raw"] = evaluator or create_evaluator(model, **ev_kwargs)
        evaluators["raw"].model = _unwrap(model)
        if ema is not None:
            evaluators["ema"] = create_evaluator(ema.ema_model, **ev_kwargs)
            evaluators["ema"].model = ema.ema_model
        attach_validation(trainer, evaluators, val_loader, opts.val_every, opts.val_start)
    tb = None
    if out_dir is not None and opts.tensorboard:
        # After validation: its EPOCH_COMPLETED handler writes the val/* scalars of this epoch.
        tb = attach_tensorboard(trainer, out_dir / "tb", opts.log_every,
                                purge_step=opts.resume_iteration or None)

    history = MetricsHistory(out_dir / "metrics.json" if out_dir else None,
                             weights="ema" if ema is not None else "raw")
    history.attach(trainer, lr_fn=lambda: optimizer.param_groups[0]["lr"])

    scaler = getattr(trainer, "scaler", None)
    to_save: Dict[str, Any] = {
        "format_version": Stateful(lambda: FORMAT_VERSION),
        "meta": Stateful(lambda: dict(opts.meta)),
        "model": _unwrap(model),
        "optimizer": optimizer,
        "trainer": trainer,
        "schedulers": Stateful(lambda: {"lr": sched.state_dict()},
                               lambda s: sched.load_state_dict(s["lr"])),
        "scaler": Stateful(lambda: scaler.state_dict() if scaler is not None else {},
                           lambda s: scaler.load_state_dict(s) if scaler is not None and s else None),
        "ema": Stateful(lambda: _ema_state(ema), lambda s: ema.ema_model.load_state_dict(s)
                        if ema is not None and s else None),
        "rng": Stateful(get_rng_state, set_rng_state),
        "metrics": history,
    }
    handlers = StandardHandlers(sched, evaluators, history, to_save, nan_guard, ema, tb_logger=tb)
    if out_dir is None:
        return handlers

    saver = AtomicDiskSaver(out_dir / "checkpoints")
    ok = lambda e: not getattr(e.state, "nan_detected", False)  # noqa: E731
    if evaluators and opts.keep_best > 0:
        score_model = "ema" if ema is not None else "raw"
        best = create_best_checkpointer(
            to_save, saver, lambda e: e.state.val_results[score_model]["top1"], opts.keep_best)
        to_save["best_checkpointer"] = Stateful(best.state_dict, best.load_state_dict)
        handlers.best_checkpointer = best

        def _best(engine: Engine) -> None:
            if ok(engine) and getattr(engine.state, "val_epoch", None) == engine.state.epoch:
                _sync_ema(ema)
                best(engine)

        trainer.add_event_handler(Events.EPOCH_COMPLETED, _best)

    resume = create_resume_checkpointer(to_save, saver, opts.keep_checkpoints)
    handlers.resume_checkpointer = resume

    def _resume_iter(engine: Engine) -> None:
        if ok(engine) and resume_due_iter(engine):
            _sync_ema(ema)
            resume(engine)

    def _resume_epoch(engine: Engine) -> None:
        e = engine.state.epoch
        if ok(engine) and opts.ckpt_every > 0 and (e % opts.ckpt_every == 0 or e == opts.epochs):
            _sync_ema(ema)
            resume(engine)

    trainer.add_event_handler(Events.ITERATION_COMPLETED, _resume_iter)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, _resume_epoch)
    if opts.ckpt_every_iters > 0:
        # Mid-epoch points rotate epoch-end points out; keep the newest one for elastic resume.
        epoch_point = create_epoch_checkpointer(to_save, saver)

        def _epoch_point(engine: Engine) -> None:
            if ok(engine):
                _sync_ema(ema)
                epoch_point(engine)

        trainer.add_event_handler(Events.EPOCH_COMPLETED, _epoch_point)

    def _final(engine: Engine) -> None:
        if not training_finished(engine):
            return
        final_model = ema.ema_model if ema is not None else _unwrap(model)
        _sync_ema(ema)
        if idist.get_rank() == 0:
            atomic_save(final_model.state_dict(), out_dir / "model_weights.pt")
        history.write()

    trainer.add_event_handler(Events.COMPLETED, _final)
    return handlers


def _ema_state(ema: Optional[EMAHandler]) -> Dict[str, torch.Tensor]:
    return ema.ema_model.state_dict() if ema is not None else {}


def _sync_ema(ema: Optional[EMAHandler]) -> None:
    if ema is not None:
        broadcast_buffers(ema.ema_model)
