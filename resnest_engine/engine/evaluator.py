"""The evaluation Engine: top-1 / top-5 (percent) and loss."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Union

import torch
from ignite.engine import Engine, Events
from ignite.metrics import Accuracy, Loss, TopKCategoricalAccuracy
from torch import nn

from .distributed import broadcast_buffers, unwrap_model
from .trainer import autocast_context, default_prepare_batch

__all__ = ["create_evaluator", "evaluator_like"]


def create_evaluator(
    model: Union[nn.Module, Callable[[], nn.Module]],
    *,
    device: Union[str, torch.device, None] = None,
    amp: str = "off",
    channels_last: bool = False,
    prepare_batch=None,
    num_classes: Optional[int] = None,
    non_blocking: bool = True,
) -> Engine:
    """Engine whose ``state.metrics`` holds ``top1``, ``top5`` (percent) and ``loss`` (mean CE).

    A DDP-wrapped model is evaluated through its inner module: DDP's forward syncs buffers, which
    would hang when ranks hold different numbers of batches (unpadded sharding). Metrics are
    all-reduced by ignite, so pair this with a sampler that gives every sample to exactly one rank
    (``resnest_engine.data`` does) and every rank must run the evaluator. At ``STARTED`` every rank
    takes rank 0's buffers (BatchNorm statistics differ between DDP ranks).

    ``model`` may be a function returning the model, asked at every run: the standard handlers
    evaluate the EMA model of whatever EMA handler they hold when validation runs. The options
    are kept on the engine (``evaluator_options``) for :func:`evaluator_like`.

    Args:
        model: the model (DDP-wrapped or not), or a function returning it at every run.
        device: where batches go (default: the model's device).
        amp: ``"off"``, ``"fp16"`` or ``"bf16"`` autocast.
        channels_last: move inputs to channels_last memory format.
        prepare_batch: ``(batch, device, non_blocking) -> (x, y)`` (default: the first two items).
        num_classes: the number of classes; top-5 is capped by it (default: ``model.num_classes``,
            else 1000).
        non_blocking: asynchronous host-to-device copies.
    """
    current = (lambda: model) if isinstance(model, nn.Module) else model
    net = unwrap_model(current())
    if device is None:
        device = next(net.parameters()).device
    device = torch.device(device)
    if num_classes is None:
        num_classes = getattr(net, "num_classes", 1000)
    autocast_context(device, amp)
    prepare = prepare_batch or default_prepare_batch

    @torch.no_grad()
    def eval_step(engine: Engine, batch):
        net = unwrap_model(current())
        net.eval()
        x, y = prepare(batch, device, non_blocking)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, amp):
            logits = net(x)
        return logits.float(), y

    engine = Engine(eval_step)
    engine.add_event_handler(Events.STARTED, lambda _: broadcast_buffers(unwrap_model(current())))
    (Accuracy(device=device) * 100.0).attach(engine, "top1")
    (TopKCategoricalAccuracy(k=min(5, num_classes), device=device) * 100.0).attach(engine, "top5")
    Loss(nn.CrossEntropyLoss(), device=device).attach(engine, "loss")
    engine.evaluator_options = dict(device=device, amp=amp, channels_last=channels_last,
                                    prepare_batch=prepare_batch, num_classes=num_classes,
                                    non_blocking=non_blocking)
    return engine


def evaluator_like(evaluator: Engine, model: Union[nn.Module, Callable[[], nn.Module]]) -> Engine:
    """An evaluator of ``model`` with the options ``evaluator`` was made with (the defaults for
    an engine :func:`create_evaluator` did not make)."""
    options: Dict[str, Any] = getattr(evaluator, "evaluator_options", {})
    return create_evaluator(model, **options)
