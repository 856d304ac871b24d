"""Mixup / CutMix on the batch (torchvision ``transforms.v2``) with label smoothing folded in;
the loss for its soft targets is :class:`resnest_engine.engine.losses.SoftTargetCrossEntropy`."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from torchvision.transforms import v2

__all__ = ["MixupCutmix"]


class MixupCutmix:
    """Batch transform ``(x, y) -> (x, soft_y)`` for the trainer's ``batch_transform`` hook.

    With probability ``prob`` a batch is mixed: CutMix with probability ``switch_prob`` when both
    alphas are > 0, else whichever alpha is > 0 (torchvision's ``MixUp`` / ``CutMix``). Targets are
    one-hot, smoothed by ``label_smoothing`` (``y * (1 - s) + s / num_classes``) before mixing,
    so they always sum to 1. ``enabled`` is a plain attribute; :meth:`attach` turns it off after
    ``off_epoch``.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                 prob: float = 1.0, switch_prob: float = 0.5, label_smoothing: float = 0.0) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError("mixup/cutmix alphas must be >= 0")
        self.num_classes = num_classes
        self.prob = prob
        self.switch_prob = switch_prob
        self.label_smoothing = label_smoothing
        self.enabled = True
        self._mixup = v2.MixUp(alpha=mixup_alpha, num_classes=num_classes) if mixup_alpha > 0 else None
        self._cutmix = v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes) if cutmix_alpha > 0 else None

    @property
    def active(self) -> bool:
        return self.enabled and self.prob > 0 and (self._mixup or self._cutmix) is not None

    def smooth(self, y: torch.Tensor) -> torch.Tensor:
        """Hard labels to smoothed one-hot float targets."""
        onehot = F.one_hot(y, self.num_classes).float()
        s = self.label_smoothing
        return onehot * (1.0 - s) + s / self.num_classes if s > 0 else onehot

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        # Draw order is fixed (apply?, which?) so a seeded run gives the same mixes.
        apply = self.active and (self.prob >= 1.0 or float(torch.rand(())) < self.prob)
        if not apply:
            return x, self.smooth(y)
        if self._mixup is not None and self._cutmix is not None:
            op = self._cutmix if float(torch.rand(())) < self.switch_prob else self._mixup
        else:
            op = self._mixup or self._cutmix
        # torchvision mixes one-hot targets; mixing is linear, so smoothing before or after
        # gives the same result: mix hard labels, then smooth.
        x, mixed = op(x, y)
        s = self.label_smoothing
        return x, (mixed * (1.0 - s) + s / self.num_classes) if s > 0 else mixed

    def attach(self, trainer: Engine, off_epoch: int = 0) -> None:
        """Disable mixing from epoch ``off_epoch + 1`` on (1-based; 0 = never)."""
        if off_epoch <= 0:
            return

        def _update(engine: Engine) -> None:
            self.enabled = engine.state.epoch <= off_epoch

        trainer.add_event_handler(Events.EPOCH_STARTED, _update)
