"""Load local official / timm / resnest-engine checkpoint files into a model."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Union

import torch
from torch import nn

logger = logging.getLogger(__name__)

_PREFIXES = ("module.", "_orig_mod.")
_CLASSIFIER = ("fc.weight", "fc.bias")


class WeightsError(ValueError):
    """A weights file is missing, unreadable or does not fit the model."""


@dataclass
class LoadReport:
    """What ``load_pretrained`` did: keys not loaded, and why."""

    skipped_classifier: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)


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
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, garbage, or a pickle needing unsafe globals
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"cannot load {path} as a weights-only checkpoint: {first}") from None
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
    mismatched = [f"{k} (file {tuple(v.shape)} vs model {tuple(own[k].shape)})"
                  for k, v in state.items() if k in own and v.shape != own[k].shape]
    report.missing = [k for k in own if k not in state and k not in report.skipped_classifier]
    report.unexpected = [k for k in state if k not in own]
    if strict and (mismatched or report.missing or report.unexpected):
        parts = []
        if mismatched:
            parts.append(f"shape mismatch: {', '.join(mismatched[:5])}")
        if report.missing:
            parts.append(f"missing: {', '.join(report.missing[:5])}")
        if report.unexpected:
            parts.append(f"unexpected: {', '.join(report.unexpected[:5])}")
        raise WeightsError(f"{path} does not fit {getattr(model, 'variant', 'the model')}: "
                           + "; ".join(parts))
    state = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(state, strict=False)
    if report.skipped_classifier:
        logger.info("load_pretrained: classifier shape differs, kept fresh: %s",
                    report.skipped_classifier)
    return report
