"""Export a checkpoint's weights as a plain state_dict, a ``torch.export`` program or an ONNX
model (with its preprocessing and class names: :class:`OnnxMetadata`)."""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torchvision.transforms import v2

from ..storage.checksum import file_checksum_of
from ..config import Config
from ..data.options import channel_stats
from ..data.transforms import ECenterCrop, eval_resize_size, interpolation_mode
from ..errors import InputError
from .evaluate import stored_class_names
from ..storage.files import WriteError, atomic_write, write_sidecar
from .from_config import data_options, model_kwargs
from ..handlers.checkpoint import CheckpointWriteError, save_weights
from ..models import WeightsError, get_model
from ..models.registry import get_variant
from ..models.weights import read_state_dict

__all__ = ["MissingExtraError", "ONNX_EXTRA", "ONNX_INPUT", "ONNX_OUTPUT", "OnnxMetadata", "export_weights",
           "require_onnx"]

#: How to install what ``.onnx`` files need (onnx and onnxscript to export, onnxruntime to run).
ONNX_EXTRA = "pip install 'resnest-engine[onnx]'"
#: The ``metadata_props`` key that marks a resnest-engine ONNX file, and its layout's version.
ONNX_FORMAT_KEY, ONNX_FORMAT = "resnest_engine.format", "onnx-metadata/1"
#: The exported graph's input (float32 N x C x crop x crop, N free) and output (N x classes).
ONNX_INPUT, ONNX_OUTPUT = "image", "logits"


class MissingExtraError(InputError):
    """An optional dependency (one of the package's extras) is not installed."""


def require_onnx() -> Any:
    """The ``onnx`` module, after checking that ``onnxscript`` (which the dynamo exporter needs)
    imports too; :class:`MissingExtraError` naming the extra when either is missing."""
    # Imported here, not at the top: onnx and onnxscript are the optional `onnx` extra, needed
    # only by an .onnx export; the package and its other exports work without them.
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch.onnx.export(dynamo=True) imports it)
    except ImportError:
        raise MissingExtraError(f"--export .onnx needs onnx and onnxscript: {ONNX_EXTRA}") from None
    return onnx


# --------------------------------------------------------------------------- the metadata
@dataclass(frozen=True)
class OnnxMetadata:
    """What an exported ONNX file says about itself in its ``metadata_props`` (all strings):
    the model, its class names and the evaluation preprocessing, so that a deployer needs
    nothing else. Preprocessing, in order, on a PIL image:

    1. convert to ``image_mode`` (``RGB``, or ``L`` for one-channel models);
    2. ``resize == "short_side"``: resize the short side to ``resize_size`` (aspect kept,
       ``interpolation``, antialiased), then take the centred ``crop_size`` square;
       ``resize == "center_box"`` (crops from 320 up, the official ECenterCrop): take the centred
       square of side ``round(short_side * crop_size / resize_size)`` and resize it to
       ``crop_size`` square (``interpolation``);
    3. to float in [0, 1] (divide by 255), ``(x - mean) / std`` per channel, CHW;
    4. stack to ``N x C x crop_size x crop_size`` float32: the graph input ``image``; the output
       ``logits`` (``N x len(class_names)``); softmax gives the probabilities.
    """

    model_name: str
    class_names: Tuple[str, ...]
    image_mode: str
    resize: str
    resize_size: int
    crop_size: int
    interpolation: str
    mean: Tuple[float, ...]
    std: Tuple[float, ...]

    @classmethod
    def from_config(cls, cfg: Config, class_names: Sequence[str]) -> "OnnxMetadata":
        """The evaluation preprocessing of ``cfg`` (as ``resnest-predict`` and ``--eval-only``
        apply it: :func:`resnest_engine.data.build_eval_transform` of the config's data
        options), for a model with ``class_names``."""
        opts = data_options(cfg)
        mean, std = channel_stats(opts)
        crop = opts.crop_size
        # The cases of resnest_engine.data.transforms.eval_geometry, in its order.
        if opts.small_image:
            resize, size, interp = "short_side", crop, opts.interpolation
        elif crop >= opts.ecrop_min_size:
            resize, size, interp = "center_box", crop + 32, opts.large_crop_interpolation
        else:
            resize, size, interp = "short_side", eval_resize_size(opts), opts.interpolation
        return cls(model_name=cfg.MODEL.NAME, class_names=tuple(class_names),
                   image_mode="L" if opts.in_chans == 1 else "RGB", resize=resize,
                   resize_size=int(size), crop_size=int(crop), interpolation=interp,
                   mean=tuple(mean), std=tuple(std))

    def to_props(self) -> Dict[str, str]:
        """The ``metadata_props`` entries (lists as JSON)."""
        return {
            ONNX_FORMAT_KEY: ONNX_FORMAT,
            "model_name": self.model_name,
            "class_names": json.dumps(list(self.class_names)),
            "image_mode": self.image_mode,
            "resize": self.resize,
            "resize_size": str(self.resize_size),
            "crop_size": str(self.crop_size),
            "interpolation": self.interpolation,
            "mean": json.dumps(list(self.mean)),
            "std": json.dumps(list(self.std)),
            "input": ONNX_INPUT,
            "output": ONNX_OUTPUT,
            "preprocessing": self.describe(),
        }

    def describe(self) -> str:
        """The preprocessing in one line, for people reading the file's metadata."""
        if self.resize == "short_side":
            geometry = (f"resize the short side to {self.resize_size} ({self.interpolation}, "
                        f"antialiased), centre crop {self.crop_size}x{self.crop_size}")
        else:
            geometry = (f"centre square of side round(short side * {self.crop_size} / "
                        f"{self.resize_size}) resized to {self.crop_size}x{self.crop_size} "
                        f"({self.interpolation})")
        return (f"{self.image_mode} image; {geometry}; /255; (x - mean) / std per channel; "
                f"float32 NCHW into '{ONNX_INPUT}'; softmax of '{ONNX_OUTPUT}' over the "
                "class_names")

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str = "the ONNX file") -> "OnnxMetadata":
        """Read :meth:`to_props`'s entries back; :class:`InputError` naming ``source`` when
        they are missing or malformed (not a resnest-engine export)."""
        if props.get(ONNX_FORMAT_KEY) != ONNX_FORMAT:
            raise InputError(f"{source} has no resnest-engine metadata ({ONNX_FORMAT_KEY} is "
                             f"{props.get(ONNX_FORMAT_KEY)!r}, not {ONNX_FORMAT!r}); export it "
                             "with resnest-train --export NAME.onnx")
        try:
            names = json.loads(props["class_names"])
            meta = cls(model_name=props["model_name"], class_names=tuple(names),
                       image_mode=props["image_mode"], resize=props["resize"],
                       resize_size=int(props["resize_size"]), crop_size=int(props["crop_size"]),
                       interpolation=props["interpolation"],
                       mean=tuple(float(v) for v in json.loads(props["mean"])),
                       std=tuple(float(v) for v in json.loads(props["std"])))
            interpolation_mode(meta.interpolation)
        except (KeyError, ValueError, TypeError) as e:
            raise InputError(f"{source}: bad resnest-engine metadata ({type(e).__name__}: "
                             f"{e})") from None
        channels = 1 if meta.image_mode == "L" else 3
        if (meta.image_mode not in ("RGB", "L") or meta.resize not in ("short_side", "center_box")
                or not names or not all(isinstance(n, str) for n in names)
                or len(meta.mean) != channels or len(meta.std) != channels):
            raise InputError(f"{source}: bad resnest-engine metadata: {props}")
        return meta

    def eval_transform(self) -> v2.Compose:
        """PIL image (already in ``image_mode``) -> normalised CHW float tensor: the same
        transform as the run's ``build_eval_transform``."""
        mode = interpolation_mode(self.interpolation)
        if self.resize == "short_side":
            geometry = [v2.Resize(self.resize_size, interpolation=mode, antialias=True),
                        v2.CenterCrop(self.crop_size)]
        else:  # ECenterCrop's box is crop / (crop + 32) of the short side
            if self.resize_size != self.crop_size + 32:
                raise InputError(f"center_box resize_size must be crop_size + 32, got "
                                 f"{self.resize_size} for {self.crop_size}")
            geometry = [ECenterCrop(self.crop_size, self.interpolation)]
        return v2.Compose(geometry + [v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                                      v2.Normalize(list(self.mean), list(self.std))])


# --------------------------------------------------------------------------- the export
def _write_bytes(out: Path, data: bytes) -> None:
    """``data`` to ``out`` atomically with its checksum sidecar; a failed write (disk full) is a
    :class:`CheckpointWriteError` (the one-line ``cannot write OUT: reason``)."""
    try:
        atomic_write(out, lambda f: f.write(data), size=len(data),
                     on_written=lambda: write_sidecar(out, file_checksum_of(data), "file"))
    except WriteError as e:
        raise CheckpointWriteError(str(e)) from None


def _example_size(cfg: Config) -> int:
    size = cfg.DATA.CROP_SIZE or get_variant(cfg.MODEL.NAME).crop_size
    if cfg.DATA.DATASET in ("digits", "synthetic") and not cfg.DATA.CROP_SIZE:
        size = cfg.DATA.IMAGE_SIZE
    return size


def _onnx_bytes(cfg: Config, model: torch.nn.Module, class_names: List[str]) -> bytes:
    """``model`` through the dynamo ONNX exporter, batch axis free, with its metadata (the
    caller has checked :func:`require_onnx`)."""
    meta = OnnxMetadata.from_config(cfg, class_names)
    # Batch 2, not 1: an example batch of 1 would be specialised to a constant.
    example = torch.randn(2, cfg.MODEL.IN_CHANS, meta.crop_size, meta.crop_size)
    program = torch.onnx.export(
        model, (example,), dynamo=True, input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), verbose=False)
    proto = program.model_proto
    for key, value in meta.to_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"{meta.model_name} exported by resnest-engine; {meta.describe()}"
    return proto.SerializeToString()


def export_weights(cfg: Config, checkpoint: Path, out: Path) -> Path:
    """Write ``checkpoint``'s final weights to ``out`` atomically (a temp file renamed into place).

    ``.pt2``: a ``torch.export`` program of the model in eval mode for one image at the variant's
    crop size (``torch.export.load`` reads it). ``.onnx``: an ONNX model (the dynamo exporter;
    any batch size) whose ``metadata_props`` hold the class names stored with the weights (the
    indices when there are none) and the evaluation preprocessing (:class:`OnnxMetadata`);
    needs the ``onnx`` extra (:class:`MissingExtraError` otherwise). Anything else: a state_dict
    with exactly ``get_model``'s keys, checked by loading it strictly first. Either way with its
    checksum in the sidecar ``OUT.checksum`` (:mod:`resnest_engine.storage.checksum`).

    Args:
        cfg: the run's config (model, crop size, preprocessing).
        checkpoint: the checkpoint or weights file to export.
        out: the file to write; its suffix picks the format (``.pt``, ``.pt2``, ``.onnx``).
    """
    out = Path(out)
    if out.suffix == ".onnx":
        require_onnx()  # before the weights are read
    state = read_state_dict(checkpoint)
    num_classes = state["fc.weight"].shape[0] if "fc.weight" in state else 1000
    model = get_model(cfg.MODEL.NAME, num_classes=num_classes, **model_kwargs(cfg))
    model.load_state_dict(state, strict=True)
    model.eval()
    if out.suffix == ".pt2":
        size = _example_size(cfg)
        example = torch.randn(1, cfg.MODEL.IN_CHANS, size, size)
        program = torch.export.export(model, (example,))
        buffer = io.BytesIO()  # in memory first: the sidecar needs the bytes' checksum
        torch.export.save(program, buffer)
        _write_bytes(out, buffer.getvalue())
    elif out.suffix == ".onnx":
        names: Optional[List[str]] = stored_class_names(checkpoint)
        if names is None:
            names = [str(i) for i in range(num_classes)]
        elif len(names) != num_classes:
            raise WeightsError(f"{checkpoint} does not fit its class names: the classifier "
                               f"(fc.weight) has {num_classes} outputs, {len(names)} classes "
                               "are stored with the run")
        _write_bytes(out, _onnx_bytes(cfg, model, names))
    else:  # .pt, .pth or anything else: a plain state_dict
        save_weights(model.state_dict(), out)
    return out
