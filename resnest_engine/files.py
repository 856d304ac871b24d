"""One crash-safe file writer for everything a run writes (checkpoints, configs, JSON, exports),
and one safe reader for every ``torch.load`` of a file (checkpoints, weights, exports)."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional, Union

from .errors import one_line

__all__ = ["UnsafeLoadError", "atomic_write", "atomic_write_text", "fsync_dir", "load_error_reason",
           "safe_load"]

REFUSED = "it contains pickled objects that are not plain weights (refused)"


class UnsafeLoadError(ValueError):
    """A file :func:`safe_load` cannot read; the message is the one-line reason. Callers re-raise
    it as their own error type, naming the file."""


def fsync_dir(path: Union[str, Path]) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Union[str, Path], write: Callable[[BinaryIO], None],
                 on_written: Optional[Callable[[], None]] = None) -> None:
    """``write(file)`` into a temp file beside ``path``, fsync it, rename it over ``path`` and
    fsync the directory: ``path`` is always either the old file or the complete new one. The
    temp file is removed on any error, which is re-raised (``OSError`` for disk problems)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if on_written is not None:
            on_written()
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Union[str, Path], text: str) -> None:
    """:func:`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def load_error_reason(e: BaseException) -> str:
    """The one-line reason a ``torch.load(weights_only=True)`` failed: a refusal for a file that
    needs unpickling (code, or objects that are not plain weights), else torch's first line."""
    text = str(e)
    if "weights_only" in text or "Weights only load failed" in text or "Unsupported global" in text:
        return REFUSED
    return one_line(e, first_line=True)


def safe_load(path: Union[str, Path], mmap: bool = False) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``: never runs pickled code.

    ``mmap``: map the tensors instead of reading them (only what is used is read), for a
    ``torch.save`` zip file; a legacy (non-zip) file is read whole. Raises
    :class:`UnsafeLoadError` with :func:`load_error_reason` for a file that does not load.
    """
    import torch
    try:
        if mmap and zipfile.is_zipfile(path):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, garbage, or a pickle needing unsafe globals
        raise UnsafeLoadError(load_error_reason(e)) from None
