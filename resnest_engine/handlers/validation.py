"""Periodic validation of the raw model (and the EMA model) every N epochs and at the end."""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, Mapping, Optional

from ignite.engine import Engine, Events

from .ema import broadcast_buffers

logger = logging.getLogger("resnest_engine")


def validation_due(engine: Engine, every: int, start: Optional[int] = None) -> bool:
    """True at epochs ``start, start + every, ...`` (``start`` defaults to ``every``: the
    multiples of ``every``) and at the last epoch."""
    e = engine.state.epoch
    first = every if start is None else start
    due = e >= first and (e - first) % every == 0
    return (due or e == engine.state.max_epochs) and not getattr(engine.state, "nan_detected", False)


def run_validation(evaluators: Mapping[str, Engine], loader: Iterable) -> Dict[str, Dict[str, float]]:
    """Run each evaluator over ``loader``; ``{name: {"top1", "top5", "loss"}}``.

    Every rank must call this (metrics are all-reduced). BatchNorm buffers are taken from rank 0
    first, since DDP ranks' statistics differ.
    """
    results = {}
    for name, evaluator in evaluators.items():
        broadcast_buffers(evaluator.model)
        evaluator.run(loader)
        results[name] = {k: float(evaluator.state.metrics[k]) for k in ("top1", "top5", "loss")}
    return results


def attach_validation(trainer: Engine, evaluators: Mapping[str, Engine], loader: Iterable,
                      every: int = 1, start: Optional[int] = None) -> None:
    """At ``EPOCH_COMPLETED`` when due (epochs ``start, start + every, ...`` and the last), run the evaluators and store the results in
    ``trainer.state.val_results`` (``{"raw": {...}, "ema": {...}}``) with ``state.val_epoch``.

    Each evaluator needs a ``model`` attribute (``create_evaluator`` output gets one here)."""

    def _validate(engine: Engine) -> None:
        if not validation_due(engine, every, start):
            return
        engine.state.val_results = run_validation(evaluators, loader)
        engine.state.val_epoch = engine.state.epoch
        for name, m in engine.state.val_results.items():
            tag = "" if name == "raw" else f" ({name.upper()})"
            logger.info("Validation%s: Top1: %.3f | Top5: %.3f | Loss: %.4f", tag, m["top1"],
                        m["top5"], m["loss"])

    trainer.add_event_handler(Events.EPOCH_COMPLETED, _validate)
