"""Checksums of what the library writes, verified whenever a file is loaded.

``torch.save`` stores tensors uncompressed and ``torch.load`` does not check them: a bit flipped
on disk or in transfer loads silently as a different weight. So every file the library writes
carries a checksum of its contents (every tensor's bytes, dtype and shape, and every plain value,
each under its key path):

- a checkpoint (a dict of states) holds it under the key ``"checksum"``;
- a plain state_dict (``model_weights.pt``, exports, averaged weights) must stay loadable as it
  is by timm, the official code and ``torch.load``, so its checksum is in a sidecar file beside
  it, ``NAME.checksum`` (JSON, written by :func:`resnest_engine.handlers.checkpoint.save_weights`); a ``.pt2``
  program's sidecar holds a checksum of the file's bytes.

:func:`verify` (called by :func:`resnest_engine.storage.files.safe_load`, the one reader) raises
:class:`CorruptFileError` on a mismatch. A file without a checksum (official, timm, older
resnest-engine files) loads as before. CRC-32 finds flipped bits and torn writes; it is no
defence against deliberate tampering. Set ``RESNEST_ENGINE_VERIFY_CHECKSUMS=0`` to skip the
verification (it reads every byte of the file; docs/reliability.md has the cost).
"""
from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Tuple, Union

import torch

from ..errors import InputError

__all__ = ["CHECKSUM_KEY", "CorruptFileError", "VERIFY_ENV", "file_checksum", "file_checksum_of",
           "sidecar_path",
           "sidecar_text", "tensor_checksum", "verification_on", "verify", "with_checksum"]

CHECKSUM_KEY = "checksum"
SIDECAR_SUFFIX = ".checksum"
VERIFY_ENV = "RESNEST_ENGINE_VERIFY_CHECKSUMS"
_PLAIN = (bool, int, float, str, type(None))


class CorruptFileError(InputError):
    """A file's contents do not match the checksum written with it."""


def verification_on() -> bool:
    return os.environ.get(VERIFY_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _leaves(obj: Any, path: str = "") -> Iterator[Tuple[str, Any]]:
    if isinstance(obj, torch.Tensor) or isinstance(obj, _PLAIN):
        yield path, obj
    elif isinstance(obj, Mapping):
        for key in sorted(obj, key=repr):
            yield from _leaves(obj[key], f"{path}/{key!r}")
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from _leaves(item, f"{path}[{i}]")
    else:  # an object torch.save pickles (e.g. torch.Size, a dtype): its text
        yield path, repr(obj)


def tensor_checksum(obj: Any) -> str:
    """``crc32:XXXXXXXX`` of ``obj``'s tensors (bytes, dtype, shape) and plain values, each with
    its key path; the same before ``torch.save`` and after ``torch.load``."""
    crc = 0
    for path, value in _leaves(obj):
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            crc = zlib.crc32(f"{path}:{t.dtype}:{tuple(t.shape)}".encode(), crc)
            crc = zlib.crc32(memoryview(t.reshape(-1).view(torch.uint8).numpy()), crc)
        else:
            crc = zlib.crc32(f"{path}={value!r}".encode(), crc)
    return f"crc32:{crc:08x}"


def file_checksum(path: Union[str, Path]) -> str:
    """``crc32:XXXXXXXX`` of a file's bytes (for files whose tensors cannot be read back
    cheaply, such as ``.pt2`` programs)."""
    crc = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            crc = zlib.crc32(block, crc)
    return f"crc32:{crc:08x}"


def file_checksum_of(data: bytes) -> str:
    """:func:`file_checksum` of bytes about to be written."""
    return f"crc32:{zlib.crc32(data):08x}"


def with_checksum(ckpt: Mapping[str, Any]) -> dict:
    """``ckpt`` with its checksum under :data:`CHECKSUM_KEY`."""
    body = {k: v for k, v in ckpt.items() if k != CHECKSUM_KEY}
    return {**body, CHECKSUM_KEY: tensor_checksum(body)}


def sidecar_path(path: Union[str, Path]) -> Path:
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _read_sidecar(path: Union[str, Path]) -> Optional[dict]:
    try:
        data = json.loads(sidecar_path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def sidecar_text(path: Union[str, Path], checksum: str, kind: str = "tensors") -> str:
    """The sidecar of ``path``'s new contents. It keeps the checksum of the file it replaces
    (``previous``): the sidecar is written just before the file is renamed into place, and a
    crash between the two must not make the old, complete file look corrupt."""
    old = _read_sidecar(path) or {}
    return json.dumps({"algorithm": "crc32", kind: checksum,
                       "previous": old.get(kind)}) + "\n"


def verify(obj: Any, path: Union[str, Path]) -> None:
    """Raise :class:`CorruptFileError` when ``obj`` (loaded from ``path``) does not match the
    checksum written with it: its own :data:`CHECKSUM_KEY`, else the sidecar's. Nothing to
    check (no checksum) passes; so does everything when verification is off."""
    if not verification_on():
        return
    if isinstance(obj, Mapping) and isinstance(obj.get(CHECKSUM_KEY), str):
        expected = {obj[CHECKSUM_KEY]}
        actual = tensor_checksum({k: v for k, v in obj.items() if k != CHECKSUM_KEY})
    else:
        side = _read_sidecar(path)
        if side is None or not (side.get("tensors") or side.get("file")):
            return
        kind = "tensors" if side.get("tensors") else "file"
        expected = {side[kind], side.get("previous")} - {None}
        actual = tensor_checksum(obj) if kind == "tensors" else file_checksum(path)
    if actual not in expected:
        raise CorruptFileError(f"it is corrupt: its contents changed after it was written "
                               f"(checksum {actual}, written with {sorted(expected)[0]}; "
                               f"{VERIFY_ENV}=0 loads it anyway)")
