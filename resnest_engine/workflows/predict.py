"""Top-k classes of image files with a trained run: :func:`predict` (``resnest-predict`` is its
command line, :mod:`resnest_engine.cli.predict`).

    from resnest_engine.workflows.predict import predict
    result = predict("output/digits", ["photos/"], topk=3)
    for rec in result.records:
        print(rec["path"], rec["label_1"], rec["prob_1"])

The weights are a training run directory (its ``config.yaml``, ``classes.json`` and final
weights, else its best checkpoint, else its newest resume point), a resnest-engine checkpoint
file (it carries its config and class names), a plain weights file (``model_weights.pt``, an
export) whose folder holds the run's ``config.yaml``, or an ONNX export (``resnest-train
--export NAME.onnx``), run with ONNX Runtime on the CPU, its preprocessing and class names read
from the file itself (no config needed; the ``onnx`` extra). Images go through the run's
evaluation transform, in batches, under ``torch.inference_mode``; an image that cannot be read
is skipped (with its reason), the others are still predicted.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import config_from_dict, load_config
from ..data import build_eval_transform
from ..data.datasets import IMG_EXTENSIONS, is_image_file
from ..errors import InputError, one_line
from .export import ONNX_EXTRA, ONNX_INPUT, MissingExtraError, OnnxMetadata
from ..storage.files import UnsafeLoadError, atomic_write_text, safe_load, write_error
from .from_config import data_options, model_kwargs
from ..handlers.checkpoint import read_checkpoint
from ..models import WeightsError, get_model, load_pretrained
from ..models.weights import read_state_dict
from .run_files import find_run_weights, refuse_overwrite
from ..storage.run_dir import RunDir

__all__ = ["OUTPUT_SUFFIXES", "Predictions", "predict"]

#: What ``output=`` may end in: a CSV (columns ``path,label_1,prob_1,...``) or a JSON list.
OUTPUT_SUFFIXES = (".csv", ".json")

PathLike = Union[str, "os.PathLike[str]"]
Record = Dict[str, Any]


@dataclass
class Predictions:
    """What :func:`predict` found, in the order of the images."""

    #: One per image predicted: ``{"path": ..., "label_1": ..., "prob_1": ..., ...}``, the
    #: ``k`` most probable classes first (softmax probabilities rounded to 6 decimals).
    records: List[Dict[str, Any]] = field(default_factory=list)
    #: ``(path, reason)`` of each image that could not be read.
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    #: The run's class names in index order (the indices as names when none are stored).
    class_names: List[str] = field(default_factory=list)


# --------------------------------------------------------------------------- the weights
@dataclass
class _Weights:
    """What the weights argument resolved to."""

    cfg: Any
    weights: Path
    what: str  # "final weights", "best checkpoint", "checkpoint", "weights file", ...
    class_names: Optional[List[str]]  # None: not stored with the run
    run_dir: Optional[Path]  # the run directory the weights belong to, when known


def _read_class_names(path: Path) -> Optional[List[str]]:
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read class names from {path}: {one_line(e)}") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
        raise InputError(f"{path} is not a JSON list of class names")
    return names


def _load_object(path: Path) -> Any:
    """A look at ``path`` (mapped, unverified: is it a checkpoint of ours?); what is used from it
    is loaded and verified by ``read_checkpoint`` / ``read_state_dict``."""
    try:
        return safe_load(path, mmap=True, verify_checksum=False)
    except UnsafeLoadError as e:
        raise InputError(f"--weights: cannot load {path} as a weights-only file: {e}") from None


def _checkpoint_meta(path: Path) -> Optional[Dict[str, Any]]:
    """``meta`` of a resnest-engine checkpoint (checked with ``read_checkpoint``), else None."""
    obj = _load_object(path)
    if not (isinstance(obj, dict) and "format_version" in obj):
        return None
    meta = read_checkpoint(path)["meta"]
    return meta if isinstance(meta, dict) else {}


def _run_dir_of(path: Path) -> Optional[Path]:
    """The run directory holding the weights file ``path`` (its folder, or the folder above
    ``checkpoints/``), recognised by its config.yaml."""
    for d in (path.parent, path.parent.parent):
        if (d / RunDir.CONFIG).is_file():
            return d
    return None


def _resolve_weights(arg: PathLike) -> _Weights:
    """A run directory or a weights file -> config, weights file and class names."""
    src = Path(arg)
    if src.is_dir():
        if not (src / RunDir.CONFIG).is_file():
            raise InputError(f"--weights: {src} has no {RunDir.CONFIG}: not a training run "
                             "directory (pass the run's --outdir or a checkpoint file)")
        cfg = load_config(src / RunDir.CONFIG)
        try:
            path, what = find_run_weights(src, cfg.MODEL.NAME)
        except InputError as e:
            raise InputError(f"--weights: {e}") from None
        names = None
        if (src / RunDir.CLASSES).is_file():
            names = _read_class_names(src / RunDir.CLASSES)
        elif path.name != RunDir.WEIGHTS:
            names = (_checkpoint_meta(path) or {}).get("class_names")
        return _Weights(cfg, path, what, list(names) if names else None, src)
    if not src.exists():
        raise InputError(f"--weights: not found: {src}")
    if not src.is_file():
        raise InputError(f"--weights: {src} is neither a run directory nor a file")
    meta = _checkpoint_meta(src)
    run_dir = _run_dir_of(src)
    names = None
    if meta is not None and isinstance(meta.get("config"), dict):
        cfg, what = config_from_dict(meta["config"]), "checkpoint"
        names = meta.get("class_names")
    elif run_dir is not None:
        cfg, what = load_config(run_dir / RunDir.CONFIG), "weights file"
    else:
        raise InputError(f"--weights: {src} is not a resnest-engine checkpoint and its folder has "
                         f"no {RunDir.CONFIG}; pass a training run directory, one of its checkpoints, "
                         f"or put the run's {RunDir.CONFIG} (and {RunDir.CLASSES}) beside the file")
    if not names and run_dir is not None and (run_dir / RunDir.CLASSES).is_file():
        names = _read_class_names(run_dir / RunDir.CLASSES)
    return _Weights(cfg, src, what, list(names) if names else None, run_dir)


def _build_model(w: _Weights, note: Callable[[str], None]):
    """The run's network with ``w.weights`` loaded, in eval mode (on the CPU), and the class
    names (indices as names when none are stored)."""
    names = w.class_names
    if names is None:
        state = read_state_dict(w.weights)
        if "fc.weight" not in state:
            raise WeightsError(f"{w.weights} has no classifier (fc.weight)")
        names = [str(i) for i in range(state["fc.weight"].shape[0])]
        note(f"note: no class names stored with {w.weights} (no {RunDir.CLASSES}, no "
             f"class_names in the checkpoint): labels are class indices")
    model = get_model(w.cfg.MODEL.NAME, num_classes=len(names), **model_kwargs(w.cfg))
    report = load_pretrained(model, w.weights)
    if report.skipped_classifier:
        raise WeightsError(f"{w.weights} does not fit its class names: the classifier "
                           f"(fc.weight) is not for the {len(names)} classes stored with the run")
    return model.eval(), names


# --------------------------------------------------------------------------- an ONNX export
def _is_onnx(arg: PathLike) -> bool:
    return Path(arg).suffix.lower() == ".onnx" and not Path(arg).is_dir()


def _onnx_session(path: Path):
    """An ONNX Runtime session of ``path`` on the CPU (as many threads as torch uses) and the
    file's :class:`~resnest_engine.workflows.export.OnnxMetadata`."""
    if not path.is_file():
        raise InputError(f"--weights: not found: {path}")
    # Imported here, not at the top: onnxruntime is the optional `onnx` extra, needed only for
    # .onnx weights; predicting with a run directory or a checkpoint works without it.
    try:
        import onnxruntime
    except ImportError:
        raise MissingExtraError(f"--weights {path}: a .onnx model needs onnxruntime: "
                                f"{ONNX_EXTRA}") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(str(path), options,
                                               providers=["CPUExecutionProvider"])
    except Exception as e:  # ONNX Runtime's own error types (a corrupt or foreign file)
        raise InputError(f"--weights: cannot load {path} with ONNX Runtime: "
                         f"{one_line(e, first_line=True)}") from None
    meta = OnnxMetadata.from_props(session.get_modelmeta().custom_metadata_map,
                                   f"--weights {path}")
    return session, meta


def _onnx_forward(session) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        (logits,) = session.run(None, {ONNX_INPUT: x.numpy()})
        return torch.from_numpy(logits)
    return forward


# --------------------------------------------------------------------------- the images
def _find_images(inputs: Sequence[str]) -> List[str]:
    """Files as given; folders searched recursively for image files (sorted). Duplicates once."""
    found: List[str] = []
    for arg in inputs:
        if os.path.isdir(arg):
            for dirpath, dirnames, filenames in os.walk(arg, followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                found.extend(os.path.join(dirpath, f) for f in sorted(filenames) if is_image_file(f))
        elif os.path.exists(arg):
            found.append(arg)
        else:
            raise InputError(f"not found: {arg}")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise InputError(f"no images found in {' '.join(inputs)} (looked for "
                         f"{', '.join(IMG_EXTENSIONS)})")
    return unique


class _ImageFiles:
    """A dataset of ``(index, tensor or None, error or None)``: an unreadable file is an item
    with its reason, not an exception, so the rest of its batch is still predicted."""

    def __init__(self, paths: Sequence[str], transform, mode: str) -> None:
        self.paths, self.transform, self.mode = list(paths), transform, mode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            with Image.open(self.paths[index]) as im:
                image = im.convert(self.mode)  # decodes fully: a truncated file fails here
            return index, self.transform(image), None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            return index, None, f"{type(e).__name__}: {one_line(e)}"


def _as_list(items):
    return items


def _device(arg):
    if arg is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(arg)
    except (RuntimeError, ValueError, TypeError):
        raise InputError(f"--device: {arg!r} is not a device (cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {arg}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"--device {arg}: this machine has {torch.cuda.device_count()} "
                             "CUDA device(s)")
    elif dev.type != "cpu":
        raise InputError(f"--device: {arg!r} is not supported (cpu, cuda or cuda:N)")
    return dev


# --------------------------------------------------------------------------- the outputs
def _record(path: str, labels: Sequence[str], probs: Sequence[float]) -> Dict[str, Any]:
    rec: Dict[str, Any] = {"path": path}
    for i, (label, p) in enumerate(zip(labels, probs), start=1):
        rec[f"label_{i}"] = label
        rec[f"prob_{i}"] = round(float(p), 6)
    return rec


def _columns(k: int) -> List[str]:
    cols = ["path"]
    for i in range(1, k + 1):
        cols += [f"label_{i}", f"prob_{i}"]
    return cols


def _output_text(records: Sequence[Dict[str, Any]], k: int, fmt: str) -> str:
    if fmt == ".json":
        return json.dumps(list(records), indent=1) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_columns(k), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def _check_output(name: Optional[PathLike]) -> Optional[Path]:
    if name is None:
        return None
    name = os.fspath(name)
    out = Path(name)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"--output: {name!r} must end in .csv or .json")
    if out.is_dir():
        raise InputError(f"--output: {name} is a folder")
    if not out.parent.is_dir():
        raise InputError(f"--output: directory not found: {out.parent}")
    return out


def _write_output(out: Path, text: str) -> None:
    try:
        atomic_write_text(out, text)
    except OSError as e:
        raise write_error(out, e) from None


# --------------------------------------------------------------------------- predict
def predict(weights: PathLike, images: Union[PathLike, Sequence[PathLike]], *, topk: int = 5,
            batch_size: int = 32, device=None, workers: int = 0,
            output: Optional[PathLike] = None, progress: bool = False,
            on_batch: Optional[Callable[[List[Record], List[Tuple[str, str]]], None]] = None,
            note: Optional[Callable[[str], None]] = None) -> Predictions:
    """The ``topk`` most probable classes of each image with a trained run's weights.

    ``weights``: a run directory, a resnest-engine checkpoint, a weights file whose folder
    holds the run's ``config.yaml``, or a ``.onnx`` export (run with ONNX Runtime on the CPU; its
    metadata gives the preprocessing and class names; needs the ``onnx`` extra, else
    :class:`~resnest_engine.workflows.export.MissingExtraError`). ``images``: image files, or folders
    searched recursively (in sorted order). ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"``
    (default: CUDA when available; a ``.onnx`` model always runs on the CPU).
    ``workers``: image-decoding worker processes. ``output``: also write the records to this
    ``.csv`` or ``.json`` file (atomically; never over a file of the weights' run directory).
    ``progress``: a progress bar on stderr. ``on_batch(records, skipped)`` is called after each
    batch with what it added; ``note(line)`` with remarks (what is predicted, what was written).

    Raises :class:`~resnest_engine.errors.InputError` (one line, naming the argument as
    ``resnest-predict`` spells it) for bad arguments, no images, or unusable weights.

    Args:
        weights: a run directory, a checkpoint, a weights file beside the run's
            ``config.yaml``, or a ``.onnx`` export.
        images: image files, or folders searched recursively (in sorted order).
        topk: how many classes per image.
        batch_size: images per forward pass.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (default: CUDA when available).
        workers: image-decoding worker processes.
        output: also write the records to this ``.csv`` or ``.json`` file.
        progress: a progress bar on stderr.
        on_batch: ``on_batch(records, skipped)`` after each batch.
        note: ``note(line)`` with remarks.
    """
    for flag, value, low in (("--topk", topk, 1), ("--batch-size", batch_size, 1),
                             ("--workers", workers, 0)):
        if value < low:
            raise InputError(f"{flag} must be >= {low}, got {value}")
    note = note or (lambda line: None)  # silent
    out = _check_output(output)
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    paths = _find_images([os.fspath(p) for p in images])
    use_onnx = _is_onnx(weights)
    if use_onnx:
        onnx_file = Path(weights)
        if device is not None and _device(device).type != "cpu":
            raise InputError(f"--device {device}: a .onnx model runs on the CPU (ONNX Runtime's "
                             "CPUExecutionProvider); leave --device out or pass cpu")
        session, meta = _onnx_session(onnx_file)
        run_dir, weights_files = None, [onnx_file]
    else:
        dev = _device(device)
        w = _resolve_weights(weights)
        run_dir, weights_files = w.run_dir, [w.weights]
    if out is not None:
        refuse_overwrite(
            out, "--output", run_dir, weights_files,
            run_file=f"is a file of the run directory {run_dir}; write the predictions "
                     "somewhere else",
            input_file="is the weights file being read; write the predictions somewhere else")

    if use_onnx:
        names, forward = list(meta.class_names), _onnx_forward(session)
        dev = torch.device("cpu")
        transform, image_mode = meta.eval_transform(), meta.image_mode
        note(f"predicting {len(paths)} image(s) with ONNX model {onnx_file} "
             f"({meta.model_name}, {len(names)} classes) on cpu (ONNX Runtime)")
    else:
        model, names = _build_model(w, note)
        forward = model.to(dev)
        cfg = w.cfg
        note(f"predicting {len(paths)} image(s) with {w.what} {w.weights} "
             f"({cfg.MODEL.NAME}, {len(names)} classes) on {dev}")
        transform = build_eval_transform(data_options(cfg))
        image_mode = "L" if cfg.MODEL.IN_CHANS == 1 else "RGB"
    k = min(topk, len(names))
    dataset = _ImageFiles(paths, transform, image_mode)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=_as_list)
    result = Predictions(class_names=list(names))
    bar = tqdm(total=len(paths), unit="img", file=sys.stderr, leave=False, disable=not progress)
    try:
        with torch.inference_mode():
            for batch in loader:
                good, records, skipped = [], [], []
                for index, tensor, error in batch:
                    if error is None:
                        good.append((index, tensor))
                    else:
                        skipped.append((paths[index], error))
                if good:
                    x = torch.stack([t for _, t in good]).to(dev)
                    probs = torch.softmax(forward(x).float(), dim=1)
                    top_p, top_i = probs.topk(k, dim=1)
                    for (index, _), ps, ids in zip(good, top_p.tolist(), top_i.tolist()):
                        records.append(_record(paths[index], [names[i] for i in ids], ps))
                result.records += records
                result.skipped += skipped
                if on_batch is not None:
                    on_batch(records, skipped)
                bar.update(len(batch))
    finally:
        bar.close()
    if out is not None:
        _write_output(out, _output_text(result.records, k, out.suffix.lower()))
        note(f"wrote {len(result.records)} prediction(s) to {out}")
    return result

