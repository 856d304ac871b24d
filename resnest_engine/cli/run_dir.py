"""The run directory's rules: its lock, the weights a finished run holds, where exports may go."""
from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ..official import is_official_checkpoint
from .console import UsageError

__all__ = ["export_path", "find_run_weights"]


def _lock_run_dir(outdir: Path, argv: Sequence[str]):
    """Take ``outdir``'s lock (creating it): a held one is a user error naming the holder."""
    import shlex

    from ..run_lock import RunDirLock
    return RunDirLock(outdir, command="resnest-train " + shlex.join(map(str, argv)),
                      label=f"--outdir {outdir}").acquire()


def _newest_valid_checkpoint(ckpt_dir: Path, model_name: str) -> Tuple[Optional[Path], Optional[dict]]:
    """The newest resume point that loads and is for ``model_name``, and its contents."""
    from ..handlers.checkpoint import list_checkpoints
    return _first_loadable(list_checkpoints(ckpt_dir), model_name)


def _first_loadable(paths, model_name: str) -> Tuple[Optional[Path], Optional[dict]]:
    """The first of ``paths`` that loads and is for ``model_name`` (others: a warning each)."""
    from ..handlers.checkpoint import CheckpointError, read_checkpoint
    for path in paths:
        try:
            ckpt = read_checkpoint(path)
        except CheckpointError as e:
            print(f"warning: skipping {path}: {e}", file=sys.stderr)
            continue
        if ckpt["meta"].get("model") != model_name:
            print(f"warning: skipping {path}: it is for {ckpt['meta'].get('model')}", file=sys.stderr)
            continue
        return path, ckpt
    return None, None


def _move_aside(outdir: Path) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = outdir.with_name(f"{outdir.name}.bak-{stamp}")
    n = 1
    while target.exists():
        target = outdir.with_name(f"{outdir.name}.bak-{stamp}-{n}")
        n += 1
    outdir.rename(target)
    return target


def _finished(ckpt: dict) -> bool:
    if is_official_checkpoint(ckpt):
        return False  # its run length is the config's; loading it refuses a finished one
    t = ckpt["trainer"]
    return t.get("max_epochs") is not None and t["iteration"] >= t["max_epochs"] * t["epoch_length"]


# Files of a run directory that --export must never replace (checkpoints/ and tb/ as a whole too).
_RUN_FILES = ("model_weights.pt", "metrics.json", "eval_metrics.json", "config.yaml", "log.txt",
              "classes.json")


_RUN_DIRS = ("checkpoints", "tb")


def _best_checkpoints(ckpt_dir: Path) -> List[Path]:
    """``best-e{epoch}-top1={score}.pt`` files, highest score first (newest epoch on ties)."""
    from ..handlers.checkpoint import BEST_PREFIX

    def key(p: Path) -> Tuple[float, str]:
        try:
            score = float(p.stem.rsplit("top1=", 1)[1])
        except (IndexError, ValueError):
            score = float("-inf")
        return score, p.stem
    return sorted(ckpt_dir.glob(f"{BEST_PREFIX}*.pt"), key=key, reverse=True)


def find_run_weights(outdir: Path, model_name: str) -> Tuple[Path, str]:
    """The weights of the run in ``outdir`` and what they are: the final weights
    (``model_weights.pt``), else the best checkpoint, else the newest valid resume point."""
    final = outdir / "model_weights.pt"
    if final.is_file():
        return final, "final weights"
    best, _ = _first_loadable(_best_checkpoints(outdir / "checkpoints"), model_name)
    if best is not None:
        return best, "best checkpoint"
    found, _ = _newest_valid_checkpoint(outdir / "checkpoints", model_name)
    if found is not None:
        return found, "newest resume point"
    raise UsageError(f"no trained weights in {outdir} (no model_weights.pt, best or resume "
                     "checkpoint); train first or pass --resume PATH")


def export_path(name: str, outdir: Path, source: Path) -> Path:
    """Where ``--export NAME`` writes: ``NAME.pth`` when NAME has no suffix (as the official
    script does), else NAME. Never a file of the run directory nor the weights being read."""
    if not name or name.endswith(("/", os.sep)) or Path(name).is_dir():
        raise UsageError(f"--export: {name!r} is not a file name")
    out = Path(name)
    if not out.suffix:
        out = out.with_name(out.name + ".pth")
    if not out.parent.is_dir():
        raise UsageError(f"--export: directory not found: {out.parent}")
    target, run = out.resolve(), outdir.resolve()
    if (target in [run / f for f in _RUN_FILES]
            or any(target.is_relative_to(run / d) for d in _RUN_DIRS)):
        raise UsageError(f"--export: {out} is a file of the run directory {outdir}; "
                         "export somewhere else")
    if target == source.resolve():
        raise UsageError(f"--export: {out} is the file being exported; export somewhere else")
    return out


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` so that it is either the old file or the complete new one."""
    from ..files import atomic_write_text
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise UsageError(f"cannot write {path}: {reason}") from None
