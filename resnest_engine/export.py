"""Export a checkpoint's weights as a plain state_dict or a ``torch.export`` program."""
from __future__ import annotations

import io
from pathlib import Path

import torch

from .checksum import file_checksum_of
from .config import Config
from .files import WriteError, atomic_write, write_sidecar
from .from_config import model_kwargs
from .handlers.checkpoint import CheckpointWriteError, save_weights
from .models import get_model, get_variant
from .models.weights import read_state_dict

__all__ = ["export_weights"]


def export_weights(cfg: Config, checkpoint: Path, out: Path) -> Path:
    """Write ``checkpoint``'s final weights to ``out`` atomically (a temp file renamed into place).

    ``.pt2``: a ``torch.export`` program of the model in eval mode for one image at the variant's
    crop size (``torch.export.load`` reads it). Anything else: a state_dict with exactly
    ``get_model``'s keys, checked by loading it strictly first. Either way with its checksum in
    the sidecar ``OUT.checksum`` (:mod:`resnest_engine.checksum`).
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
        buffer = io.BytesIO()  # in memory first: the sidecar needs the bytes' checksum
        torch.export.save(program, buffer)
        data = buffer.getvalue()
        try:
            atomic_write(out, lambda f: f.write(data), size=len(data),
                         on_written=lambda: write_sidecar(out, file_checksum_of(data), "file"))
        except WriteError as e:
            raise CheckpointWriteError(str(e)) from None
    else:  # .pt, .pth or anything else: a plain state_dict
        save_weights(model.state_dict(), out)
    return out
