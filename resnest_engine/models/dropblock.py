"""DropBlock with a run-time settable probability, safe on maps smaller than the block."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import drop_block2d

__all__ = ["DropBlock", "set_dropblock_prob"]


class DropBlock(nn.Module):
    """Wraps ``torchvision.ops.drop_block2d`` (block size 3, as the official ResNeSt code).

    ``p`` is a plain attribute so a handler can ramp it during training. The module is the
    identity in eval mode or when ``p == 0``. torchvision shrinks the block to the feature map
    and then rejects an even size (a 2x2 map); here the block is clamped to the largest odd size
    that fits, so 1x1 and 2x2 maps work.
    """

    def __init__(self, p: float = 0.0, block_size: int = 3) -> None:
        super().__init__()
        self.p = float(p)
        self.block_size = int(block_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p <= 0.0:
            return x
        side = min(self.block_size, x.shape[-1], x.shape[-2])
        if side % 2 == 0:
            side -= 1
        return drop_block2d(x, self.p, max(side, 1), inplace=False, training=True)

    def extra_repr(self) -> str:
        return f"p={self.p}, block_size={self.block_size}"


def set_dropblock_prob(model: nn.Module, p: float) -> int:
    """Set ``p`` on every :class:`DropBlock` in ``model``; returns how many were set."""
    n = 0
    for m in model.modules():
        if isinstance(m, DropBlock):
            m.p = float(p)
            n += 1
    return n
