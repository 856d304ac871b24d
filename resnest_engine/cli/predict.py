"""``resnest-predict``: a trained run's top-k classes for image files or folders (the command
line of :func:`resnest_engine.workflows.predict.predict`).

    resnest-predict --weights RUN_DIR_OR_FILE IMAGE_OR_FOLDER... [--topk 5]
                    [--output preds.csv|preds.json] [--batch-size 32] [--device cpu|cuda|cuda:1]

``--weights MODEL.onnx`` (an export of ``resnest-train --export MODEL.onnx``) runs the file with
ONNX Runtime on the CPU, with the preprocessing and class names stored in it (no config needed).

Exit status: 0 when every image was predicted; 1 when some could not be read (each one is
reported on stderr as ``skipped PATH: reason``; the others are still predicted and written);
2 for a user error (bad flags, no images found, missing or unusable weights): one ``error:``
line; 1 when the output cannot be written; 130 when interrupted; 141 when stdout is closed early (``| head``).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tqdm import tqdm

from .exit_codes import ExitCode
from ..workflows.predict import predict
from .console import console_main

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="resnest-predict",
        description="Top-k classes of images with a trained resnest-engine run.",
        epilog="Exit status: 0 all images predicted, 1 some images could not be read (skipped, "
               "each named on stderr), 2 usage error.")
    p.add_argument("--weights", required=True, metavar="RUN_DIR_OR_FILE",
                   help="a training run directory, a resnest-engine checkpoint, a weights "
                   "file whose folder holds the run's config.yaml (and classes.json), or a "
                   "MODEL.onnx export (resnest-train --export; run with ONNX Runtime on the CPU, "
                   "its preprocessing and class names read from the file; needs pip install "
                   "'resnest-engine[onnx]')")
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


def _table_line(rec: Dict[str, Any]) -> str:
    """``path  label_1 (p_1) label_2 (p_2) ...``"""
    k = sum(1 for key in rec if key.startswith("label_"))
    pairs = " ".join(f"{rec[f'label_{i}']} ({rec[f'prob_{i}']:.4f})" for i in range(1, k + 1))
    return f"{rec['path']}  {pairs}"


def _note(line: str) -> None:
    print(line, file=sys.stderr)


def run(argv: Sequence[str]) -> int:
    """``resnest-predict ARGV``: the exit status (a user error raises)."""
    a = build_parser().parse_args(argv)
    table = a.output is None

    def on_batch(records: List[Dict[str, Any]], skipped: List[Tuple[str, str]]) -> None:
        for path, reason in skipped:
            tqdm.write(f"skipped {path}: {reason}", file=sys.stderr)
        if table:
            for rec in records:
                tqdm.write(_table_line(rec), file=sys.stdout)

    result = predict(a.weights, a.inputs, topk=a.topk, batch_size=a.batch_size, device=a.device,
                     workers=a.workers, output=a.output, progress=sys.stderr.isatty(),
                     on_batch=on_batch, note=_note)
    if result.skipped:
        total = len(result.records) + len(result.skipped)
        print(f"{len(result.skipped)} of {total} image(s) could not be read (skipped)",
              file=sys.stderr)
        return ExitCode.FAILED
    return ExitCode.OK


def main(argv: Optional[List[str]] = None) -> int:
    """Console entry point (``resnest-predict``); returns the exit status."""
    try:
        return console_main(run, argv)
    except BrokenPipeError:  # `resnest-predict ... | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ExitCode.BROKEN_PIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
