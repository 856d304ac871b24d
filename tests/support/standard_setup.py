"""Tests' shorthand for the standard handlers of a small run: builds the pieces a recipe builds
(LR schedule, EMA, validation, DropBlock ramp) from a few numbers, then the standard handlers with
the remaining keywords as their policy (``StandardOptions`` fields)."""
from typing import Any, Iterable, Optional

from ignite.engine import Engine, Events

from resnest_engine.engine import create_evaluator
from resnest_engine.engine.distributed import unwrap_model
from resnest_engine.handlers import (DropBlockRamp, StandardHandlers, Validation,
                                     build_standard_handlers, create_ema, create_lr_scheduler)


def standard_handlers(trainer: Engine, model, optimizer, val_loader: Optional[Iterable] = None, *,
                      epochs: int, epoch_length: int, lr: float,
                      evaluator: Optional[Engine] = None, lr_scheduler: str = "cos",
                      warmup_epochs: int = 0, warmup_start_factor: float = 0.0,
                      min_lr: float = 0.0, ema_decay: float = 0.0, dropblock_prob: float = 0.0,
                      val_every: int = 1, val_start: Optional[int] = None,
                      **policy: Any) -> StandardHandlers:
    total = epochs * epoch_length
    raw = unwrap_model(model)
    validation = None
    if val_loader is not None:
        validation = Validation({"raw": evaluator or create_evaluator(raw)}, val_loader,
                                val_every, val_start)
    return build_standard_handlers(
        trainer, model, optimizer,
        lr_scheduler=create_lr_scheduler(optimizer, lr_scheduler, lr, total,
                                         warmup_epochs * epoch_length, warmup_start_factor,
                                         min_lr),
        ema=create_ema(model, ema_decay) if ema_decay > 0 else None,
        validation=validation,
        dropblock=DropBlockRamp(raw, dropblock_prob, total) if dropblock_prob > 0 else None,
        **policy)


def scripted_evaluator(scores) -> Engine:
    """An evaluator whose top-1 at its n-th run is ``scores[n]`` (top-5 99, loss 1)."""
    ev = Engine(lambda e, b: None)
    ev.calls = 0

    @ev.on(Events.COMPLETED)
    def _(engine):
        engine.state.metrics = {"top1": scores[ev.calls], "top5": 99.0, "loss": 1.0}
        ev.calls += 1

    return ev
