"""``resnest-predict``: a trained run's top-k classes for image files or folders.

    resnest-predict --weights RUN_DIR_OR_FILE IMAGE_OR_FOLDER... [--topk 5]
                    [--output preds.csv|preds.json] [--batch-size 32] [--device cpu|cuda|cuda:1]

``--weights`` is a training run directory (its ``config.yaml``, ``classes.json`` and final
weights, else its best checkpoint, else its newest resume point), a resnest-engine checkpoint
file (it carries its config and class names), or a plain weights file (``model_weights.pt``, an
export) whose folder holds the run's ``config.yaml``. Images go through the run's evaluation
transform, in batches, under ``torch.inference_mode``.

Exit status: 0 when every image was predicted; 1 when some could not be read (each one is
reported on stderr as ``skipped PATH: reason``; the others are still predicted and written);
2 for a user error (bad flags, no images found, missing or unusable weights): one ``error:``
line; 130 when interrupted.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .cli import UsageError, find_run_weights
from .errors import one_line
from .exit_codes import ExitCode
from .from_config import CLASSES_FILE

__all__ = ["CLASSES_FILE", "CONFIG_FILE", "ImageFiles", "OUTPUT_SUFFIXES", "Predictor",
           "build_model", "build_parser", "columns", "find_images", "main", "output_text",
           "predict", "record", "resolve_weights", "table_line"]

CONFIG_FILE = "config.yaml"
OUTPUT_SUFFIXES = (".csv", ".json")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="resnest-predict",
        description="Top-k classes of images with a trained resnest-engine run.",
        epilog="Exit status: 0 all images predicted, 1 some images could not be read (skipped, "
               "each named on stderr), 2 usage error.")
    p.add_argument("--weights", required=True, metavar="RUN_DIR_OR_FILE",
                   help="a training run directory, a resnest-engine checkpoint, or a weights "
                   "file whose folder holds the run's config.yaml (and classes.json)")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER",
                   help="image files, or folders searched recursively for images")
    p.add_argument("--topk", type=int, default=5,
                   help="classes per image (default 5; at most the number of classes)")
    p.add_argument("--output", metavar="FILE.csv|FILE.json",
                   help="write the predictions here (CSV columns path,label_1,prob_1,...; JSON: a "
                   "list of records with the same keys) instead of printing a table")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    p.add_argument("--workers", type=int, default=0,
                   help="image-decoding worker processes (default 0: decode in this process)")
    return p


# --------------------------------------------------------------------------- the weights
@dataclass
class Predictor:
    """What ``--weights`` resolved to."""

    cfg: Any
    weights: Path
    what: str  # "final weights", "best checkpoint", "checkpoint", "weights file", ...
    class_names: Optional[List[str]]  # None: not stored with the run


def _read_class_names(path: Path) -> Optional[List[str]]:
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read class names from {path}: {one_line(e)}") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
        raise UsageError(f"{path} is not a JSON list of class names")
    return names


def _load_object(path: Path) -> Any:
    from .files import UnsafeLoadError, safe_load
    try:
        return safe_load(path, mmap=True)
    except UnsafeLoadError as e:
        raise UsageError(f"--weights: cannot load {path} as a weights-only file: {e}") from None


def _checkpoint_meta(path: Path) -> Optional[Dict[str, Any]]:
    """``meta`` of a resnest-engine checkpoint (checked with ``read_checkpoint``), else None."""
    obj = _load_object(path)
    if not (isinstance(obj, dict) and "format_version" in obj):
        return None
    from .handlers.checkpoint import read_checkpoint
    meta = read_checkpoint(path)["meta"]
    return meta if isinstance(meta, dict) else {}


def _run_dir_of(path: Path) -> Optional[Path]:
    """The run directory holding the weights file ``path`` (its folder, or the folder above
    ``checkpoints/``), recognised by its config.yaml."""
    for d in (path.parent, path.parent.parent):
        if (d / CONFIG_FILE).is_file():
            return d
    return None


def resolve_weights(arg: str) -> Predictor:
    """A run directory or a weights file -> config, weights file and class names."""
    from .config import config_from_dict, load_config
    src = Path(arg)
    if src.is_dir():
        if not (src / CONFIG_FILE).is_file():
            raise UsageError(f"--weights: {src} has no {CONFIG_FILE}: not a training run "
                             "directory (pass the run's --outdir or a checkpoint file)")
        cfg = load_config(src / CONFIG_FILE)
        try:
            path, what = find_run_weights(src, cfg.MODEL.NAME)
        except UsageError as e:
            raise UsageError(f"--weights: {e}") from None
        names = None
        if (src / CLASSES_FILE).is_file():
            names = _read_class_names(src / CLASSES_FILE)
        elif path.name != "model_weights.pt":
            names = (_checkpoint_meta(path) or {}).get("class_names")
        return Predictor(cfg, path, what, list(names) if names else None)
    if not src.exists():
        raise UsageError(f"--weights: not found: {src}")
    if not src.is_file():
        raise UsageError(f"--weights: {src} is neither a run directory nor a file")
    meta = _checkpoint_meta(src)
    run_dir = _run_dir_of(src)
    names = None
    if meta is not None and isinstance(meta.get("config"), dict):
        cfg, what = config_from_dict(meta["config"]), "checkpoint"
        names = meta.get("class_names")
    elif run_dir is not None:
        cfg, what = load_config(run_dir / CONFIG_FILE), "weights file"
    else:
        raise UsageError(f"--weights: {src} is not a resnest-engine checkpoint and its folder has "
                         f"no {CONFIG_FILE}; pass a training run directory, one of its checkpoints, "
                         f"or put the run's {CONFIG_FILE} (and {CLASSES_FILE}) beside the file")
    if not names and run_dir is not None and (run_dir / CLASSES_FILE).is_file():
        names = _read_class_names(run_dir / CLASSES_FILE)
    return Predictor(cfg, src, what, list(names) if names else None)


def build_model(pred: Predictor):
    """The run's network with ``pred.weights`` loaded, in eval mode (on the CPU), and the class
    names (indices as names when none are stored)."""
    from .models import WeightsError, get_model, load_pretrained
    from .models.weights import read_state_dict
    from .from_config import model_kwargs
    names = pred.class_names
    if names is None:
        state = read_state_dict(pred.weights)
        if "fc.weight" not in state:
            raise WeightsError(f"{pred.weights} has no classifier (fc.weight)")
        names = [str(i) for i in range(state["fc.weight"].shape[0])]
        print(f"note: no class names stored with {pred.weights} (no {CLASSES_FILE}, no "
              f"class_names in the checkpoint): labels are class indices", file=sys.stderr)
    model = get_model(pred.cfg.MODEL.NAME, num_classes=len(names), **model_kwargs(pred.cfg))
    report = load_pretrained(model, pred.weights)
    if report.skipped_classifier:
        raise WeightsError(f"{pred.weights} does not fit its class names: the classifier "
                           f"(fc.weight) is not for the {len(names)} classes stored with the run")
    return model.eval(), names


# --------------------------------------------------------------------------- the images
def _is_image(name: str) -> bool:
    from .data.datasets import IMG_EXTENSIONS
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def find_images(inputs: Sequence[str]) -> List[str]:
    """Files as given; folders searched recursively for image files (sorted). Duplicates once."""
    found: List[str] = []
    for arg in inputs:
        if os.path.isdir(arg):
            for dirpath, dirnames, filenames in os.walk(arg, followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                found.extend(os.path.join(dirpath, f) for f in sorted(filenames) if _is_image(f))
        elif os.path.exists(arg):
            found.append(arg)
        else:
            raise UsageError(f"not found: {arg}")
    unique = list(dict.fromkeys(found))
    if not unique:
        from .data.datasets import IMG_EXTENSIONS
        raise UsageError(f"no images found in {' '.join(inputs)} (looked for "
                         f"{', '.join(IMG_EXTENSIONS)})")
    return unique


class ImageFiles:
    """A dataset of ``(index, tensor or None, error or None)``: an unreadable file is an item
    with its reason, not an exception, so the rest of its batch is still predicted."""

    def __init__(self, paths: Sequence[str], transform, mode: str) -> None:
        self.paths, self.transform, self.mode = list(paths), transform, mode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from PIL import Image
        try:
            with Image.open(self.paths[index]) as im:
                image = im.convert(self.mode)  # decodes fully: a truncated file fails here
            return index, self.transform(image), None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            return index, None, f"{type(e).__name__}: {one_line(e)}"


def _as_list(items):
    return items


def _device(arg: Optional[str]):
    import torch
    if arg is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(arg)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device: {arg!r} is not a device (cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {arg}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {arg}: this machine has {torch.cuda.device_count()} "
                             "CUDA device(s)")
    elif dev.type != "cpu":
        raise UsageError(f"--device: {arg!r} is not supported (cpu, cuda or cuda:N)")
    return dev


# --------------------------------------------------------------------------- the outputs
def record(path: str, labels: Sequence[str], probs: Sequence[float]) -> Dict[str, Any]:
    rec: Dict[str, Any] = {"path": path}
    for i, (label, p) in enumerate(zip(labels, probs), start=1):
        rec[f"label_{i}"] = label
        rec[f"prob_{i}"] = round(float(p), 6)
    return rec


def columns(k: int) -> List[str]:
    cols = ["path"]
    for i in range(1, k + 1):
        cols += [f"label_{i}", f"prob_{i}"]
    return cols


def table_line(rec: Dict[str, Any], k: int) -> str:
    pairs = " ".join(f"{rec[f'label_{i}']} ({rec[f'prob_{i}']:.4f})" for i in range(1, k + 1))
    return f"{rec['path']}  {pairs}"


def output_text(records: Sequence[Dict[str, Any]], k: int, fmt: str) -> str:
    if fmt == ".json":
        return json.dumps(list(records), indent=1) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(k), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def _check_output(name: Optional[str]) -> Optional[Path]:
    if name is None:
        return None
    out = Path(name)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UsageError(f"--output: {name!r} must end in .csv or .json")
    if out.is_dir():
        raise UsageError(f"--output: {name} is a folder")
    if not out.parent.is_dir():
        raise UsageError(f"--output: directory not found: {out.parent}")
    return out


def _write_output(out: Path, text: str) -> None:
    from .files import atomic_write_text
    try:
        atomic_write_text(out, text)
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise UsageError(f"cannot write {out}: {reason}") from None


# --------------------------------------------------------------------------- the command
def predict(a: argparse.Namespace) -> int:
    for flag, value, low in (("--topk", a.topk, 1), ("--batch-size", a.batch_size, 1),
                             ("--workers", a.workers, 0)):
        if value < low:
            raise UsageError(f"{flag} must be >= {low}, got {value}")
    out = _check_output(a.output)
    paths = find_images(a.inputs)
    device = _device(a.device)
    pred = resolve_weights(a.weights)

    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from .data import build_eval_transform
    from .from_config import data_options

    model, names = build_model(pred)
    model = model.to(device)
    k = min(a.topk, len(names))
    cfg = pred.cfg
    print(f"predicting {len(paths)} image(s) with {pred.what} {pred.weights} "
          f"({cfg.MODEL.NAME}, {len(names)} classes) on {device}", file=sys.stderr)
    transform = build_eval_transform(data_options(cfg))
    images = ImageFiles(paths, transform, "L" if cfg.MODEL.IN_CHANS == 1 else "RGB")
    loader = DataLoader(images, batch_size=a.batch_size, shuffle=False, num_workers=a.workers,
                        collate_fn=_as_list)
    records: List[Dict[str, Any]] = []
    skipped = 0
    bar = tqdm(total=len(paths), unit="img", file=sys.stderr, leave=False,
               disable=not sys.stderr.isatty())
    try:
        with torch.inference_mode():
            for batch in loader:
                good = []
                for index, tensor, error in batch:
                    if error is None:
                        good.append((index, tensor))
                    else:
                        skipped += 1
                        tqdm.write(f"skipped {paths[index]}: {error}", file=sys.stderr)
                if good:
                    x = torch.stack([t for _, t in good]).to(device)
                    probs = torch.softmax(model(x).float(), dim=1)
                    top_p, top_i = probs.topk(k, dim=1)
                    for (index, _), ps, ids in zip(good, top_p.tolist(), top_i.tolist()):
                        rec = record(paths[index], [names[i] for i in ids], ps)
                        records.append(rec)
                        if out is None:
                            tqdm.write(table_line(rec, k), file=sys.stdout)
                bar.update(len(batch))
    finally:
        bar.close()
    if out is not None:
        _write_output(out, output_text(records, k, out.suffix.lower()))
        print(f"wrote {len(records)} prediction(s) to {out}", file=sys.stderr)
    if skipped:
        print(f"{skipped} of {len(paths)} image(s) could not be read (skipped)", file=sys.stderr)
        return ExitCode.FAILED
    return ExitCode.OK


def main(argv: Optional[List[str]] = None) -> int:
    """Console entry point; returns the exit status."""
    from .cli import console_main
    try:
        return console_main(lambda args: predict(build_parser().parse_args(args)), argv)
    except BrokenPipeError:  # `resnest-predict ... | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ExitCode.BROKEN_PIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
