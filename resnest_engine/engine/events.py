"""Custom trainer events and the event filters the standard handlers use for their cadence.

Handlers signal each other through these events (ignite's ``register_events``), not through
attributes added to ``engine.state``::

    @trainer.on(TrainEvents.VALIDATION_COMPLETED)
    def _report(trainer):
        ...  # validation.results holds {"raw": {"top1", "top5", "loss"}, "ema": {...}}
"""
from __future__ import annotations

from typing import Callable, Optional

from ignite.engine import Engine, EventEnum

__all__ = ["TrainEvents", "register_train_events", "epochs_filter", "mid_epoch_filter"]


class TrainEvents(EventEnum):
    """Fired on the trainer by the standard handlers.

    - ``VALIDATION_COMPLETED``: :class:`~resnest_engine.handlers.Validation` ran every evaluator.
    - ``NAN_DETECTED``: :class:`~resnest_engine.handlers.NanGuard` saw a non-finite loss, right
      before it terminates the run.
    """

    VALIDATION_COMPLETED = "validation_completed"
    NAN_DETECTED = "nan_detected"


def register_train_events(engine: Engine) -> None:
    """Register :class:`TrainEvents` on ``engine`` (idempotent; ``create_trainer`` does it)."""
    missing = [e for e in TrainEvents if not engine.has_registered_events(e)]
    if missing:
        engine.register_events(*missing)


EventFilter = Callable[[Engine, int], bool]


def epochs_filter(every: int, start: Optional[int] = None, last: bool = True) -> EventFilter:
    """``EPOCH_COMPLETED`` filter: epochs ``start, start + every, ...`` (``start`` defaults to
    ``every``, i.e. the multiples of ``every``) and, with ``last``, the run's last epoch.
    ``every <= 0`` fires only at the last epoch (or never without ``last``).

    One filter, not ``EPOCH_COMPLETED(every=n) | ...``: a handler placed on an events list runs
    once per matching member, so it would run twice when the last epoch is also a multiple."""
    first = every if start is None else start

    def _filter(engine: Engine, epoch: int) -> bool:
        due = every > 0 and epoch >= first and (epoch - first) % every == 0
        return due or (last and epoch == engine.state.max_epochs)

    return _filter


def mid_epoch_filter(every: int) -> EventFilter:
    """``ITERATION_COMPLETED`` filter: every ``every`` iterations, except at epoch ends (an
    epoch-end handler covers those); never when ``every <= 0``."""

    def _filter(engine: Engine, iteration: int) -> bool:
        return every > 0 and iteration % every == 0 and iteration % engine.state.epoch_length != 0

    return _filter
