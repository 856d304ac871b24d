"""The standard set of handlers: built pieces plus a small policy, wired in a documented order.

Like ignite's ``setup_common_training_handlers``, the pieces that carry a training decision (the
LR schedule, the EMA, the validation with its evaluators, the DropBlock ramp) are built outside
and passed in; :class:`StandardOptions` is the policy: how often to check and save, what to keep,
where to write. Two steps, so any piece can be swapped for one of your own or one of ignite's::

    handlers = build_standard_handlers(trainer, model, optimizer, lr_scheduler=sched,
                                       validation=Validation({"raw": evaluator}, val_loader),
                                       output_dir="output")
    handlers.ema = None                      # or EMAHandler(model, momentum=2e-4)
    attach_standard_handlers(trainer, handlers)

No piece holds a sibling from build time: whatever reads another piece (the EMA evaluator, the
best-checkpoint pick, the final weights, the NaN guard's forced checks, the checkpoint's entries)
reads it from the :class:`StandardHandlers` when it runs, so a replaced or removed piece is
honoured everywhere. :func:`attach_standard_handlers` builds nothing but the EMA evaluator (one
like the raw evaluator, for whatever ``ema`` holds); it places each non-None piece on its event,
in this order (ignite runs the handlers of one event in insertion order):

- ``ITERATION_STARTED``: LR schedule, per-group LR scale (of the schedule's value; none without
  a schedule), DropBlock ramp.
- ``ITERATION_COMPLETED``: NaN guard, EMA update, text log, progress bar (its loss is the text
  log's latest window mean, :func:`logged_loss`), tracking, mid-epoch resume point (every
  ``resume_every_iters`` steps).
- ``EPOCH_COMPLETED``: validation (each evaluator's ``COMPLETED``: metrics.json, TensorBoard, then
  the best-N checkpoint on ``best_on``), resume point (every ``resume_every_epochs`` epochs and
  the last), the newest epoch-end point (when there are mid-epoch points).
- ``COMPLETED``: final weights (``model_weights.pt``) and metrics.json, only when training finished.

``tracking`` (an experiment tracker such as :class:`~.tracking.MLflowTracking`; None by default)
attaches itself with ``attach(trainer, train_logger, evaluators)`` after the progress bar: a step
is tracked before a resume point holds it, and the EMA evaluator is there already (the tracker
places its own end at ``STARTED``, after the final weights).

Nothing is written after the NaN guard has fired (its ``detected`` flag).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, EMAHandler, ModelCheckpoint
from torch import nn

from ..config.options import options_from
from ..engine.distributed import broadcast_buffers, unwrap_model
from ..engine.evaluator import evaluator_like
from ..engine.events import epochs_filter, mid_epoch_filter, register_train_events
from ..engine.rng import get_rng_state, set_rng_state
from .background_saver import BackgroundDiskSaver
from .checkpoint import (FORMAT_VERSION, AtomicDiskSaver, Stateful, save_weights,
                         create_best_checkpointer, create_epoch_checkpointer,
                         create_resume_checkpointer)
from .dropblock import DropBlockRamp
from .logging import TrainLogger, create_progress_bar
from .tensorboard import TensorBoard
from .metrics_history import MetricsHistory
from .nan_guard import NanGuard
from .schedules import LRScale
from .validation import Validation
from ..storage.run_dir import RunDir

__all__ = ["FinalWeights", "StandardHandlers", "StandardOptions", "attach_standard_handlers",
           "build_standard_handlers", "training_finished", "write_final_outputs"]


@options_from("TRAINING.CKPT_EVERY", "TRAINING.CKPT_EVERY_ITERS", "TRAINING.KEEP_CHECKPOINTS",
              "TRAINING.KEEP_BEST", "TRAINING.ASYNC_CHECKPOINT", "TRAINING.NAN_CHECK_EVERY",
              "LOGGING.LOG_EVERY", "LOGGING.TENSORBOARD", "LOGGING.PROGRESS_BAR")
class StandardOptions:
    """The policy of :func:`build_standard_handlers`: the config keys named above, lower-cased
    with their defaults and checks (``ckpt_every`` epochs, 0 = off; ``ckpt_every_iters`` steps;
    ``keep_checkpoints``, ``keep_best``; ``async_checkpoint`` (written by a background thread,
    :mod:`.background_saver`); ``nan_check_every``; ``log_every``, ``tensorboard``,
    ``progress_bar``), plus where to write and what every checkpoint records."""

    output_dir: Optional[str] = None  # None: nothing is written (no checkpoints, logs, metrics)
    meta: Dict[str, Any] = field(default_factory=dict)  # stored in every checkpoint


def all_epochs_ran(iteration: int, max_epochs: Optional[int], epoch_length: int) -> bool:
    """True when ``iteration`` is the last of ``max_epochs`` epochs of ``epoch_length`` (of an
    engine's state, or of a checkpoint's ``trainer`` entry)."""
    return max_epochs is not None and iteration >= max_epochs * epoch_length


def training_finished(engine: Engine) -> bool:
    """True when the engine ran all its epochs (not stopped early by a signal or the NaN guard)."""
    s = engine.state
    return all_epochs_ran(s.iteration, s.max_epochs, s.epoch_length)


class FinalWeights:
    """Callable for ``COMPLETED``: when training finished, write ``model``'s (the EMA model's, if
    given) state_dict to ``path`` atomically (rank 0) and ``history``'s metrics.json.
    :meth:`write` takes the EMA and history at call time (the standard handlers' current ones)."""

    def __init__(self, path: Path, model: nn.Module, history: Optional[MetricsHistory] = None,
                 ema: Optional[EMAHandler] = None) -> None:
        self.path, self.model, self.history, self.ema = Path(path), model, history, ema

    def __call__(self, engine: Engine) -> None:
        self.write(engine, self.ema, self.history)

    def write(self, engine: Engine, ema: Optional[EMAHandler],
              history: Optional[MetricsHistory]) -> None:
        if not training_finished(engine):
            return
        final = ema.ema_model if ema is not None else unwrap_model(self.model)
        _sync_ema(ema)
        if idist.get_rank() == 0:
            save_weights(final.state_dict(), self.path)
        if history is not None:
            history.write()


def write_final_outputs(ckpt: Dict[str, Any], out_dir: Path) -> Path:
    """The final outputs of a finished run from its last checkpoint, when the run stopped while
    writing them (a full disk): ``model_weights.pt`` (the EMA weights when the run had an EMA)
    and ``metrics.json``, the same files :class:`FinalWeights` writes. Returns the weights path."""
    out_dir = Path(out_dir)
    path = RunDir(out_dir).weights
    save_weights(ckpt["ema"] or ckpt["model"], path)
    state = ckpt.get("metrics")
    if state:
        history = MetricsHistory(RunDir(out_dir).metrics, weights=state.get("weights", "raw"))
        history.load_state_dict(state)
        history.write()
    return path


@dataclass
class StandardHandlers:
    """The pieces :func:`attach_standard_handlers` wires. Replace any of them (an ignite
    ``ParamScheduler`` or ``LRScheduler``, ``EMAHandler``, ``ModelCheckpoint``, ``ProgressBar``,
    your own logger) or set one to None to leave it off, between build and attach. ``to_save``
    is what a checkpoint holds (pass it to ``load_checkpoint`` to resume); its scheduler, EMA,
    history and best-checkpointer entries read these fields when a checkpoint is written, so a
    replaced piece is the one saved. ``best_on`` None: ``"ema"`` when there is an EMA, else
    ``"raw"``."""

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
    best_on: Optional[str] = None  # the evaluator whose top-1 picks the best checkpoints
    resume_checkpointer: Optional[Checkpoint] = None
    resume_every_epochs: int = 1
    resume_every_iters: int = 0
    epoch_checkpointer: Optional[Checkpoint] = None
    final_weights: Optional[FinalWeights] = None
    tracking: Any = None  # e.g. MLflowTracking: attach(trainer, train_logger, evaluators)

    @property
    def evaluators(self) -> Dict[str, Engine]:
        """The validation's evaluators (``{"raw": ..., "ema": ...}``); none without validation."""
        return self.validation.evaluators if self.validation is not None else {}

    def writes_allowed(self) -> bool:
        """False once the NaN guard fired (a guard without a ``detected`` flag, such as ignite's
        ``TerminateOnNan``, stops the run itself)."""
        return not getattr(self.nan_guard, "detected", False)

    def check_finite(self) -> None:
        """Have the NaN guard check the steps since its last check now (a no-op right after a
        check): the guard checks every ``nan_check_every`` steps, so a write between two checks
        asks first. A guard without ``check`` (ignite's ``TerminateOnNan``) checks every step."""
        if hasattr(self.nan_guard, "check"):
            self.nan_guard.check()

    def write(self, engine: Engine, checkpointer: Optional[Checkpoint]) -> None:
        """Call ``checkpointer`` on ``engine`` unless the NaN guard fired (it checks the steps since
        its last check first), EMA buffers synced first. ignite's ``ModelCheckpoint`` (which takes
        the objects per call) gets ``to_save``."""
        if checkpointer is None:
            return
        self.check_finite()
        if not self.writes_allowed():
            return
        _sync_ema(self.ema)
        if isinstance(checkpointer, ModelCheckpoint):
            checkpointer(engine, self.to_save)
        else:
            checkpointer(engine)

    def write_resume_point(self, engine: Engine) -> None:
        """A resume point now (e.g. on SIGTERM), after the NaN guard has checked the steps since
        its last check: none is written after an unchecked step."""
        self.write(engine, self.resume_checkpointer)

    def background_savers(self) -> List[Any]:
        """The save handlers of the checkpointers that write on a background thread."""
        savers = []
        for c in (self.resume_checkpointer, self.epoch_checkpointer, self.best_checkpointer):
            saver = getattr(c, "save_handler", None)
            if hasattr(saver, "wait") and all(saver is not s for s in savers):
                savers.append(saver)
        return savers

    def write_final_weights(self, engine: Engine) -> None:
        if self.final_weights is None:
            return
        self.check_finite()
        if self.writes_allowed():
            self.final_weights.write(engine, self.ema, self.history)

    def resume_point_due(self, engine: Engine) -> bool:
        """A mid-epoch resume point is due after this step (the NaN guard checks first)."""
        return mid_epoch_filter(self.resume_every_iters)(engine, engine.state.iteration)


def build_standard_handlers(trainer: Engine, model: nn.Module, optimizer: torch.optim.Optimizer,
                            opts: Optional[StandardOptions] = None, *,
                            lr_scheduler: Optional[Callable[[Engine], None]] = None,
                            ema: Optional[EMAHandler] = None,
                            validation: Optional[Validation] = None,
                            dropblock: Optional[DropBlockRamp] = None,
                            **options: Any) -> StandardHandlers:
    """The standard pieces around the built ones (nothing is attached yet): NaN guard, logging,
    metrics.json, TensorBoard, checkpoints and final weights, by ``opts`` (or ``**options``, the
    fields of :class:`StandardOptions` as keywords, which also override ``opts``).

    Args:
        trainer: the training engine (from :func:`~resnest_engine.engine.create_trainer`).
        model: the model being trained.
        optimizer: its optimizer.
        opts: cadence and output options (default: ``StandardOptions()``).
        lr_scheduler: an LR scheduler to place each iteration (e.g. :func:`create_lr_scheduler`).
        ema: an EMA handler (:func:`create_ema`), checkpointed and validated beside the model.
        validation: a :class:`Validation`, run on the options' cadence.
        dropblock: a :class:`DropBlockRamp`.
        options: fields of :class:`StandardOptions` as keywords; they override ``opts``.
    """
    opts = dataclasses.replace(opts, **options) if opts is not None else StandardOptions(**options)
    out_dir = Path(opts.output_dir) if opts.output_dir else None
    raw_model = unwrap_model(model)
    to_save: Dict[str, Any] = {}
    h = StandardHandlers(to_save=to_save, lr_scheduler=lr_scheduler, dropblock=dropblock, ema=ema,
                         validation=validation, resume_every_epochs=opts.ckpt_every,
                         resume_every_iters=opts.ckpt_every_iters if out_dir else 0)
    h.lr_scale = LRScale(optimizer) if LRScale.needed(optimizer) else None
    # A resume point is never written after an unchecked step: forced checks read the cadence
    # from h when they run.
    h.nan_guard = NanGuard(opts.nan_check_every, force=h.resume_point_due)
    h.train_logger = TrainLogger(opts.log_every, optimizer)
    h.progress_bar = create_progress_bar(opts.progress_bar)
    h.history = MetricsHistory(RunDir(out_dir).metrics if out_dir else None)
    if out_dir is not None and opts.tensorboard:
        h.tensorboard = TensorBoard(RunDir(out_dir).tensorboard)

    to_save.update({
        "format_version": Stateful(lambda: FORMAT_VERSION),
        "meta": Stateful(lambda: dict(opts.meta)),
        "model": raw_model,
        "optimizer": optimizer,
        "trainer": trainer,
        "schedulers": Stateful(lambda: {"lr": h.lr_scheduler.state_dict()} if h.lr_scheduler else {},
                               lambda s: h.lr_scheduler.load_state_dict(s["lr"])
                               if h.lr_scheduler is not None and s else None),
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
    saver = (BackgroundDiskSaver if opts.async_checkpoint else AtomicDiskSaver)(RunDir(out_dir).checkpoints)
    if validation is not None and opts.keep_best > 0:
        h.best_checkpointer = create_best_checkpointer(to_save, saver, trainer, "top1", opts.keep_best)
        to_save["best_checkpointer"] = Stateful(
            lambda: h.best_checkpointer.state_dict() if h.best_checkpointer else {},
            lambda s: h.best_checkpointer.load_state_dict(s) if h.best_checkpointer and s else None)
    h.resume_checkpointer = create_resume_checkpointer(to_save, saver, opts.keep_checkpoints)
    # Placed only while there are mid-epoch points (they rotate epoch-end points out; a resume on
    # another number of processes needs the newest epoch boundary).
    h.epoch_checkpointer = create_epoch_checkpointer(to_save, saver)
    h.final_weights = FinalWeights(RunDir(out_dir).weights, model)
    return h


def _wire_ema_evaluator(h: StandardHandlers) -> None:
    """The validation evaluates the EMA model exactly when there is an EMA: an ``"ema"``
    evaluator like the raw one, asking ``h.ema`` for its model at every run, is added; without
    an EMA, an ``"ema"`` evaluator is removed."""
    if h.validation is None:
        return
    evaluators = h.validation.evaluators
    if h.ema is None:
        evaluators.pop("ema", None)
    elif "ema" not in evaluators and "raw" in evaluators:
        evaluators["ema"] = evaluator_like(evaluators["raw"], lambda: h.ema.ema_model)


def attach_standard_handlers(trainer: Engine, handlers: StandardHandlers) -> None:
    """Place every non-None piece of ``handlers`` on ``trainer`` (and the evaluators), in the
    order the module docstring lists."""
    h = handlers
    register_train_events(trainer)
    # The per-group scale multiplies what the schedule set this step; without a schedule the
    # optimizer's own (already scaled) LRs stand.
    for piece in (h.lr_scheduler, h.lr_scale if h.lr_scheduler is not None else None, h.dropblock):
        if piece is not None:
            trainer.add_event_handler(Events.ITERATION_STARTED, piece)

    _attach_or_place(h.nan_guard, trainer, Events.ITERATION_COMPLETED)
    if h.ema is not None:
        h.ema.attach(trainer, name="ema_momentum", event=Events.ITERATION_COMPLETED)
    _attach_or_place(h.train_logger, trainer, Events.ITERATION_COMPLETED)
    if h.progress_bar is not None:
        # The loss the text log read at its last line (a host float), never the step's tensor:
        # ignite's bar would read that to the host every step.
        h.progress_bar.attach(trainer, output_transform=lambda _: logged_loss(h.train_logger))
    _wire_ema_evaluator(h)
    if h.tracking is not None:  # before the resume point: a checkpointed step is a tracked one
        h.tracking.attach(trainer, h.train_logger, h.evaluators)
    if h.resume_checkpointer is not None and h.resume_every_iters > 0:
        trainer.add_event_handler(
            Events.ITERATION_COMPLETED(event_filter=mid_epoch_filter(h.resume_every_iters)),
            h.write, h.resume_checkpointer)

    evaluators = h.evaluators
    best_on = h.best_on or ("ema" if "ema" in evaluators else "raw")
    if h.history is not None and evaluators:
        h.history.weights = best_on if best_on in evaluators else next(iter(evaluators))
        h.history.attach(trainer, evaluators, h.to_save.get("optimizer"))
    if h.tensorboard is not None:
        h.tensorboard.attach(trainer, h.train_logger, evaluators)
    if h.best_checkpointer is not None and best_on in evaluators:
        evaluators[best_on].add_event_handler(Events.COMPLETED, h.write, h.best_checkpointer)
    if h.validation is not None:
        h.validation.attach(trainer)

    if h.resume_checkpointer is not None and h.resume_every_epochs > 0:
        trainer.add_event_handler(Events.EPOCH_COMPLETED(event_filter=epochs_filter(h.resume_every_epochs)),
                                  h.write, h.resume_checkpointer)
    if h.epoch_checkpointer is not None and h.resume_every_iters > 0:
        trainer.add_event_handler(Events.EPOCH_COMPLETED, h.write, h.epoch_checkpointer)
    for saver in h.background_savers():
        # a failed background write ends the run at the next step; the end of the run (also by
        # a signal or the NaN guard) waits for the file in flight
        trainer.add_event_handler(Events.ITERATION_COMPLETED, saver.check)
        trainer.add_event_handler(Events.COMPLETED | Events.TERMINATE, lambda _, s=saver: s.wait())
    if h.final_weights is not None:
        trainer.add_event_handler(Events.COMPLETED, h.write_final_weights)


def logged_loss(train_logger: Any) -> Dict[str, float]:
    """``{"loss": ...}``: the mean loss of ``train_logger``'s latest log window (a host float,
    read at that log line), or ``{}`` before its first line or without a text log (then the bar
    shows no loss). The standard progress bar's ``output_transform``: it changes the bar's loss
    only at log iterations and reads nothing from the device."""
    window = getattr(train_logger, "window", None) or {}
    return {"loss": window["loss"]} if "loss" in window else {}


def _attach_or_place(piece: Any, trainer: Engine, event: Any) -> None:
    """An object with ``attach`` attaches itself; a plain callable (ignite's ``TerminateOnNan``,
    a function) is placed on ``event``."""
    if piece is None:
        return
    if hasattr(piece, "attach"):
        piece.attach(trainer)
    else:
        trainer.add_event_handler(event, piece)


def _scaler(trainer: Engine) -> Any:
    return getattr(trainer.state, "scaler", None)


def _sync_ema(ema: Optional[EMAHandler]) -> None:
    if ema is not None:
        broadcast_buffers(ema.ema_model)
