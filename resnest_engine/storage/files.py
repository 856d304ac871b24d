"""One crash-safe file writer for everything a run writes (checkpoints, configs, JSON, exports),
and one safe reader for every ``torch.load`` of a file (checkpoints, weights, exports)."""
from __future__ import annotations

import errno
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional, Union

import torch

from .checksum import CorruptFileError, sidecar_path, sidecar_text, verify
from ..errors import InputError, MachineFailure, one_line, os_error_message

__all__ = ["UnsafeLoadError", "WriteError", "atomic_write", "atomic_write_text", "fsync_dir",
           "load_error_reason", "safe_load", "write_error", "write_sidecar"]

REFUSED = "it contains pickled objects that are not plain weights (refused)"


class UnsafeLoadError(InputError):
    """A file :func:`safe_load` cannot read; the message is the one-line reason. Callers re-raise
    it as their own error type, naming the file."""


class WriteError(MachineFailure, RuntimeError):
    """A file could not be written (disk full, read-only file system, no permission). The
    message is one line, ``cannot write PATH: <reason>``; every command ends with it and exit
    status 1."""


def _size(n: int) -> str:
    return f"{n / 2 ** 20:.1f} MB" if n >= 2 ** 20 else f"{n / 1024:.1f} kB"


def write_error(path: Union[str, Path], e: OSError, needed: Optional[int] = None) -> WriteError:
    """The :class:`WriteError` of ``e`` when writing ``path``; a full disk also says how much the
    write needed (``needed`` bytes, when known) and how much is free there."""
    reason = os_error_message(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        parts = [f"the file needs about {_size(needed)}"] if needed else []
        try:
            parts.append(f"{_size(shutil.disk_usage(Path(path).parent).free)} free")
        except OSError:
            pass
        if parts:
            reason += f" ({'; '.join(parts)})"
    return WriteError(f"cannot write {path}: {reason}")


class _RecordingFile:
    """A file proxy that remembers the ``OSError`` of a failed write. ``torch.save`` into a file
    object swallows it inside its zip writer and raises ``RuntimeError: [enforce fail at
    inline_container.cc] unexpected pos ...`` instead, which says nothing about the disk."""

    def __init__(self, f: BinaryIO) -> None:
        self._f, self.error = f, None

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def fsync_dir(path: Union[str, Path]) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Union[str, Path], write: Callable[[BinaryIO], None],
                 on_written: Optional[Callable[[], None]] = None,
                 size: Optional[int] = None) -> None:
    """``write(file)`` into a temp file beside ``path``, fsync it, rename it over ``path`` and
    fsync the directory: ``path`` is always either the old file or the complete new one. The
    temp file is removed on any error. A failure of the file system (disk full, read-only, no
    permission), also one a writer swallowed into its own error, raises :class:`WriteError`
    (``size``: the bytes the file needs, for the disk-full message); others are re-raised."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    recorder = None
    try:
        with open(tmp, "wb") as f:
            recorder = _RecordingFile(f)
            write(recorder)
            f.flush()
            os.fsync(f.fileno())
        if on_written is not None:
            on_written()
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        cause = e if isinstance(e, OSError) else getattr(recorder, "error", None)
        if cause is not None:
            raise write_error(path, cause, size) from None
        raise


def atomic_write_text(path: Union[str, Path], text: str) -> None:
    """:func:`atomic_write` of UTF-8 text."""
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data), size=len(data))


def write_sidecar(path: Union[str, Path], checksum: str, kind: str = "tensors") -> None:
    """Write the checksum sidecar of ``path`` (:mod:`resnest_engine.storage.checksum`) atomically;
    ``kind``: ``tensors`` or ``file``."""
    atomic_write_text(sidecar_path(path), sidecar_text(path, checksum, kind))


def load_error_reason(e: BaseException) -> str:
    """The one-line reason a ``torch.load(weights_only=True)`` failed: a refusal for a file that
    needs unpickling (code, or objects that are not plain weights), else torch's first line."""
    text = str(e)
    if "weights_only" in text or "Weights only load failed" in text or "Unsupported global" in text:
        return REFUSED
    return one_line(e, first_line=True)


def safe_load(path: Union[str, Path], mmap: bool = False, verify_checksum: bool = True) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``: never runs pickled code, and
    checks the contents against the checksum written with them (:func:`.checksum.verify`).

    ``mmap``: map the tensors instead of reading them (only what is used is read, except that
    verification reads everything), for a ``torch.save`` zip file; a legacy (non-zip) file is
    read whole. ``verify_checksum=False``: for a look at a file's small parts (its meta) that is
    loaded, and verified, for its weights afterwards. Raises :class:`UnsafeLoadError` with
    :func:`load_error_reason` for a file that does not load, or with the reason it is corrupt.
    """
    try:
        if mmap and zipfile.is_zipfile(path):
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, garbage, or a pickle needing unsafe globals
        raise UnsafeLoadError(load_error_reason(e)) from None
    try:
        if verify_checksum:
            verify(obj, path)
    except CorruptFileError as e:
        raise UnsafeLoadError(str(e)) from None
    return obj
