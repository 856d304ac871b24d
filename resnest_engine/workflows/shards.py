"""``resnest-shards``: an image folder (``SRC/train/<class>/*``, ``SRC/val/<class>/*``) as tar
shards in the webdataset layout, and the index that ``DATA.DATASET: shards`` reads.

:func:`write_shards` writes ``OUT/<split>/shard-NNNNNN.tar`` (``--shard-size`` samples each, in
the order the image-folder dataset lists them, so sample *i* of the shards is sample *i* of the
folder) with members ``KEY.<ext>`` (the image file's original bytes; ``.jpeg`` is named ``.jpg``)
and ``KEY.cls`` (the class index in ASCII); ``KEY`` is the sample index, zero-padded. The tar
headers are fixed (mtime 0, uid/gid 0, mode 0444), so the same folder always gives the same bytes.
Each shard goes to a temp name, is fsynced and renamed; ``OUT/<split>/index.json`` is written last.
A rerun after a killed conversion keeps every complete shard whose SHA-256 is the one it would
write and continues after them; a shard that differs (another set, or a changed source) is
refused, as is an index written from other data or a file that is not one of ours.

:func:`index_shards` writes the index of shards written by others (webdataset's ``ShardWriter``:
members grouped by key, the label in ``.cls`` or ``.txt``).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sys
import tarfile
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from tqdm import tqdm

from ..data.datasets import ImageFolderSplit
from ..data.errors import DataError
from ..data.shards import INDEX_FORMAT, INDEX_NAME, group_samples, scan_tar
from ..storage.files import atomic_write, atomic_write_text

__all__ = ["DEFAULT_SHARD_SIZE", "index_shards", "read_classes", "write_shards"]

DEFAULT_SHARD_SIZE = 1000
_SHARD = re.compile(r"^shard-(\d{6,})\.tar$")
_OUR_TEMP = re.compile(r"^\.(shard-\d{6,}\.tar|index\.json)\.tmp-\d+$")


def _shard_name(k: int) -> str:
    return f"shard-{k:06d}.tar"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _member(name: str, data: bytes) -> Tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info, io.BytesIO(data)


def _image_ext(path: str) -> str:
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    return "jpg" if ext == "jpeg" else ext


def _shard_bytes(samples: Sequence[Tuple[str, str, int]], first: int, width: int) -> bytes:
    """The tar archive of ``samples`` ``[(path, ext, label)]``, keys numbered from ``first``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for i, (path, ext, label) in enumerate(samples):
            key = f"{first + i:0{width}d}"
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise DataError(f"cannot read image file {path}: "
                                f"{os.strerror(e.errno) if e.errno else e}") from None
            tar.addfile(*_member(f"{key}.{ext}", data))
            tar.addfile(*_member(f"{key}.cls", str(label).encode("ascii")))
    return buf.getvalue()


def _shard_entry(name: str, data_or_file, labels: List[int], size: int, sha: str) -> dict:
    members = scan_tar(data_or_file, name)
    return {"name": name, "samples": len(labels), "bytes": size, "sha256": sha,
            "labels": labels, "members": [list(m) for m in members]}


def _fingerprint(split: ImageFolderSplit, root: str, shard_size: int) -> str:
    """What the split's shards are made from: every file (path under SRC, size, label), the
    classes and the shard size."""
    h = hashlib.sha256()
    h.update(json.dumps({"classes": split.classes, "shard_size": shard_size}).encode())
    for path, label in split.samples:
        h.update(json.dumps([os.path.relpath(path, root), os.path.getsize(path), label]).encode())
    return "sha256:" + h.hexdigest()


def _check_out(split_dir: Path, planned: int) -> None:
    """Refuse a split folder holding files that are not this conversion's; remove the temp files
    a killed conversion left."""
    for entry in os.scandir(split_dir):
        m = _SHARD.match(entry.name)
        if entry.name == INDEX_NAME or (m and int(m.group(1)) < planned):
            continue
        if _OUR_TEMP.match(entry.name):
            os.unlink(entry.path)
            continue
        raise DataError(f"{split_dir} holds {entry.name}, which this conversion would not write: "
                        f"it holds another shard set or other files (refused); choose an empty "
                        f"or new OUT")


def _convert_split(split: ImageFolderSplit, src: Path, split_dir: Path, shard_size: int,
                   progress: bool, note: Callable[[str], None]) -> dict:
    n = len(split.samples)
    planned = -(-n // shard_size)
    fingerprint = _fingerprint(split, str(src), shard_size)
    split_dir.mkdir(parents=True, exist_ok=True)
    index_path = split_dir / INDEX_NAME
    if index_path.exists():
        try:
            old = json.loads(index_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if not isinstance(old, dict) or old.get("source") != fingerprint:
            raise DataError(f"{split_dir} holds another shard set ({INDEX_NAME} was not written "
                            f"from {src / split.split} with --shard-size {shard_size}) (refused); "
                            f"choose an empty or new OUT")
        complete = all((split_dir / s["name"]).is_file()
                       and (split_dir / s["name"]).stat().st_size == s["bytes"]
                       for s in old.get("shards", []))
        if complete:
            note(f"{split_dir}: up to date ({n} samples in {planned} shards)")
            return old
    _check_out(split_dir, planned)
    width = max(8, len(str(max(n - 1, 0))))
    shards, kept = [], 0
    ext = [_image_ext(p) for p, _ in split.samples]
    bar = tqdm(total=n, unit="img", desc=f"{split.split}", file=sys.stderr, disable=not progress,
               leave=False)
    try:
        for k in range(planned):
            lo, hi = k * shard_size, min(n, (k + 1) * shard_size)
            chunk = [(p, ext[i], label) for i, (p, label) in enumerate(split.samples[lo:hi], lo)]
            data = _shard_bytes(chunk, lo, width)
            sha = hashlib.sha256(data).hexdigest()
            name = _shard_name(k)
            path = split_dir / name
            if path.exists():
                if _sha256_file(path) != sha:
                    raise DataError(f"{path} is not the shard this conversion writes (its SHA-256 "
                                    f"differs: another set, or {src} changed since) (refused); "
                                    f"delete {split_dir} to convert again")
                kept += 1
            else:
                atomic_write(path, lambda f: f.write(data), size=len(data))
            shards.append(_shard_entry(name, io.BytesIO(data), [lb for _, _, lb in chunk],
                                       len(data), sha))
            bar.update(hi - lo)
    finally:
        bar.close()
    index = {"format": INDEX_FORMAT, "split": split.split, "classes": list(split.classes),
             "samples": n, "shard_size": shard_size, "source": fingerprint, "shards": shards}
    atomic_write_text(index_path, json.dumps(index, separators=(",", ":")) + "\n")
    note(f"{split_dir}: {n} samples in {planned} shards"
         + (f" ({kept} kept from an earlier run)" if kept else ""))
    return index


def write_shards(src: str, out: str, shard_size: int = DEFAULT_SHARD_SIZE, progress: bool = True,
                 note: Optional[Callable[[str], None]] = None) -> dict:
    """Convert the image folder ``src`` (``train/`` and ``val/``) into one shard set per split
    under ``out``; returns ``{split: index}``. Raises ``DataError`` (one line) for a missing
    split, a folder that is not an image folder, or an ``out`` holding another set.

    Args:
        src: the image folder: ``SRC/train/<class>/*`` and ``SRC/val/<class>/*``.
        out: the shard set's root; ``OUT/train`` and ``OUT/val`` are written.
        shard_size: samples per shard (the last shard of a split may hold fewer).
        progress: show a tqdm bar on stderr.
        note: called with one line per split when it is done (default: nothing).
    """
    note = note or (lambda line: None)
    if not isinstance(shard_size, int) or shard_size < 1:
        raise DataError(f"--shard-size must be a positive integer, got {shard_size!r}")
    src_path, out_path = Path(src).expanduser(), Path(out).expanduser()
    if not src_path.is_dir():
        raise DataError(f"SRC {src_path} is not a folder")
    if out_path.resolve() == src_path.resolve() or src_path.resolve() in out_path.resolve().parents:
        raise DataError(f"OUT {out_path} is inside SRC {src_path}; choose a folder outside it")
    for split in ("train", "val"):
        if not (src_path / split).is_dir():
            raise DataError(f"missing split folder {src_path / split} (SRC must be an image folder "
                            f"with train/<class>/* and val/<class>/*)")
    train = ImageFolderSplit(str(src_path), "train")
    val = ImageFolderSplit(str(src_path), "val", classes=train.classes)
    return {s.split: _convert_split(s, src_path, out_path / s.split, shard_size, progress, note)
            for s in (train, val)}


def read_classes(path: str) -> List[str]:
    """Class names, one per line (blank lines skipped), from the file ``path``."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"cannot read --classes {path}: {os.strerror(e.errno) if e.errno else e}"
                        ) from None
    names = [ln.strip() for ln in lines if ln.strip()]
    if not names:
        raise DataError(f"--classes {path} lists no class names")
    return names


def _label(text: bytes, where: str, classes: Optional[Sequence[str]]) -> int:
    value = text.decode("utf-8", errors="replace").strip()
    try:
        return int(value)
    except ValueError:
        pass
    if classes is not None and value in classes:
        return list(classes).index(value)
    raise DataError(f"{where}: label {value[:40]!r} is neither a class index nor a class name"
                    + ("" if classes is not None else " (give the names with --classes)"))


def index_shards(shard_dir: str, classes: Optional[Sequence[str]] = None,
                 progress: bool = True) -> dict:
    """Write ``SHARD_DIR/index.json`` for the ``*.tar`` shards there, written by others in
    webdataset's layout (members grouped by key; one image member and a ``.cls`` or ``.txt``
    label per sample); returns the index. Shards are taken in file-name order.

    Args:
        shard_dir: the folder of one split's ``*.tar`` shards.
        classes: the class names in label order; default ``"0"`` .. ``"K-1"``.
        progress: show a tqdm bar on stderr.
    """
    folder = Path(shard_dir).expanduser()
    if not folder.is_dir():
        raise DataError(f"--index-only {folder} is not a folder")
    names = sorted(p.name for p in folder.glob("*.tar"))
    if not names:
        raise DataError(f"--index-only {folder} holds no *.tar shards")
    shards, top = [], -1
    for name in tqdm(names, unit="shard", file=sys.stderr, disable=not progress, leave=False):
        path = folder / name
        with open(path, "rb") as f:
            members = scan_tar(f, str(path))
            labels = []
            for key, exts in group_samples(members, str(path)):
                label_ext = next((e for e in ("cls", "txt") if e in exts), None)
                if label_ext is None:
                    raise DataError(f"{path}: sample {key!r} has no .cls or .txt label member")
                mname, offset, size = members[exts[label_ext]]
                labels.append(_label(os.pread(f.fileno(), size, offset),
                                     f"{path}: member {mname}", classes))
        top = max([top] + labels)
        shards.append({"name": name, "samples": len(labels), "bytes": path.stat().st_size,
                       "sha256": _sha256_file(path), "labels": labels,
                       "members": [list(m) for m in members]})
    names_out = list(classes) if classes is not None else [str(i) for i in range(top + 1)]
    if top >= len(names_out):
        raise DataError(f"{folder}: label {top} is out of range for the {len(names_out)} names "
                        f"of --classes")
    index = {"format": INDEX_FORMAT, "split": folder.name, "classes": names_out,
             "samples": sum(s["samples"] for s in shards), "shard_size": None, "source": None,
             "shards": shards}
    atomic_write_text(folder / INDEX_NAME, json.dumps(index, separators=(",", ":")) + "\n")
    return index

