"""Exponential moving average of the weights (ignite ``EMAHandler``), in timm's decay terms."""
from __future__ import annotations

import ignite.distributed as idist
from ignite.engine import Engine, Events
from ignite.handlers import EMAHandler
from torch import nn

from ..engine.trainer import _unwrap


def attach_ema(trainer: Engine, model: nn.Module, decay: float) -> EMAHandler:
    """Update an EMA copy of ``model`` after every optimizer step.

    ``decay`` is timm's (``ema = decay * ema + (1 - decay) * w``, e.g. 0.9998); ignite's
    ``momentum`` is ``1 - decay``. The EMA model is ``handler.ema_model`` (eval mode); its
    ``state_dict`` goes into checkpoints through the standard handlers.
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
    handler = EMAHandler(_unwrap(model), momentum=1.0 - decay)
    handler.attach(trainer, name="ema_momentum", event=Events.ITERATION_COMPLETED)
    return handler


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Give every rank rank ``src``'s buffers (BatchNorm statistics differ between DDP ranks).

    Buffers are replaced by fresh tensors: ignite's EMA aliases its buffers to the model's, and an
    in-place broadcast would silently change the raw model too.
    """
    if idist.get_world_size() < 2:
        return
    for buf in module.buffers():
        buf.data = idist.broadcast(buf.data.clone(), src=src)
