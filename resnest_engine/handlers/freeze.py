"""Keep a pretrained body frozen for the first epochs of a fine-tune, then train it."""
from __future__ import annotations

import logging
from typing import Iterable, List, Optional

import torch
from ignite.engine import Engine, Events
from torch import nn

logger = logging.getLogger("resnest_engine")

__all__ = ["FreezeBody"]


class FreezeBody:
    """While ``trainer.state.epoch <= epochs``, the optimizer skips every body parameter (all
    but ``model.get_classifier()``, or ``params``); from the next epoch on they train.

    Implemented as an optimizer step pre-hook that drops the body's gradients (``grad = None``:
    no update, no weight decay, no momentum), not by toggling ``requires_grad``: DDP registers
    its gradient hooks once, and a parameter frozen when it wraps the model would never be
    all-reduced after unfreezing. The body's BatchNorm statistics keep updating in train mode.

    Example::

        FreezeBody(model, optimizer, epochs=2).attach(trainer)
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, epochs: int,
                 params: Optional[Iterable[nn.Parameter]] = None) -> None:
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        self.epochs = int(epochs)
        self.optimizer = optimizer
        if params is None:
            head = {id(p) for p in model.get_classifier().parameters()}
            params = [p for p in model.parameters() if id(p) not in head]
        self.params: List[nn.Parameter] = list(params)
        self._trainer: Optional[Engine] = None
        self._handle = None

    @property
    def frozen(self) -> bool:
        return self._trainer is not None and self._trainer.state.epoch <= self.epochs

    def _drop_grads(self, _optimizer, _args, _kwargs) -> None:
        if self.frozen:
            for p in self.params:
                p.grad = None

    def attach(self, trainer: Engine) -> None:
        self._trainer = trainer
        self._handle = self.optimizer.register_step_pre_hook(self._drop_grads)

        @trainer.on(Events.EPOCH_STARTED(once=self.epochs + 1))
        def _unfreeze(engine: Engine) -> None:
            logger.info("Epoch %d: the body is unfrozen (%d parameter tensors train from now on)",
                        engine.state.epoch, len(self.params))

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
