"""Load local official / timm / resnest-engine checkpoint files into a model."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Tuple, Union

import torch
from torch import nn

from ..errors import InputError
from ..storage.files import UnsafeLoadError, safe_load

__all__ = ["KeyMismatch", "LoadReport", "WeightsError", "load_pretrained", "read_state_dict",
           "strip_prefixes"]

logger = logging.getLogger(__name__)

_PREFIXES = ("module.", "_orig_mod.")
_CLASSIFIER = ("fc.weight", "fc.bias")


class WeightsError(InputError):
    """A weights file is missing, unreadable or does not fit the model."""


@dataclass
class LoadReport:
    """What ``load_pretrained`` did: keys not loaded, and why."""

    skipped_classifier: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)


@dataclass
class KeyMismatch:
    """How a saved state_dict differs from a model's: the one report of missing, unexpected and
    mis-shaped keys (``load_pretrained``, ``check_architecture``)."""

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    #: ``(key, saved shape, model shape)``
    shapes: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)

    @classmethod
    def compare(cls, saved: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor],
                ignore: Iterable[str] = ()) -> "KeyMismatch":
        """Compare ``saved`` with ``model_state``; keys in ``ignore`` are neither missing nor
        unexpected."""
        ignore = set(ignore)
        return cls(
            missing=[k for k in model_state if k not in saved and k not in ignore],
            unexpected=[k for k in saved if k not in model_state and k not in ignore],
            shapes=[(k, tuple(saved[k].shape), tuple(v.shape)) for k, v in model_state.items()
                    if k in saved and k not in ignore and saved[k].shape != v.shape])

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)

    def describe(self, limit: int = 5) -> str:
        """One line: ``shape mismatch (saved vs model): k (a,) vs (b,); missing: ...;
        unexpected: ...``, at most ``limit`` keys of each."""
        parts = []
        if self.shapes:
            parts.append("shape mismatch (saved vs model): " + ", ".join(
                f"{k} {s} vs {m}" for k, s, m in self.shapes[:limit]))
        if self.missing:
            parts.append("missing: " + ", ".join(self.missing[:limit]))
        if self.unexpected:
            parts.append("unexpected: " + ", ".join(self.unexpected[:limit]))
        return "; ".join(parts)


def strip_prefixes(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``state`` with ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) key prefixes removed."""
    out = {}
    for k, v in state.items():
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def read_state_dict(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """Read a state_dict from ``path`` with ``weights_only=True``.

    Accepts a plain state_dict, a dict holding it under ``model``/``state_dict``/``model_ema``
    (a resnest-engine or timm training checkpoint), with ``module.``/``_orig_mod.`` prefixes.
    From a resnest-engine checkpoint of a run with EMA, the EMA weights (the ones it reports).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        obj = safe_load(path)
    except UnsafeLoadError as e:
        raise WeightsError(f"cannot load {path} as a weights-only checkpoint: {e}") from None
    if isinstance(obj, dict) and "format_version" in obj and obj.get("ema"):
        obj = obj["ema"]  # a resnest-engine checkpoint of an EMA run: its final weights
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state_dict of tensors")
    return strip_prefixes(obj)


def load_pretrained(model: nn.Module, path: Union[str, Path, Dict[str, torch.Tensor]],
                    strict: bool = True) -> LoadReport:
    """Load a local checkpoint file (or a state_dict) into ``model`` and report which keys were
    skipped.

    The classifier is dropped (and left freshly initialised) when its shape differs, e.g. a
    1000-class checkpoint into a 10-class model. Any other missing, unexpected or mis-shaped key
    raises :class:`WeightsError` naming the keys when ``strict``.
    """
    if isinstance(path, dict):
        state, path = strip_prefixes(dict(path)), "the state_dict"
    else:
        state = read_state_dict(path)
    own = model.state_dict()
    report = LoadReport()
    for k in _CLASSIFIER:
        if k in state and k in own and state[k].shape != own[k].shape:
            report.skipped_classifier.append(k)
            del state[k]
    mismatch = KeyMismatch.compare(state, own, ignore=report.skipped_classifier)
    report.missing, report.unexpected = mismatch.missing, mismatch.unexpected
    if strict and mismatch:
        raise WeightsError(f"{path} does not fit {getattr(model, 'variant', 'the model')}: "
                           + mismatch.describe())
    state = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(state, strict=False)
    if report.skipped_classifier:
        logger.info("load_pretrained: classifier shape differs, kept fresh: %s",
                    report.skipped_classifier)
    return report
