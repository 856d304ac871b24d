"""``DataOptions``: every knob of the data pipeline, made from the DATA keys of the config
(:func:`~resnest_engine.config.options.options_from`), and the checks between them."""
from __future__ import annotations

from typing import Optional, Tuple

from ..config.options import options_from
from ..config.validation import check_one_policy
from .imagenet import IMAGENET_MEAN, IMAGENET_STD
from .errors import DataError

__all__ = ["DataOptions", "IMAGENET_MEAN", "IMAGENET_STD", "INTERPOLATIONS", "LARGE_CROP",
           "validate_options", "decode_conflict"]
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
#: DATA keys that are not the loaders' (the loss and the batch mixing read them).
NOT_LOADER_KEYS = ("DATA.LABEL_SMOOTHING", "DATA.MIXUP", "DATA.CUTMIX", "DATA.MIXUP_PROB",
                   "DATA.MIXUP_SWITCH_PROB", "DATA.MIXUP_OFF_EPOCH")


#: Crops of this side and above take the official ERandomCrop/ECenterCrop path (CROP_STYLE auto).
LARGE_CROP = 320
#: What a null CROP_SIZE / EVAL_CROP_FRACTION / INTERPOLATION means without a model variant to
#: ask: the default variant's (resnest50's) values. ``from_config`` fills in the variant's.
DEFAULT_CROP = (224, 0.875, "bilinear")


def _rand_aug_pair(value: str) -> Tuple[int, int]:
    n, m = (int(v) for v in value.split(","))
    return n, m


@options_from("DATA.*", "MODEL.IN_CHANS", exclude=NOT_LOADER_KEYS, error=DataError,
              adapt={"rand_aug": _rand_aug_pair})
class DataOptions:
    """Options of ``create_loaders``: the DATA keys of the config (lower-cased, same defaults
    and checks; ``docs/configuration.md`` lists them) plus ``in_chans`` (MODEL.IN_CHANS) and
    the values below, which are not config keys. ``rand_aug`` is held as ``(n, m)`` (given as
    ``"N,M"`` or a pair). A null ``crop_size`` / ``eval_crop_fraction`` / ``interpolation`` is
    the default variant's (224, 0.875, bilinear); a recipe fills in its variant's.
    """

    mean: Tuple[float, ...] = IMAGENET_MEAN  # the variant's normalisation, 0-1 scale
    std: Tuple[float, ...] = IMAGENET_STD
    large_crop_interpolation: str = "bicubic"  # from LARGE_CROP up (the official choice)
    persistent_workers: bool = True
    pin_memory: Optional[bool] = None  # None: on when CUDA is available
    channels_last: bool = True  # layout of the fast JPEG path's normalised batch

    def __post_init__(self) -> None:
        for name, default in zip(("crop_size", "eval_crop_fraction", "interpolation"),
                                 DEFAULT_CROP):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        validate_options(self)

    @property
    def ecrop_min_size(self) -> int:
        """Crops of this side and above use ERandomCrop/ECenterCrop (``crop_style`` ecrop: all)."""
        return 0 if self.crop_style == "ecrop" else LARGE_CROP


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise DataError(message)


def validate_options(opts: DataOptions) -> None:
    """Raise ``DataError`` naming the first invalid field of ``opts``: the rules between fields
    and of the values that are not config keys (each key's own rule ran at construction; call
    this again after mutating an options object)."""
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
    _check(opts.pca_lighting == 0 or opts.in_chans == 3,
           "data.pca_lighting needs RGB images (in_chans=3); set it to 0 for in_chans=1")
    check_one_policy(opts.rand_aug, opts.auto_aug, opts.trivial_aug, lower=True, error=DataError)
    _check(not (opts.fast_jpeg and opts.small_image),
           "data.fast_jpeg does not support data.small_image (32x32 data is not decode-bound); "
           "turn one of them off")
    conflict = decode_conflict(opts)
    _check(opts.decode != "gpu" or conflict is None,
           f"DATA.DECODE gpu cannot run {conflict} on the device with the CPU path's per-sample "
           f"draws; set DATA.DECODE: cpu or turn {conflict} off")


def decode_conflict(opts: DataOptions) -> Optional[str]:
    """The first key that DATA.DECODE gpu cannot reproduce on the device (None: none).
    The policies draw ops whose geometry and fill depend on the image; the small-image preset
    pads 32x32 images that are not decode-bound."""
    for key, on in (("DATA.RAND_AUG", opts.rand_aug is not None), ("DATA.AUTO_AUG", opts.auto_aug),
                    ("DATA.TRIVIAL_AUG", opts.trivial_aug), ("DATA.SMALL_IMAGE", opts.small_image)):
        if on:
            return key
    return None


def channel_stats(opts: DataOptions) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """``(mean, std)`` with one value per channel; for in_chans=1, 3-value stats are averaged."""
    mean, std = tuple(float(v) for v in opts.mean), tuple(float(v) for v in opts.std)
    if opts.in_chans == 1:
        mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
    return mean, std
