"""``resnest-train``'s run-directory rules: its lock, moving it aside, a finished run, the weights
it holds and where ``--export`` may write (the rules themselves: :mod:`resnest_engine.workflows.run_files`)."""
from __future__ import annotations

import datetime
import os
import shlex
import shutil
from pathlib import Path
from typing import List, Sequence, Tuple

from ..workflows import run_files
from ..errors import InputError
from ..workflows.export import require_onnx
from ..storage.files import atomic_write_text, write_error
from ..handlers.standard import all_epochs_ran
from ..official import is_official_checkpoint
from ..storage.run_lock import RunDirLock, RunDirLockedError
from .console import UsageError

__all__ = ["export_path", "find_run_weights"]


def lock_run_dir(outdir: Path, argv: Sequence[str]):
    """Take ``outdir``'s lock (creating it): a held one is a user error naming the holder."""
    return RunDirLock(outdir, command="resnest-train " + shlex.join(map(str, argv)),
                      label=f"--outdir {outdir}").acquire()


def move_aside(outdir: Path) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = outdir.with_name(f"{outdir.name}.bak-{stamp}")
    n = 1
    while target.exists():
        target = outdir.with_name(f"{outdir.name}.bak-{stamp}-{n}")
        n += 1
    outdir.rename(target)
    return target


def prune_moved_aside(outdir: Path, keep: int) -> List[Path]:
    """Delete all but the ``keep`` newest runs that ``--force`` moved aside from ``outdir``
    (``outdir.name.bak-<timestamp>[-n]`` beside it, oldest first); a run directory another
    process holds (its lock) is left alone. Returns the deleted paths."""
    moved = sorted(outdir.parent.glob(f"{outdir.name}.bak-*"), key=lambda p: p.stat().st_mtime)
    deleted = []
    for old in moved[:max(len(moved) - keep, 0)]:
        if not old.is_dir():
            continue
        try:
            with RunDirLock(old, label=f"run directory {old}"):
                shutil.rmtree(old)
        except RunDirLockedError:
            continue
        deleted.append(old)
    return deleted


def checkpoint_finished(ckpt: dict) -> bool:
    if is_official_checkpoint(ckpt):
        return False  # its run length is the config's; loading it refuses a finished one
    t = ckpt["trainer"]
    return all_epochs_ran(t["iteration"], t.get("max_epochs"), t["epoch_length"])


def find_run_weights(outdir: Path, model_name: str) -> Tuple[Path, str]:
    """:func:`resnest_engine.workflows.run_files.find_run_weights`, its error a :class:`UsageError`."""
    try:
        return run_files.find_run_weights(outdir, model_name)
    except InputError as e:
        raise UsageError(str(e)) from None


def export_path(name: str, outdir: Path, source: Path) -> Path:
    """Where ``--export NAME`` writes: ``NAME.pth`` when NAME has no suffix (as the official
    script does), else NAME. Never a file of the run directory nor the weights being read; a
    ``.onnx`` NAME needs the ``onnx`` extra (checked here, before any output)."""
    if not name or name.endswith(("/", os.sep)) or Path(name).is_dir():
        raise UsageError(f"--export: {name!r} is not a file name")
    out = Path(name)
    if not out.suffix:
        out = out.with_name(out.name + ".pth")
    if not out.parent.is_dir():
        raise UsageError(f"--export: directory not found: {out.parent}")
    run_files.refuse_overwrite(
        out, "--export", outdir, [source],
        run_file=f"is a file of the run directory {outdir}; export somewhere else",
        input_file="is the file being exported; export somewhere else")
    if out.suffix == ".onnx":
        require_onnx()
    return out


def write_text_or_fail(path: Path, text: str) -> None:
    """Write ``path`` so that it is either the old file or the complete new one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    except OSError as e:
        raise write_error(path, e) from None
