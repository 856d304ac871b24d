"""Split-Attention convolution (ResNeSt, Zhang et al. 2020).

Written by hand because torchvision has no split-attention layer; timm's is a model-internal
layer we only use as a test reference. Parameter names (``conv``, ``bn0``, ``fc1``, ``bn1``,
``fc2``) match the official checkpoints.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dropblock import DropBlock


class SplitAttention(nn.Module):
    """k x k conv producing ``radix`` splits of ``out_channels``, fused by channel attention.

    Layer order: conv (groups = cardinality * radix) -> bn0 -> [DropBlock] -> ReLU -> sum of
    splits -> global average pool -> fc1 (groups = cardinality, with bias) -> bn1 -> ReLU -> fc2
    -> softmax over radix (sigmoid when radix == 1) -> attention-weighted sum of splits.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        cardinality: int = 1,
        radix: int = 2,
        reduction_factor: int = 4,
        dropblock: bool = False,
    ) -> None:
        super().__init__()
        if radix < 1:
            raise ValueError(f"radix must be >= 1, got {radix}")
        self.radix = radix
        self.cardinality = cardinality
        self.out_channels = out_channels
        inter_channels = max(in_channels * radix // reduction_factor, 32)
        self.conv = nn.Conv2d(
            in_channels, out_channels * radix, kernel_size, stride, padding, dilation,
            groups=cardinality * radix, bias=False,
        )
        self.bn0 = nn.BatchNorm2d(out_channels * radix)
        self.dropblock = DropBlock(0.0) if dropblock else None
        self.relu = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(out_channels, inter_channels, 1, groups=cardinality)
        self.bn1 = nn.BatchNorm2d(inter_channels)
        self.fc2 = nn.Conv2d(inter_channels, out_channels * radix, 1, groups=cardinality)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn0(self.conv(x))
        if self.dropblock is not None:
            x = self.dropblock(x)
        x = self.relu(x)
        b, _, h, w = x.shape
        if self.radix > 1:
            # The conv's output is radix-major: [split0 channels | split1 channels | ...].
            splits = x.view(b, self.radix, self.out_channels, h, w)
            gap = splits.sum(dim=1).mean(dim=(2, 3), keepdim=True)
        else:
            gap = x.mean(dim=(2, 3), keepdim=True)
        attn = self.fc2(self.relu(self.bn1(self.fc1(gap))))
        if self.radix > 1:
            # fc2's output is cardinality-major (grouped conv): reorder to radix-major before
            # the softmax over radix, or official weights give wrong results.
            attn = attn.view(b, self.cardinality, self.radix, -1).transpose(1, 2)
            attn = F.softmax(attn, dim=1).reshape(b, self.radix, self.out_channels, 1, 1)
            return (splits * attn).sum(dim=1)
        return x * torch.sigmoid(attn)
