"""Training losses beyond ``nn.CrossEntropyLoss``."""
from __future__ import annotations

import torch

__all__ = ["SoftTargetCrossEntropy"]


class SoftTargetCrossEntropy(torch.nn.CrossEntropyLoss):
    """Cross-entropy for mixup's soft targets (rows summing to 1) and for hard labels alike.

    ``nn.CrossEntropyLoss`` already accepts class probabilities as targets; this subclass only
    computes it in fp32 for half-precision logits (as autocast would). Label smoothing belongs in
    :class:`~resnest_engine.data.MixupCutmix`'s targets.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().forward(logits.float(), target)
