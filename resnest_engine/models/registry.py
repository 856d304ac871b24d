"""Named variants (a table of constructor arguments) and ``get_model`` / ``list_models``."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from ..errors import InputError
from ..config.validation import register_names
from ..data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from .published import load_published_state_dict
from .resnet import ResNet
from .weights import load_pretrained

__all__ = ["UnknownModelError", "Variant", "get_model", "get_variant", "list_models"]


@dataclass(frozen=True)
class Variant:
    """A named architecture: constructor arguments plus the data settings it was trained with."""

    name: str
    kwargs: Dict[str, Any]
    crop_size: int = 224
    eval_crop_fraction: float = 0.875
    interpolation: str = "bilinear"
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    params_m: float = 0.0  # published parameter count at 1000 classes, in millions
    top1: float = 0.0  # published ImageNet top-1 of the official weights (0 = none published)

    def data_config(self) -> Dict[str, Any]:
        return dict(crop_size=self.crop_size, eval_crop_fraction=self.eval_crop_fraction,
                    interpolation=self.interpolation, mean=self.mean, std=self.std)


_RESNEST = dict(radix=2, cardinality=1, bottleneck_width=64, stem="deep", avg_down=True,
                avd=True, avd_first=False)
_VARIANTS: Dict[str, Variant] = {}


def _register(v: Variant) -> None:
    _VARIANTS[v.name] = v


_register(Variant("resnest14", dict(_RESNEST, layers=[1, 1, 1, 1], stem_width=32), params_m=10.61))
_register(Variant("resnest26", dict(_RESNEST, layers=[2, 2, 2, 2], stem_width=32), params_m=17.07))
_register(Variant("resnest50", dict(_RESNEST, layers=[3, 4, 6, 3], stem_width=32),
                  params_m=27.48, top1=81.03))
_register(Variant("resnest101", dict(_RESNEST, layers=[3, 4, 23, 3], stem_width=64),
                  crop_size=256, params_m=48.28, top1=82.83))
# At >= 320 the official recipe evaluates with ECenterCrop (crop / (crop + 32)) and bicubic.
_register(Variant("resnest200", dict(_RESNEST, layers=[3, 24, 36, 3], stem_width=64),
                  crop_size=320, eval_crop_fraction=320 / 352, interpolation="bicubic",
                  params_m=70.20, top1=83.84))
_register(Variant("resnest269", dict(_RESNEST, layers=[3, 30, 48, 8], stem_width=64),
                  crop_size=416, eval_crop_fraction=416 / 448, interpolation="bicubic",
                  params_m=110.93, top1=84.54))
for _tag, _params, _top1 in [
    ("1s1x64d", 26.22, 80.33), ("2s1x64d", 27.48, 80.53), ("4s1x64d", 31.91, 80.76),
    ("1s2x40d", 25.95, 80.59), ("2s2x40d", 26.94, 80.61), ("4s2x40d", 30.42, 81.14),
    ("1s4x24d", 25.68, 80.99),
]:
    _r, _rest = _tag.split("s")
    _c, _w = _rest[:-1].split("x")
    _register(Variant(
        f"resnest50_fast_{_tag}",
        dict(_RESNEST, layers=[3, 4, 6, 3], stem_width=32, radix=int(_r), cardinality=int(_c),
             bottleneck_width=int(_w), avd_first=True),
        params_m=_params, top1=_top1))
# Baselines from the same blocks without split attention.
_register(Variant("resnet50d", dict(layers=[3, 4, 6, 3], radix=0, stem="deep", stem_width=32,
                                    avg_down=True, avd=False), params_m=25.58))
_register(Variant("resnet50", dict(layers=[3, 4, 6, 3], radix=0, stem="basic", avg_down=False,
                                   avd=False), params_m=25.56))
# The ResNeSt repository's own resnet50/101/152: torchvision's layout, but every 3x3 conv is a
# radix-1 split-attention conv (sigmoid gate). State_dict keys are that repository's (conv2.conv,
# conv2.bn0, conv2.fc1, ...).
for _layers, _params in (([3, 4, 6, 3], 26.20), ([3, 4, 23, 3], 45.76), ([3, 8, 36, 3], 61.86)):
    _depth = {16: 50, 33: 101, 50: 152}[sum(_layers)]
    _register(Variant(f"resnet{_depth}_splat",
                      dict(layers=_layers, radix=1, stem="basic", avg_down=False, avd=False),
                      params_m=_params))


def list_models() -> List[str]:
    """Names accepted by :func:`get_model`, sorted."""
    return sorted(_VARIANTS)


register_names("MODEL.NAME", list_models, "model")


def get_variant(name: str) -> Variant:
    """The :class:`Variant` called ``name``; an unknown name raises ``KeyError`` with suggestions."""
    try:
        return _VARIANTS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_VARIANTS), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(f"unknown model {name!r}{hint} (see list_models())") from None


class UnknownModelError(InputError, KeyError):
    """A model name that is not registered (a ``KeyError`` too, as a registry look-up)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def get_model(name: str, num_classes: int = 1000, pretrained: bool = False,
              **overrides: Any) -> ResNet:
    """Build variant ``name``; ``overrides`` replace its constructor arguments.

    ``pretrained=True`` loads the official published weights (downloaded once into the torch
    hub cache and verified, see :mod:`resnest_engine.models.published`); with ``num_classes``
    other than 1000 the classifier stays freshly initialised.

    The model carries ``model.variant`` (the name), ``model.model_args`` (everything needed to
    rebuild it) and ``model.data_config`` (train crop, eval crop fraction, interpolation,
    mean/std) that the data presets read.

    Args:
        name: the variant, one of :func:`list_models`.
        num_classes: the classifier's outputs.
        pretrained: load the official published weights.
        overrides: constructor arguments of :class:`ResNet` that replace the variant's.
    """
    variant = get_variant(name)
    kwargs = dict(variant.kwargs, num_classes=num_classes)
    kwargs.update(overrides)
    model = ResNet(**kwargs)
    model.variant = name
    model.model_args = dict(kwargs)
    model.data_config = variant.data_config()
    if pretrained:
        load_pretrained(model, load_published_state_dict(name))
    return model
