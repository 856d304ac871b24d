"""Exponential moving average of the weights (ignite ``EMAHandler``), in timm's decay terms."""
from __future__ import annotations

from ignite.handlers import EMAHandler
from torch import nn

from ..engine.distributed import unwrap_model

__all__ = ["create_ema"]


def create_ema(model: nn.Module, decay: float) -> EMAHandler:
    """ignite's ``EMAHandler`` for ``model`` with timm's ``decay``.

    ``decay`` is timm's (``ema = decay * ema + (1 - decay) * w``, e.g. 0.9998); ignite's
    ``momentum`` is ``1 - decay``. Place it with ignite's own
    ``ema.attach(trainer, name="ema_momentum", event=Events.ITERATION_COMPLETED)`` (the standard
    handlers do). The EMA model is ``ema.ema_model`` (eval mode).

    Args:
        model: the model to average.
        decay: timm's EMA decay, e.g. 0.9998.
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
    return EMAHandler(unwrap_model(model), momentum=1.0 - decay)
