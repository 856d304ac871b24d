"""Tar shards in the webdataset layout, read map-style: ``DATA.DATASET: shards``.

A shard set (written by ``resnest-shards``, :mod:`resnest_engine.workflows.shards`) is
``ROOT/train/*.tar`` and ``ROOT/val/*.tar``, each split with an ``index.json``: the class names
and, per shard, its file name, sample count, size, SHA-256 and the byte offset and size of every
member. A sample is the members sharing a key (``KEY.png`` or ``KEY.jpg`` holding the original
image file's bytes, ``KEY.cls`` its class index in ASCII), which is what webdataset, timm and
DALI read.

:class:`ShardSplit` reads sample *i* with one ``os.pread`` at the offset the index gives: random
access, so the order and the draws stay those of our own samplers (the default global order over
shards written from an image folder is bitwise the folder's run). Each process opens its own
file handles, lazily, on its first read (DataLoader workers included); ``pread`` keeps no file
position, so the cache's decoding threads share them safely.

A ``root`` that is a URL (``s3://``, ``gs://``, ``http(s)://``, any fsspec protocol) reads the
index through fsspec and the shards from a local :class:`~resnest_engine.data.shard_cache.ShardCache`
that fetches each one whole, verified, ahead of need: in the order the train sampler will read
them when the loader tells the split its sampler (:meth:`ShardSplit.follow`), else in index order.
"""
from __future__ import annotations

import hashlib
import json
import os
import tarfile
import threading
from typing import Any, BinaryIO, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .datasets import IMG_EXTENSIONS, SPLITS, register_dataset
from .encoded_split import EncodedImageSplit
from .errors import DataError
from .options import DataOptions
from .shard_cache import ShardCache, default_cache_dir, is_url, local_path, read_remote_json

__all__ = ["INDEX_FORMAT", "INDEX_NAME", "IMAGE_EXTS", "LABEL_EXTS", "ShardSplit", "group_samples",
           "member_key", "read_index", "scan_tar"]

INDEX_FORMAT = "resnest-engine-shards/1"
INDEX_NAME = "index.json"
#: Member extensions read as the image (webdataset's names; ``jpeg`` files are written as jpg).
IMAGE_EXTS = tuple(e.lstrip(".") for e in IMG_EXTENSIONS)
#: Member extensions read as the label: ``cls`` (an integer), ``txt`` (an integer or class name).
LABEL_EXTS = ("cls", "txt")


def member_key(name: str) -> Tuple[str, str]:
    """``(key, extension)`` of a member name, split as webdataset splits it: at the first dot of
    the base name (``a/b.c.png`` -> ``("a/b", "c.png")``)."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), (ext.lower() if dot else "")


def scan_tar(f: BinaryIO, where: str) -> List[Tuple[str, int, int]]:
    """``[(name, data offset, size)]`` of the regular files of the tar archive ``f``, in archive
    order. ``where`` names the file in the one-line error of a damaged archive."""
    out = []
    try:
        with tarfile.open(fileobj=f, mode="r:") as tar:
            for info in tar:
                if info.isreg():
                    out.append((info.name, int(info.offset_data), int(info.size)))
    except (tarfile.TarError, EOFError) as e:
        raise DataError(f"{where} is not a readable tar archive: {e}") from None
    return out


def group_samples(members: Sequence[Sequence[Any]], where: str
                  ) -> List[Tuple[str, Dict[str, int]]]:
    """The samples of a shard's members ``[name, offset, size]``: ``[(key, {ext: member
    position})]`` in order, members of one sample being consecutive (webdataset's rule). A key
    seen again after another key, or a sample without one image member, is an error."""
    samples: List[Tuple[str, Dict[str, int]]] = []
    seen = set()
    for pos, member in enumerate(members):
        key, ext = member_key(str(member[0]))
        if not samples or samples[-1][0] != key:
            if key in seen:
                raise DataError(f"{where}: the members of sample {key!r} are not consecutive "
                                f"({member[0]} comes after other samples)")
            seen.add(key)
            samples.append((key, {}))
        samples[-1][1][ext] = pos
    for key, exts in samples:
        images = [e for e in exts if e in IMAGE_EXTS]
        if len(images) != 1:
            raise DataError(f"{where}: sample {key!r} has {len(images)} image members "
                            f"(expected one of .{', .'.join(IMAGE_EXTS)}), members: "
                            f"{', '.join(sorted(exts))}")
    return samples


def read_index(split_dir: str) -> dict:
    """The parsed ``index.json`` of one split of a shard set (checked for its format); a URL
    is read through fsspec."""
    if is_url(split_dir):
        path = f"{split_dir.rstrip('/')}/{INDEX_NAME}"
        try:
            index = read_remote_json(path)
        except DataError as e:
            if "FileNotFoundError" in str(e):
                raise DataError(f"{path} not found: {split_dir} is not a complete shard set "
                                f"(write one with resnest-shards and upload it)") from None
            raise
        if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
            raise DataError(f"{path} is not a shard index of format {INDEX_FORMAT}")
        return index
    path = os.path.join(split_dir, INDEX_NAME)
    if not os.path.isdir(split_dir):
        raise DataError(f"missing split folder {split_dir} (a shard set holds train/ and val/, "
                        f"each with *.tar shards and {INDEX_NAME}; write one with resnest-shards)")
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path} not found: {split_dir} is not a complete shard set (write it, "
                        f"or finish an interrupted conversion, with resnest-shards)") from None
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read shard index {path}: {e}") from None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise DataError(f"{path} is not a shard index of format {INDEX_FORMAT}")
    return index


def _image_exts(exts: Iterable[str]) -> str:
    return next(e for e in exts if e in IMAGE_EXTS)


class ShardSplit(EncodedImageSplit):
    """One split of a shard set: sample *i* is ``(PIL image, label)``, decoded exactly as
    :class:`~resnest_engine.data.datasets.ImageFolderSplit` decodes the file the bytes came from.

    Samples are in index order (shard by shard, members in archive order). Every shard's size is
    checked against the index when the split is opened (a truncated shard is an error naming
    it and its first member cut off); a member that does not decode is an error naming the
    shard and the member (or, with ``skip_corrupt``, replaced by the next sample with a warning).
    """

    #: Remote sets: open shard files kept per process (least recently used closed first).
    MAX_OPEN = 64

    def __init__(self, root: str, split: str, in_chans: int = 3,
                 classes: Optional[Sequence[str]] = None, skip_corrupt: bool = False,
                 cache_dir: Optional[str] = None, cache_bytes: int = 0) -> None:
        self.root, self.split = root, split
        remote = is_url(root)
        self.split_dir = f"{root.rstrip('/')}/{split}" if remote else os.path.join(root, split)
        self.mode = "L" if in_chans == 1 else "RGB"
        self.skip_corrupt = skip_corrupt
        self.skipped_at_load = 0
        index = read_index(self.split_dir)
        own = [str(c) for c in index.get("classes") or []]
        if classes is not None and own and list(classes) != own:
            raise DataError(f"{os.path.join(self.split_dir, INDEX_NAME)}: its classes differ from "
                            f"the ones asked for (the train split's or the run's)")
        self.classes = list(classes) if classes is not None else own
        self.shards: List[str] = []
        shard_of, offsets, sizes, names, targets = [], [], [], [], []
        for s, shard in enumerate(index.get("shards") or []):
            members = shard["members"]
            if remote:  # size and SHA-256 are checked when the shard is fetched
                path = f"{self.split_dir}/{shard['name']}"
            else:
                path = os.path.join(self.split_dir, str(shard["name"]))
                self._check_size(path, int(shard["bytes"]), members)
            samples = group_samples(members, path)
            labels = shard.get("labels")
            if labels is None or len(labels) != len(samples):
                raise DataError(f"{os.path.join(self.split_dir, INDEX_NAME)}: shard "
                                f"{shard['name']} lists {len(samples)} samples but "
                                f"{'no' if labels is None else len(labels)} labels")
            self.shards.append(path)
            for (key, exts), label in zip(samples, labels):
                name, offset, size = members[exts[_image_exts(exts)]]
                shard_of.append(s)
                offsets.append(int(offset))
                sizes.append(int(size))
                names.append(str(name))
                targets.append(int(label))
        if not targets:
            raise DataError(f"shard set split {self.split_dir} has no samples")
        bad = [t for t in targets if not 0 <= t < max(len(self.classes), 1)]
        if self.classes and bad:
            raise DataError(f"{os.path.join(self.split_dir, INDEX_NAME)}: label {bad[0]} is out of "
                            f"range for {len(self.classes)} classes")
        if not self.classes:
            self.classes = [str(i) for i in range(max(targets) + 1)]
        self._shard = np.asarray(shard_of, dtype=np.int32)
        self._offset = np.asarray(offsets, dtype=np.int64)
        self._size = np.asarray(sizes, dtype=np.int64)
        self.members = names
        self.targets = targets
        # The shards' names, SHA-256 and sample counts and the classes: the same set local or
        # uploaded anywhere has one fingerprint.
        self._fingerprint = hashlib.sha256(json.dumps(
            [self.classes, [[s.get("name"), s.get("sha256"), len(s.get("labels") or [])]
                            for s in index.get("shards") or []]]).encode()).hexdigest()
        self._fds: Dict[int, int] = {}
        self._pid = os.getpid()
        self.cache: Optional[ShardCache] = None
        if remote:
            where = os.path.join(cache_dir or default_cache_dir(root), split)
            self.cache = ShardCache(self.split_dir, index.get("shards") or [], where, cache_bytes)
        self._lock = threading.Lock()

    def fetch_units(self) -> np.ndarray:
        return self._shard

    @staticmethod
    def _check_size(path: str, expected: int, members: Sequence[Sequence[Any]]) -> None:
        try:
            actual = os.path.getsize(path)
        except OSError as e:
            raise DataError(f"cannot open shard {path}: {os.strerror(e.errno) if e.errno else e}"
                            ) from None
        if actual < expected:
            cut = next((m for m in members if int(m[1]) + int(m[2]) > actual), None)
            what = f"; member {cut[0]} is cut off" if cut is not None else ""
            raise DataError(f"shard {path} is truncated: {actual} bytes, the index says "
                            f"{expected}{what}")

    def __len__(self) -> int:
        return len(self.targets)

    # File handles are per process: a worker gets the dataset pickled, without them.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fds"] = {}
        state["_orders"] = {}
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _fd(self, shard: int) -> int:
        if self._pid != os.getpid():  # forked: the parent's descriptors are not ours to use
            self._fds, self._pid = {}, os.getpid()
            self._lock = threading.Lock()
        if self.cache is not None:
            return self._cached_fd(shard)
        fd = self._fds.get(shard)
        if fd is None:
            try:
                fd = os.open(self.shards[shard], os.O_RDONLY)
            except OSError as e:
                raise DataError(f"cannot open shard {self.shards[shard]}: "
                                f"{os.strerror(e.errno) if e.errno else e}") from None
            fd = self._fds.setdefault(shard, fd)
        return fd

    def _cached_fd(self, shard: int) -> int:
        """A remote set's shard, opened from the cache (called holding ``self._lock``)."""
        cache = self.cache
        fd = self._fds.pop(shard, None)
        if fd is None:
            self._want_in_index_order(shard, len(self.shards))
            if not cache.cached(shard) or len(self._fds) >= self.MAX_OPEN:
                self._close_files()  # a fetch may have to evict: hold no shard of our own open
            fd = cache.open(shard)
        self._fds[shard] = fd  # last = most recently used
        return fd

    def close(self) -> None:
        """Close this process's shard files (they reopen on the next read) and stop fetching
        ahead for it (a later read starts again)."""
        self._close_files()
        if self.cache is not None:
            self.cache.stop()

    def _close_files(self) -> None:
        fds, self._fds = self._fds, {}
        if self._pid == os.getpid():
            for fd in fds.values():
                os.close(fd)

    def read_bytes(self, index: int) -> bytes:
        """The image member's bytes of sample ``index`` (the original file's bytes)."""
        shard, offset, size = int(self._shard[index]), int(self._offset[index]), int(self._size[index])
        if self.cache is not None:  # descriptors come and go: no read may race a close
            with self._lock:
                data = os.pread(self._fd(shard), size, offset)
        else:
            data = os.pread(self._fd(shard), size, offset)
        if len(data) != size:
            raise DataError(f"shard {self.shards[shard]} is truncated: member "
                            f"{self.members[index]} needs bytes {offset}-{offset + size}, the file "
                            f"ends first")
        return data

    def where(self, index: int) -> str:
        return f"member {self.members[index]} of shard {self.shards[int(self._shard[index])]}"

    def block_sizes(self) -> List[int]:
        return np.bincount(self._shard, minlength=len(self.shards)).tolist()

    @property
    def fingerprint(self) -> str:
        return self._fingerprint


@register_dataset("shards")
def _shards(opts: DataOptions, split: str, classes: Optional[Sequence[str]] = None) -> ShardSplit:
    if not opts.root:
        raise DataError("data.dataset=shards needs data.root: the folder or URL of a shard set "
                        "(train/ and val/, each with *.tar shards and index.json)")
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    extra: Dict[str, Any] = {}
    if is_url(opts.root):
        root = str(opts.root)
        extra = dict(cache_dir=os.path.expanduser(opts.cache_dir) if opts.cache_dir else None,
                     cache_bytes=int(opts.shard_cache_gb * 1e9))
    else:
        root = local_path(opts.root)
        if not os.path.isdir(root):
            raise DataError(f"data.root {root} is not a folder")
    return ShardSplit(root, split, in_chans=opts.in_chans, classes=classes,
                      skip_corrupt=opts.skip_corrupt, **extra)
