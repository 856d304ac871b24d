"""One crash-safe file writer for everything a run writes (checkpoints, configs, JSON, exports)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable, Optional, Union

__all__ = ["atomic_write", "atomic_write_text", "fsync_dir"]


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
