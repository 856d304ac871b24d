"""``DataOptions``: every knob of the data pipeline in one dataclass, and its validation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from ..imagenet import IMAGENET_MEAN, IMAGENET_STD
from .errors import DataError

__all__ = ["DataOptions", "IMAGENET_MEAN", "IMAGENET_STD", "INTERPOLATIONS", "validate_options"]
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


@dataclass
class DataOptions:
    """Options of ``create_loaders``; every field has a default that works for the digits demo.

    Dataset: ``dataset`` (see ``list_datasets()``), ``root``, ``download`` (CIFAR only),
    ``skip_corrupt`` (image folders), ``image_size`` (digits/synthetic side),
    ``synthetic_size`` / ``synthetic_classes`` (synthetic only).
    Geometry: ``crop_size`` (train and eval side; >= ``ecrop_min_size``, 320 by default, switches
    to the official ERandomCrop / ECenterCrop path; 0 = at every size, as the official torch
    train.py), ``eval_crop_fraction``, ``interpolation`` (below 320),
    ``large_crop_interpolation`` (320 and above, bicubic as in the official code),
    ``small_image`` (pad-and-crop + flip preset for 32x32 data).
    Augmentation (all off by default except the flip): ``hflip``, ``color_jitter``,
    ``pca_lighting``, ``rand_aug`` (n, m), ``auto_aug``, ``trivial_aug``, ``random_erase``
    (probability), ``aug_repeats`` (>= 2 turns on repeated augmentation).
    Tensor: ``mean`` / ``std`` (0-1 scale), ``in_chans`` (1 or 3).
    Loading: ``workers`` (per process), ``persistent_workers``, ``pin_memory`` (None: on when
    CUDA is available), ``fast_jpeg`` (uint8 fast path, see ``resnest_engine.data.jpeg``),
    ``channels_last`` (layout of the fast path's normalised batch).
    """

    dataset: str = "digits"
    root: Optional[str] = None
    download: bool = False
    crop_size: int = 224
    eval_crop_fraction: float = 0.875
    interpolation: str = "bilinear"
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    in_chans: int = 3
    hflip: bool = True
    color_jitter: float = 0.0
    pca_lighting: float = 0.0
    rand_aug: Optional[Tuple[int, int]] = None  # (n, m)
    auto_aug: bool = False
    trivial_aug: bool = False
    random_erase: float = 0.0
    small_image: bool = False
    aug_repeats: int = 0
    workers: int = 4
    skip_corrupt: bool = False
    fast_jpeg: bool = False
    synthetic_size: int = 1024
    synthetic_classes: int = 10
    image_size: int = 32
    # Fields beyond the fixed API, all defaulted.
    large_crop_interpolation: str = "bicubic"
    val_fraction: Optional[float] = None  # split ROOT/<class>/ into train/val (image folders)
    split_seed: int = 0  # seed of that split
    ecrop_min_size: int = 320  # crops of this side and above use ERandomCrop/ECenterCrop (0: all)
    persistent_workers: bool = True
    pin_memory: Optional[bool] = None
    channels_last: bool = True


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise DataError(message)


def validate_options(opts: DataOptions) -> None:
    """Raise ``DataError`` naming the first invalid field of ``opts``."""
    _check(isinstance(opts.crop_size, int) and opts.crop_size > 0,
           f"data.crop_size must be a positive integer, got {opts.crop_size!r}")
    _check(0.0 < float(opts.eval_crop_fraction) <= 1.0,
           f"data.eval_crop_fraction must be in (0, 1], got {opts.eval_crop_fraction!r}")
    for field in ("interpolation", "large_crop_interpolation"):
        value = getattr(opts, field)
        _check(value in INTERPOLATIONS,
               f"data.{field} must be one of {', '.join(INTERPOLATIONS)}, got {value!r}")
    _check(opts.in_chans in (1, 3), f"data.in_chans must be 1 or 3, got {opts.in_chans!r}")
    for field in ("mean", "std"):
        value = tuple(getattr(opts, field))
        allowed = (3,) if opts.in_chans == 3 else (1, 3)
        _check(len(value) in allowed,
               f"data.{field} must have {' or '.join(map(str, allowed))} value(s) for "
               f"in_chans={opts.in_chans}, got {value!r}")
    _check(all(s > 0 for s in opts.std), f"data.std values must be positive, got {tuple(opts.std)!r}")
    _check(opts.color_jitter >= 0, f"data.color_jitter must be >= 0, got {opts.color_jitter!r}")
    _check(opts.pca_lighting >= 0, f"data.pca_lighting must be >= 0, got {opts.pca_lighting!r}")
    _check(opts.pca_lighting == 0 or opts.in_chans == 3,
           "data.pca_lighting needs RGB images (in_chans=3); set it to 0 for in_chans=1")
    _check(0.0 <= opts.random_erase <= 1.0,
           f"data.random_erase is a probability in [0, 1], got {opts.random_erase!r}")
    if opts.rand_aug is not None:
        ra = tuple(opts.rand_aug)
        _check(len(ra) == 2 and all(isinstance(v, int) for v in ra) and ra[0] >= 1 and 0 <= ra[1] <= 30,
               f"data.rand_aug must be (n, m) with n >= 1 and 0 <= m <= 30, got {opts.rand_aug!r}")
    policies = [name for name, on in (("rand_aug", opts.rand_aug is not None),
                                      ("auto_aug", opts.auto_aug),
                                      ("trivial_aug", opts.trivial_aug)) if on]
    _check(len(policies) <= 1,
           f"choose at most one augmentation policy, got {' and '.join('data.' + p for p in policies)}")
    _check(isinstance(opts.aug_repeats, int) and opts.aug_repeats >= 0,
           f"data.aug_repeats must be an integer >= 0, got {opts.aug_repeats!r}")
    _check(isinstance(opts.workers, int) and opts.workers >= 0,
           f"data.workers must be an integer >= 0, got {opts.workers!r}")
    _check(opts.val_fraction is None or 0 < opts.val_fraction < 1,
           f"data.val_fraction must be in (0, 1) or None, got {opts.val_fraction!r}")
    _check(opts.image_size > 0, f"data.image_size must be positive, got {opts.image_size!r}")
    _check(opts.synthetic_size > 0, f"data.synthetic_size must be positive, got {opts.synthetic_size!r}")
    _check(opts.synthetic_classes > 0,
           f"data.synthetic_classes must be positive, got {opts.synthetic_classes!r}")
    _check(not (opts.fast_jpeg and opts.small_image),
           "data.fast_jpeg does not support data.small_image (32x32 data is not decode-bound); "
           "turn one of them off")


def channel_stats(opts: DataOptions) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """``(mean, std)`` with one value per channel; for in_chans=1, 3-value stats are averaged."""
    mean, std = tuple(float(v) for v in opts.mean), tuple(float(v) for v in opts.std)
    if opts.in_chans == 1:
        mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
    return mean, std
