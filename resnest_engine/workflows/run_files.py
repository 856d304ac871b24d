"""A training run directory's files: which are the run's (an output never replaces one), and
which weights a run holds (final, best, newest resume point)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

from ..errors import InputError
from ..handlers.checkpoint import BEST_PREFIX, CheckpointError, list_checkpoints, read_checkpoint
from ..storage.run_dir import RunDir

__all__ = ["best_checkpoints", "find_run_weights", "first_loadable",
           "newest_valid_checkpoint", "refuse_overwrite"]



def refuse_overwrite(out: Path, flag: str, run_dir: Optional[Path], inputs: Sequence[Path] = (),
                     *, run_file: str, input_file: str, any_run: bool = False) -> None:
    """Refuse an output path that would replace a run's file or a file being read.

    :class:`InputError` ``"{flag}: {out} {run_file}"`` when ``out`` is one of ``run_dir``'s
    :attr:`RunDir.PROTECTED_FILES` or inside its :attr:`RunDir.PROTECTED_DIRS` (with ``any_run``: also any
    ``model_weights.pt`` or file of a ``checkpoints`` folder, whichever run it belongs to);
    ``"{flag}: {out} {input_file}"`` when it is one of ``inputs``. Paths are compared resolved.
    """
    target = out.resolve()
    if run_dir is not None and RunDir(run_dir).protects(target):
        raise InputError(f"{flag}: {out} {run_file}")
    if any_run and (target.name == RunDir.WEIGHTS or target.parent.name == RunDir.CHECKPOINTS):
        raise InputError(f"{flag}: {out} {run_file}")
    if any(target == p.resolve() for p in inputs):
        raise InputError(f"{flag}: {out} {input_file}")


def first_loadable(paths: Iterable[Path], model_name: str) -> Tuple[Optional[Path], Optional[dict]]:
    """The first of ``paths`` that loads and is for ``model_name``, and its contents (each one
    skipped: a ``warning:`` line on stderr)."""
    for path in paths:
        try:
            ckpt = read_checkpoint(path)
        except CheckpointError as e:
            print(f"warning: skipping {path}: {e}", file=sys.stderr)
            continue
        if ckpt["meta"].get("model") != model_name:
            print(f"warning: skipping {path}: it is for {ckpt['meta'].get('model')}",
                  file=sys.stderr)
            continue
        return path, ckpt
    return None, None


def newest_valid_checkpoint(ckpt_dir: Path, model_name: str
                            ) -> Tuple[Optional[Path], Optional[dict]]:
    """The newest resume point in ``ckpt_dir`` that loads and is for ``model_name``, and its
    contents."""
    return first_loadable(list_checkpoints(ckpt_dir), model_name)


def best_checkpoints(ckpt_dir: Path) -> List[Path]:
    """``best-e{epoch}-top1={score}.pt`` files, highest score first (newest epoch on ties)."""
    def key(p: Path) -> Tuple[float, str]:
        try:
            score = float(p.stem.rsplit("top1=", 1)[1])
        except (IndexError, ValueError):
            score = float("-inf")
        return score, p.stem
    return sorted(ckpt_dir.glob(f"{BEST_PREFIX}*.pt"), key=key, reverse=True)


def find_run_weights(outdir: Path, model_name: str) -> Tuple[Path, str]:
    """The weights of the run in ``outdir`` and what they are: the final weights
    (``model_weights.pt``), else the best checkpoint, else the newest valid resume point;
    :class:`InputError` when there are none."""
    run = RunDir(outdir)
    final = run.weights
    if final.is_file():
        return final, "final weights"
    best, _ = first_loadable(best_checkpoints(run.checkpoints), model_name)
    if best is not None:
        return best, "best checkpoint"
    found, _ = newest_valid_checkpoint(run.checkpoints, model_name)
    if found is not None:
        return found, "newest resume point"
    raise InputError(f"no trained weights in {outdir} (no model_weights.pt, best or resume "
                     "checkpoint); train first or pass --resume PATH")
