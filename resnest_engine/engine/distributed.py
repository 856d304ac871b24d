"""Collective helpers the engine needs beyond ``ignite.distributed``."""
from __future__ import annotations

import ignite.distributed as idist
from torch import nn

__all__ = ["broadcast_buffers", "unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Give every rank rank ``src``'s buffers (BatchNorm statistics differ between DDP ranks).

    Buffers are replaced by fresh tensors: ignite's EMA aliases its buffers to the model's, and an
    in-place broadcast would silently change the raw model too.
    """
    if idist.get_world_size() < 2:
        return
    for buf in module.buffers():
        buf.data = idist.broadcast(buf.data.clone(), src=src)
