"""Export a checkpoint's weights as a plain state_dict or a ``torch.export`` program."""
from __future__ import annotations

from pathlib import Path

import torch

from .config import Config
from .errors import os_error_message
from .files import atomic_write
from .from_config import model_kwargs
from .handlers.checkpoint import CheckpointWriteError, atomic_save
from .models import get_model, get_variant
from .models.weights import read_state_dict

__all__ = ["export_weights"]


def export_weights(cfg: Config, checkpoint: Path, out: Path) -> Path:
    """Write ``checkpoint``'s final weights to ``out`` atomically (a temp file renamed into place).

    ``.pt2``: a ``torch.export`` program of the model in eval mode for one image at the variant's
    crop size (``torch.export.load`` reads it). Anything else: a state_dict with exactly
    ``get_model``'s keys, checked by loading it strictly first.
    """
    state = read_state_dict(checkpoint)
    num_classes = state["fc.weight"].shape[0] if "fc.weight" in state else 1000
    model = get_model(cfg.MODEL.NAME, num_classes=num_classes, **model_kwargs(cfg))
    model.load_state_dict(state, strict=True)
    model.eval()
    out = Path(out)
    if out.suffix == ".pt2":
        size = cfg.DATA.CROP_SIZE or get_variant(cfg.MODEL.NAME).crop_size
        if cfg.DATA.DATASET in ("digits", "synthetic") and not cfg.DATA.CROP_SIZE:
            size = cfg.DATA.IMAGE_SIZE
        example = torch.randn(1, cfg.MODEL.IN_CHANS, size, size)
        program = torch.export.export(model, (example,))
        try:
            atomic_write(out, lambda f: torch.export.save(program, f))
        except OSError as e:
            raise CheckpointWriteError(f"cannot write {out}: {os_error_message(e)}") from None
    else:  # .pt, .pth or anything else: a plain state_dict
        atomic_save(model.state_dict(), out)
    return out
