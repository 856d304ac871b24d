"""Periodic validation of the raw model (and the EMA model) every N epochs and at the end."""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, Mapping, Optional

from ignite.engine import Engine, Events

from ..engine.events import TrainEvents, epochs_filter, register_train_events

logger = logging.getLogger("resnest_engine")

__all__ = ["Validation", "run_validation"]


def run_validation(evaluators: Mapping[str, Engine], loader: Iterable) -> Dict[str, Dict[str, float]]:
    """Run each evaluator over ``loader``; ``{name: {"top1", "top5", "loss"}}``.

    Every rank must call this (metrics are all-reduced)."""
    results = {}
    for name, evaluator in evaluators.items():
        evaluator.run(loader)
        results[name] = {k: float(evaluator.state.metrics[k]) for k in ("top1", "top5", "loss")}
    return results


class Validation:
    """Runs ``evaluators`` (``{"raw": ..., "ema": ...}``, in that order) over ``loader`` and then
    fires :attr:`TrainEvents.VALIDATION_COMPLETED` on the trainer.

    ``results`` (``{name: {"top1", "top5", "loss"}}``) and ``epoch`` hold the latest validation.
    Handlers that need each evaluator's numbers as they come (best checkpoint, TensorBoard, early
    stopping) attach to the evaluator's ``COMPLETED``, as ignite's handlers expect.

    ``attach(trainer)`` places it on ``EPOCH_COMPLETED`` at epochs ``start, start + every, ...``
    and the last one (:func:`~resnest_engine.engine.events.epochs_filter`); pass ``event`` to
    place it elsewhere, e.g. ``Events.ITERATION_COMPLETED(every=500)``.
    """

    def __init__(self, evaluators: Mapping[str, Engine], loader: Iterable, every: int = 1,
                 start: Optional[int] = None) -> None:
        if not evaluators:
            raise ValueError("Validation needs at least one evaluator")
        self.evaluators = dict(evaluators)
        self.loader = loader
        self.every = every
        self.start = start
        self.results: Dict[str, Dict[str, float]] = {}
        self.epoch: Optional[int] = None

    def __call__(self, trainer: Engine) -> None:
        self.results = run_validation(self.evaluators, self.loader)
        self.epoch = trainer.state.epoch
        for name, m in self.results.items():
            tag = "" if name == "raw" else f" ({name.upper()})"
            logger.info("Validation%s: Top1: %.3f | Top5: %.3f | Loss: %.4f", tag, m["top1"],
                        m["top5"], m["loss"])
        trainer.fire_event(TrainEvents.VALIDATION_COMPLETED)

    def attach(self, trainer: Engine, event: Any = None) -> None:
        register_train_events(trainer)
        if event is None:
            event = Events.EPOCH_COMPLETED(event_filter=epochs_filter(self.every, self.start))
        trainer.add_event_handler(event, self)
