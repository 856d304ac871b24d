"""Evaluate weights on a config's validation split (``--eval-only``, ``resnest-average``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.utils import manual_seed

from ..config import Config
from ..data.loaders import create_eval_loader
from ..engine import create_evaluator
from ..engine.precision import resolve_amp, resolve_channels_last
from ..storage.files import UnsafeLoadError, safe_load
from .from_config import data_options, model_kwargs
from ..handlers import setup_logger
from ..handlers.validation import run_validation
from ..models import WeightsError, get_model, load_pretrained
from ..storage.run_dir import RunDir

__all__ = ["eval_setup", "evaluate", "stored_class_names"]


def stored_class_names(weights: Path) -> Optional[List[str]]:
    """The class names (index order) stored with ``weights``: a resnest-engine checkpoint's
    ``meta["class_names"]``, else ``classes.json`` of its run directory; None if there are none."""
    weights = Path(weights)
    try:
        # mmap, unverified: only the small meta dict is read here; the tensors are loaded (and
        # their checksum verified) once, by the caller.
        obj = safe_load(weights, mmap=True, verify_checksum=False)
        names = obj.get("meta", {}).get("class_names") if isinstance(obj, dict) else None
        if names:
            return list(names)
    except (UnsafeLoadError, AttributeError, TypeError):
        pass  # not ours, or unreadable: loading the weights reports it properly
    for directory in (weights.parent, weights.parent.parent):
        path = directory / RunDir.CLASSES
        if path.is_file():
            names = json.loads(path.read_text())
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                return names
    return None


def eval_setup(cfg: Config, weights: Path, classes: Optional[Sequence[str]] = None
               ) -> Tuple[Engine, Any, List[str]]:
    """``(evaluator, val loader, class names)`` for ``weights`` on ``cfg``'s validation split:
    the model built and loaded (its classifier must fit the split's classes, in the order of
    ``classes``, else the val split's folders), on this process's device with the config's
    precision and layout."""
    val_loader, names = create_eval_loader(data_options(cfg), cfg.TRAINING.TEST_BATCH_SIZE,
                                           classes)
    model = get_model(cfg.MODEL.NAME, num_classes=len(names), **model_kwargs(cfg))
    report = load_pretrained(model, weights)
    if report.skipped_classifier:
        raise WeightsError(f"{weights} does not fit: its classifier (fc.weight) is for another "
                           f"number of classes than the dataset's {len(names)}")
    device = idist.device()
    model = model.to(device)
    amp, _ = resolve_amp(cfg.TRAINING.AMP, device)
    channels_last, _ = resolve_channels_last(cfg.MODEL.CHANNELS_LAST, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    evaluator = create_evaluator(model, amp=amp, channels_last=channels_last,
                                 prepare_batch=getattr(val_loader, "prepare_batch", None))
    return evaluator, val_loader, list(names)


def evaluate(cfg: Config, weights: Path) -> Dict[str, float]:
    """Evaluate a checkpoint or weights file on the validation split (the only data it reads);
    class order from the names stored with the weights, else the val split's folders.

    Args:
        cfg: the config (its data and model sections are used).
        weights: a checkpoint or weights file.
    """
    setup_logger(None)
    manual_seed(cfg.SEED)
    evaluator, val_loader, _ = eval_setup(cfg, weights, stored_class_names(weights))
    return run_validation({"raw": evaluator}, val_loader)["raw"]
