"""ResNet / ResNeSt backbone built from one Bottleneck.

Module names follow the official ResNeSt code (and so timm's and torchvision's ResNets), so
their checkpoint files load with ``strict=True``.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .dropblock import DropBlock
from .split_attention import SplitAttention

__all__ = ["Bottleneck", "ResNet", "STEMS"]

STEMS = ("deep", "basic", "cifar")


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (split attention when ``radix >= 1``, plain conv when 0) -> 1x1, with residual.

    ``avd``: downsample with a 3x3 average pool (before the 3x3 conv when ``avd_first``, after it
    otherwise) and run the 3x3 conv at stride 1. ``dropblock``: DropBlock after bn1, inside split
    attention after bn0 (after bn2 for a plain conv) and after bn3, as the official code.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Optional[nn.Module] = None,
        radix: int = 2,
        cardinality: int = 1,
        bottleneck_width: int = 64,
        avd: bool = True,
        avd_first: bool = False,
        is_first: bool = False,
        dropblock: bool = False,
    ) -> None:
        super().__init__()
        group_width = int(planes * (bottleneck_width / 64.0)) * cardinality
        self.radix = radix
        self.conv1 = nn.Conv2d(inplanes, group_width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(group_width)
        self.dropblock1 = DropBlock() if dropblock else None
        self.relu = nn.ReLU(inplace=True)
        use_avd = avd and (stride > 1 or is_first)
        self.avd_first = avd_first
        self.avd_layer = nn.AvgPool2d(3, stride, padding=1) if use_avd else None
        conv_stride = 1 if use_avd else stride
        if radix >= 1:
            self.conv2 = SplitAttention(
                group_width, group_width, 3, conv_stride, 1,
                cardinality=cardinality, radix=radix, dropblock=dropblock,
            )
            self.bn2 = None
            self.dropblock2 = None
        else:
            self.conv2 = nn.Conv2d(group_width, group_width, 3, conv_stride, 1,
                                   groups=cardinality, bias=False)
            self.bn2 = nn.BatchNorm2d(group_width)
            self.dropblock2 = DropBlock() if dropblock else None
        self.conv3 = nn.Conv2d(group_width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.dropblock3 = DropBlock() if dropblock else None
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.bn1(self.conv1(x))
        if self.dropblock1 is not None:
            out = self.dropblock1(out)
        out = self.relu(out)
        if self.avd_layer is not None and self.avd_first:
            out = self.avd_layer(out)
        out = self.conv2(out)
        if self.bn2 is not None:
            out = self.bn2(out)
            if self.dropblock2 is not None:
                out = self.dropblock2(out)
            out = self.relu(out)
        if self.avd_layer is not None and not self.avd_first:
            out = self.avd_layer(out)
        out = self.bn3(self.conv3(out))
        if self.dropblock3 is not None:
            out = self.dropblock3(out)
        out += shortcut  # in place: nothing saved for backward reads bn3's output
        return self.relu(out)


def _make_stem(stem: str, in_chans: int, stem_width: int) -> Tuple[nn.Module, int, bool]:
    """Returns (conv1, output channels, whether a stride-2 max-pool follows)."""
    if stem == "basic":
        return nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False), 64, True
    first_stride = 1 if stem == "cifar" else 2
    conv1 = nn.Sequential(
        nn.Conv2d(in_chans, stem_width, 3, first_stride, 1, bias=False),
        nn.BatchNorm2d(stem_width),
        nn.ReLU(inplace=True),
        nn.Conv2d(stem_width, stem_width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(stem_width),
        nn.ReLU(inplace=True),
        nn.Conv2d(stem_width, stem_width * 2, 3, 1, 1, bias=False),
    )
    return conv1, stem_width * 2, stem != "cifar"


class ResNet(nn.Module):
    """ResNet-family classifier; ResNeSt when ``radix >= 1``.

    Args:
        layers: blocks per stage.
        radix, cardinality, bottleneck_width, avd, avd_first: block options (see Bottleneck).
        stem: ``"deep"`` (three 3x3 convs), ``"basic"`` (7x7, torchvision) or ``"cifar"`` (deep
            stem without stride and max-pool, for 32x32 inputs; about 10x the compute).
        stem_width: width of the deep stem's first two convs.
        avg_down: shortcut downsampling by average pool then 1x1 conv.
        dropblock_prob: target DropBlock probability in stages 3-4 (its modules exist only when
            > 0; the current value is set at run time, see ``set_dropblock_prob``).
        final_drop: dropout before the classifier.
        zero_init_last: zero the last BN gamma of every block.
        features_only: return the outputs of ``out_indices`` (0 = stem, 1-4 = stages) instead
            of logits; the classifier is not built.
    """

    def __init__(
        self,
        layers: Sequence[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        radix: int = 2,
        cardinality: int = 1,
        bottleneck_width: int = 64,
        stem: str = "deep",
        stem_width: int = 32,
        avg_down: bool = True,
        avd: bool = True,
        avd_first: bool = False,
        dropblock_prob: float = 0.0,
        final_drop: float = 0.0,
        zero_init_last: bool = False,
        features_only: bool = False,
        out_indices: Sequence[int] = (1, 2, 3, 4),
    ) -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        self.num_classes = num_classes
        self.dropblock_prob = float(dropblock_prob)
        self.grad_checkpointing = False
        self.features_only = features_only
        self.out_indices = tuple(out_indices)
        self.conv1, self.inplanes, has_pool = _make_stem(stem, in_chans, stem_width)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if has_pool else nn.Identity()
        block_args = dict(radix=radix, cardinality=cardinality,
                          bottleneck_width=bottleneck_width, avd=avd, avd_first=avd_first)
        self.layer1 = self._make_layer(64, layers[0], 1, avg_down, block_args, is_first=False)
        self.layer2 = self._make_layer(128, layers[1], 2, avg_down, block_args)
        use_db = dropblock_prob > 0
        self.layer3 = self._make_layer(256, layers[2], 2, avg_down, block_args, dropblock=use_db)
        self.layer4 = self._make_layer(512, layers[3], 2, avg_down, block_args, dropblock=use_db)
        self.num_features = 512 * Bottleneck.expansion
        stem_stride = 2 if stem != "cifar" else 1
        pool_stride = 2 if has_pool else 1
        self.feature_info = [
            dict(num_chs=stem_width * 2 if stem != "basic" else 64,
                 reduction=stem_stride, module="act1"),
        ] + [
            dict(num_chs=64 * 2 ** i * Bottleneck.expansion,
                 reduction=stem_stride * pool_stride * 2 ** i, module=f"layer{i + 1}")
            for i in range(4)
        ]
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(final_drop) if final_drop > 0 else None
        self.fc = None if features_only else nn.Linear(self.num_features, num_classes)
        self._init_weights(zero_init_last)

    def _make_layer(self, planes, blocks, stride, avg_down, block_args, is_first=True,
                    dropblock=False) -> nn.Sequential:
        downsample = None
        out_planes = planes * Bottleneck.expansion
        if stride != 1 or self.inplanes != out_planes:
            if avg_down:
                pool = (nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
                        if stride > 1 else nn.Identity())
                downsample = nn.Sequential(pool, nn.Conv2d(self.inplanes, out_planes, 1, bias=False),
                                           nn.BatchNorm2d(out_planes))
            else:
                downsample = nn.Sequential(nn.Conv2d(self.inplanes, out_planes, 1, stride, bias=False),
                                           nn.BatchNorm2d(out_planes))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, is_first=is_first,
                             dropblock=dropblock, **block_args)]
        self.inplanes = out_planes
        layers += [Bottleneck(self.inplanes, planes, dropblock=dropblock, **block_args)
                   for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_last: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # After the generic init, unlike the official code whose init loop undoes it.
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)

    # -- timm-like surface ------------------------------------------------------------------
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward (saves memory on deep variants)."""
        self.grad_checkpointing = bool(enable)

    def get_classifier(self) -> Optional[nn.Module]:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one for ``num_classes`` (0 = identity)."""
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _run_stage(self, stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            for block in stage:
                x = checkpoint(block, x, use_reentrant=False)
            return x
        return stage(x)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn1(self.conv1(x)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and the four stages: the unpooled last feature map."""
        x = self.maxpool(self._stem(x))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = self._run_stage(stage, x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global pool, dropout and classifier (``pre_logits``: stop before the classifier)."""
        x = torch.flatten(self.avgpool(x), 1)
        if self.drop is not None:
            x = self.drop(x)
        return x if pre_logits or self.fc is None else self.fc(x)

    def forward_intermediates(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Outputs of ``out_indices`` (0: stem, 1-4: stages), shallowest first."""
        x = self._stem(x)
        outs = [x] if 0 in self.out_indices else []
        x = self.maxpool(x)
        for i, stage in enumerate((self.layer1, self.layer2, self.layer3, self.layer4), start=1):
            if i > max(self.out_indices):
                break
            x = self._run_stage(stage, x)
            if i in self.out_indices:
                outs.append(x)
        return outs

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        if self.features_only:
            return self.forward_intermediates(x)
        return self.forward_head(self.forward_features(x))
