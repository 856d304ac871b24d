"""ImageNet's per-channel mean and standard deviation (RGB, on [0, 1] pixels): the one place
they are written (a variant's defaults, the data options' defaults)."""
from __future__ import annotations

from typing import Tuple

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)
