"""The ResNeSt recipe's transforms on torchvision ``transforms.v2``.

Train (crop < 320): RandomResizedCrop(scale 0.08-1) -> horizontal flip -> [RandAugment |
AutoAugment(ImageNet) | TrivialAugmentWide] -> ColorJitter(c, c, c) -> float -> PCA lighting ->
Normalize -> RandomErasing; every step after the crop is switchable through ``DataOptions``.
Train (crop >= 320, the official large-crop path): ERandomCrop + bicubic resize instead of
RandomResizedCrop. Small-image preset (``small_image``): pad-and-crop + flip for 32x32 data.
Eval: crop < 320: resize the short side to ceil(crop / eval_crop_fraction), centre crop;
crop >= 320: ECenterCrop; small-image preset: resize to the crop.

torchvision's implementations are used wherever one exists. Three transforms are written here
because torchvision has none: ``Lighting`` (AlexNet PCA noise), ``ERandomCrop`` and
``ECenterCrop`` (the official ResNeSt large-crop transforms). They draw from torch's global RNG,
like torchvision's, so the loader can key every draw to (seed, epoch, index).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from .options import DataOptions, channel_stats, validate_options

__all__ = [
    "LARGE_CROP", "IMAGENET_PCA_EIGVAL", "IMAGENET_PCA_EIGVEC", "Lighting", "ERandomCrop",
    "ECenterCrop", "build_train_transform", "build_eval_transform", "interpolation_mode",
    "erandom_crop_box", "ecenter_crop_box", "eval_resize_size", "lighting_offset",
    "small_image_padding", "small_image_resize", "train_geometry", "eval_geometry",
]

LARGE_CROP = 320  # crops of this side and above take the official ERandomCrop/ECenterCrop path

# ImageNet RGB PCA (AlexNet, as in fb.resnet.torch and the official ResNeSt code).
IMAGENET_PCA_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
IMAGENET_PCA_EIGVEC = torch.tensor([
    [-0.5675, 0.7192, 0.4009],
    [-0.5808, -0.0045, -0.8140],
    [-0.5836, -0.6948, 0.4203],
])

_MODES = {"nearest": v2.InterpolationMode.NEAREST, "bilinear": v2.InterpolationMode.BILINEAR,
          "bicubic": v2.InterpolationMode.BICUBIC}


def interpolation_mode(name: str) -> v2.InterpolationMode:
    return _MODES[name]


def lighting_offset(alpha: torch.Tensor) -> torch.Tensor:
    """Per-image RGB offset (..., 3) of PCA lighting for draws ``alpha`` (..., 3), 0-1 scale."""
    eigval = IMAGENET_PCA_EIGVAL.to(alpha)
    eigvec = IMAGENET_PCA_EIGVEC.to(alpha)
    return (alpha * eigval) @ eigvec.T


class Lighting(v2.Transform):
    """AlexNet PCA lighting noise on a float RGB image (0-1 scale): adds
    ``eigvec @ (alpha * eigval)`` to every pixel, alpha ~ N(0, alphastd) per image.
    Written by hand: torchvision has no PCA lighting transform."""

    def __init__(self, alphastd: float) -> None:
        super().__init__()
        self.alphastd = float(alphastd)

    def make_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
        return {"alpha": torch.randn(3) * self.alphastd}

    def transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
        if not isinstance(inpt, torch.Tensor) or not inpt.is_floating_point():
            return inpt  # labels and other non-image inputs pass through
        offset = lighting_offset(params["alpha"]).to(inpt)
        return inpt + offset.view(3, 1, 1)


def ecenter_crop_box(width: int, height: int, crop: int) -> Tuple[int, int, int, int]:
    """(top, left, height, width) of ECenterCrop: the centred square whose side is
    crop / (crop + 32) of the short side."""
    side = int(round(min(width, height) * crop / (crop + 32)))
    side = max(1, side)
    top = int(round((height - side) / 2.0))
    left = int(round((width - side) / 2.0))
    return top, left, side, side


def erandom_crop_box(width: int, height: int, crop: int, area_range=(0.1, 1.0),
                     ratio_range=(3.0 / 4.0, 4.0 / 3.0), attempts: int = 10
                     ) -> Tuple[int, int, int, int]:
    """(top, left, height, width) of ERandomCrop.

    Up to ``attempts`` times: draw an aspect ratio r (width / height) uniformly in
    ``ratio_range``; draw the height uniformly between the height that gives the minimum area at
    that ratio and the largest height that fits both the image and the maximum area; accept the
    box if its area is in ``area_range`` (as a fraction of the image) and it fits; place it
    uniformly. A box covering the whole image, or no accepted box, falls back to ECenterCrop.
    """
    area = float(width * height)
    min_area, max_area = area_range[0] * area, area_range[1] * area
    for _ in range(attempts):
        r = float(torch.empty(1).uniform_(ratio_range[0], ratio_range[1]))
        low = math.sqrt(min_area / r)
        high = min(math.sqrt(max_area / r), height, width / r)
        if high < 1:
            continue
        low = min(low, high)
        h = int(round(float(torch.empty(1).uniform_(low, high))))
        w = int(round(h * r))
        if h < 1 or w < 1 or h > height or w > width:
            continue
        if not min_area <= h * w <= max_area:
            continue
        if h == height and w == width:
            break  # the whole image: use the centre crop instead
        top = int(torch.randint(0, height - h + 1, (1,)))
        left = int(torch.randint(0, width - w + 1, (1,)))
        return top, left, h, w
    return ecenter_crop_box(width, height, crop)


class _BoxResize(v2.Transform):
    """Crop a box chosen by ``box(width, height)`` and resize it to a ``crop`` square."""

    def __init__(self, crop: int, interpolation: str = "bicubic") -> None:
        super().__init__()
        self.crop = int(crop)
        self.interpolation = interpolation_mode(interpolation)

    def box(self, width: int, height: int) -> Tuple[int, int, int, int]:
        raise NotImplementedError

    def make_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        return dict(zip(("top", "left", "height", "width"), self.box(width, height)))

    def transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
        return self._call_kernel(F.resized_crop, inpt, **params, size=[self.crop, self.crop],
                                 interpolation=self.interpolation, antialias=True)


class ERandomCrop(_BoxResize):
    """The official ResNeSt large-crop train transform: a random box (area 0.1-1 of the image,
    ratio 3/4-4/3, 10 tries, ECenterCrop fallback) resized (bicubic) to ``crop``. Written by hand:
    torchvision's RandomResizedCrop samples differently and falls back to a different crop."""

    def box(self, width: int, height: int) -> Tuple[int, int, int, int]:
        return erandom_crop_box(width, height, self.crop)


class ECenterCrop(_BoxResize):
    """The official ResNeSt large-crop eval transform: the centred square of
    crop / (crop + 32) of the short side, resized (bicubic) to ``crop``. Written by hand:
    torchvision's CenterCrop takes a fixed size, not a fraction of the short side."""

    def box(self, width: int, height: int) -> Tuple[int, int, int, int]:
        return ecenter_crop_box(width, height, self.crop)


def eval_resize_size(opts: DataOptions) -> int:
    """Short side that eval images are resized to before the centre crop (crops < 320)."""
    return int(math.ceil(opts.crop_size / opts.eval_crop_fraction - 1e-9))


def _policy(opts: DataOptions) -> Optional[v2.Transform]:
    mode = interpolation_mode(opts.interpolation)
    if opts.rand_aug is not None:
        n, m = opts.rand_aug
        return v2.RandAugment(num_ops=n, magnitude=m, interpolation=mode)
    if opts.auto_aug:
        return v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET, interpolation=mode)
    if opts.trivial_aug:
        return v2.TrivialAugmentWide(interpolation=mode)
    return None


def small_image_padding(crop: int) -> int:
    """Zero padding on each side before the small-image preset's random crop."""
    return max(1, crop // 8)


def small_image_resize(opts: DataOptions) -> v2.Transform:
    """The small-image preset's first, deterministic train step: resize to the crop square.
    It is a no-op when the images already have the crop size (CIFAR/digits at 32)."""
    return v2.Resize((opts.crop_size, opts.crop_size),
                     interpolation=interpolation_mode(opts.interpolation))


def train_geometry(opts: DataOptions) -> List[v2.Transform]:
    """The crop part of the train transform (no flip)."""
    crop = opts.crop_size
    if opts.small_image:
        return [small_image_resize(opts), v2.RandomCrop(crop, padding=small_image_padding(crop))]
    if crop >= opts.ecrop_min_size:
        return [ERandomCrop(crop, opts.large_crop_interpolation)]
    return [v2.RandomResizedCrop(crop, scale=(0.08, 1.0),
                                 interpolation=interpolation_mode(opts.interpolation),
                                 antialias=True)]


def train_photometric(opts: DataOptions) -> List[v2.Transform]:
    """Augmentations between the crop/flip and the float conversion (work on PIL or uint8)."""
    out: List[v2.Transform] = []
    policy = _policy(opts)
    if policy is not None:
        out.append(policy)
    if opts.color_jitter > 0:
        c = opts.color_jitter
        out.append(v2.ColorJitter(brightness=c, contrast=c, saturation=c))
    return out


def build_train_transform(opts: DataOptions) -> v2.Compose:
    """PIL image or uint8 tensor -> normalised float CHW tensor, per ``opts``.

    Args:
        opts: the data options (crop size, augmentation, mean/std).
    """
    validate_options(opts)
    mean, std = channel_stats(opts)
    steps: List[Any] = list(train_geometry(opts))
    if opts.hflip:
        steps.append(v2.RandomHorizontalFlip())
    steps += train_photometric(opts)
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if opts.pca_lighting > 0:
        steps.append(Lighting(opts.pca_lighting))
    steps.append(v2.Normalize(mean, std))
    if opts.random_erase > 0:
        steps.append(v2.RandomErasing(p=opts.random_erase, value=0))
    return v2.Compose(steps)


def eval_geometry(opts: DataOptions) -> List[v2.Transform]:
    crop = opts.crop_size
    mode = interpolation_mode(opts.interpolation)
    if opts.small_image:
        return [v2.Resize(crop, interpolation=mode), v2.CenterCrop(crop)]
    if crop >= opts.ecrop_min_size:
        return [ECenterCrop(crop, opts.large_crop_interpolation)]
    return [v2.Resize(eval_resize_size(opts), interpolation=mode, antialias=True), v2.CenterCrop(crop)]


def build_eval_transform(opts: DataOptions) -> v2.Compose:
    """PIL image or uint8 tensor -> normalised float CHW tensor (deterministic).

    Args:
        opts: the data options (crop size, crop fraction, interpolation, mean/std).
    """
    validate_options(opts)
    mean, std = channel_stats(opts)
    return v2.Compose(eval_geometry(opts) + [v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                                             v2.Normalize(mean, std)])
