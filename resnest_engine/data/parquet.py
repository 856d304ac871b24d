"""Parquet files of encoded images, read map-style: ``DATA.DATASET: parquet``.

A split is one or more Parquet files with a column of image-file bytes and a column of class
indices; the defaults are the Hugging Face Hub's image datasets (``image``, a struct
``{bytes, path}``, and ``label``, an integer ClassLabel), and ``DATA.PARQUET_IMAGE_COLUMN`` /
``DATA.PARQUET_LABEL_COLUMN`` name others. Under ``DATA.ROOT`` a split is ``<split>/*.parquet``
or, as the Hub names its files, ``data/train-*.parquet`` and ``data/validation-*.parquet``.

:class:`ParquetSplit` indexes the files when opened, from their footers (row-group row counts,
schema, the Hub's metadata) plus the label column, and reads sample *i* by reading the image
column of its row group, keeping the last row group read per process. Each process opens its
own pyarrow files, lazily, on its first read (DataLoader workers included; nothing open is
pickled). The bytes are decoded exactly as :class:`~.datasets.ImageFolderSplit` decodes a file,
so a Parquet split written from an image folder in its order gives the folder's samples.

A ``DATA.ROOT`` that is a URL (``s3://``, ``gs://``, any fsspec protocol) is listed with fsspec's
glob, with the same two layouts. An ``http(s)://`` server cannot list: its root holds
``files.txt`` (:data:`MANIFEST_NAME`), the Parquet files' paths relative to the root, one a line.
Opening the split reads only the footers and the label column, by range requests through
fsspec; the image bytes are read from whole files fetched into the shard cache
(:class:`~resnest_engine.data.shard_cache.ShardCache`: ``DATA.CACHE_DIR``,
``DATA.SHARD_CACHE_GB``, retries, per-file locks, fetching ahead), not by range requests: a
global order reads a row group per sample, so range reads would fetch about a row group of
image bytes for every sample, every epoch, with a request's latency each, where the cache
fetches each file once (and a later run on the same files none) and reads it at local-disk
speed. There is no index with SHA-256s for Parquet files, so a fetched file is checked by its
size, and its cached name carries its ETag (or modification time) from the listing, so a
changed file is fetched again.
"""
from __future__ import annotations

import fnmatch
import glob
import hashlib
import json
import os
import threading
from collections import OrderedDict
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from .datasets import SPLITS, register_dataset
from .encoded_split import EncodedImageSplit
from .errors import DataError
from .options import DataOptions
from .shard_cache import (BACKOFF_S, RETRIES, ShardCache, _filesystem, _retrying,
                          default_cache_dir, is_url, local_path)

__all__ = ["HUB_SPLIT_NAMES", "MANIFEST_NAME", "ParquetSplit", "hub_class_names",
           "remote_split_files", "split_files"]

#: The file-name prefixes of each split in the Hub's ``data/`` folder.
HUB_SPLIT_NAMES = {"train": ("train",), "val": ("validation", "val")}
#: Under an http(s) root (a server cannot list a folder): the Parquet files' paths relative to
#: the root, one a line (``data/train-00000-of-00004.parquet``, ...).
MANIFEST_NAME = "files.txt"


def _pa():
    # Lazy on purpose: pyarrow is an optional dependency (the parquet extra).
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("data.dataset=parquet needs pyarrow: pip install "
                        "'resnest-engine[parquet]'") from None
    return pa, pq


def split_files(root: str, split: str) -> List[str]:
    """The Parquet files of ``split`` under ``root``, sorted by name: ``root/<split>/*.parquet``,
    else the Hub's ``root/data/<name>-*.parquet`` (``train``; ``validation`` or ``val``)."""
    own = os.path.join(root, split)
    if os.path.isdir(own):
        files = sorted(glob.glob(os.path.join(glob.escape(own), "*.parquet")))
        if not files:
            raise DataError(f"split folder {own} holds no *.parquet files")
        return files
    hub = os.path.join(root, "data")
    for name in HUB_SPLIT_NAMES[split]:
        files = sorted(glob.glob(os.path.join(glob.escape(hub), f"{name}-*.parquet")))
        if files:
            return files
    hub_names = " or ".join(f"data/{n}-*.parquet" for n in HUB_SPLIT_NAMES[split])
    raise DataError(f"no Parquet files for the {split} split under {root} (looked for "
                    f"{split}/*.parquet and {hub_names})")


def _looked_for(split: str) -> str:
    hub_names = " or ".join(f"data/{n}-*.parquet" for n in HUB_SPLIT_NAMES[split])
    return f"{split}/*.parquet and {hub_names}"


def _pick_split(names: Sequence[str], split: str) -> List[str]:
    """Of ``names`` (paths relative to a root, ``/``-separated), the split's files by the two
    layouts' patterns, sorted: ``<split>/*.parquet``, else ``data/<name>-*.parquet``."""
    patterns = [f"{split}/*.parquet"] + [f"data/{n}-*.parquet" for n in HUB_SPLIT_NAMES[split]]
    for pattern in patterns:
        files = sorted(n for n in names if n.count("/") == 1 and fnmatch.fnmatchcase(n, pattern))
        if files:
            return files
    return []


def _tag(url: str, info: dict) -> str:
    """16 hex digits naming a remote file's cached copy: its URL, size and version (ETag, else
    the modification time), so that a changed file is fetched again."""
    version = next((str(info[k]) for k in ("ETag", "etag", "md5Hash", "generation",
                                           "LastModified", "last_modified", "mtime", "updated")
                    if info.get(k) is not None), "")
    return hashlib.sha256(f"{url}\n{info.get('size')}\n{version}".encode()).hexdigest()[:16]


def _glob(fs: Any, pattern: str) -> dict:
    """fsspec's glob with details; a missing bucket is nothing found (s3fs raises for some
    patterns, returns nothing for others): the caller says which root is missing."""
    try:
        return fs.glob(pattern, detail=True)
    except FileNotFoundError:
        return {}


def remote_split_files(root: str, split: str) -> List[Tuple[str, dict]]:
    """``[(URL, fsspec info)]`` of the Parquet files of ``split`` under the URL ``root``, sorted
    by name, by the layouts :func:`split_files` takes: listed with fsspec's glob, or, under an
    http(s) root, from the root's ``files.txt``. Every error is one line naming the URL."""
    root = str(root).rstrip("/")
    fs, base = _filesystem(root)
    base = base.rstrip("/")
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    listed: dict = {}
    if {"http", "https"} & set(protocols):
        manifest = f"{root}/{MANIFEST_NAME}"
        try:
            text = _retrying(manifest, "read", lambda: fs.cat_file(manifest), RETRIES, BACKOFF_S)
        except DataError as e:
            if "FileNotFoundError" not in str(e):
                raise
            raise DataError(f"data.root {root}: an http(s) server cannot list its files, so the "
                            f"root needs {MANIFEST_NAME} naming the Parquet files, one path "
                            f"relative to the root a line (e.g. data/train-00000-of-00001.parquet)"
                            f"; {manifest} is not found") from None
        names = [ln.strip().lstrip("/") for ln in text.decode("utf-8", "replace").splitlines()
                 if ln.strip() and not ln.lstrip().startswith("#")]
        for name in _pick_split(names, split):
            url = f"{root}/{name}"
            listed[name] = _retrying(url, "read", lambda: fs.info(url), RETRIES, BACKOFF_S)
        if not listed:
            raise DataError(f"{manifest} names no Parquet files for the {split} split (looked "
                            f"for {_looked_for(split)})")
    else:
        for pattern in [f"{split}/*.parquet"] + [f"data/{n}-*.parquet"
                                                  for n in HUB_SPLIT_NAMES[split]]:
            found = _retrying(f"{root}/{pattern}", "list",
                              lambda: _glob(fs, f"{base}/{pattern}"), RETRIES, BACKOFF_S)
            listed = {path[len(base) + 1:]: info for path, info in found.items()
                      if info.get("type", "file") == "file"}
            if listed:
                break
        if not listed:
            if not _retrying(root, "list", lambda: fs.exists(base), RETRIES, BACKOFF_S):
                raise DataError(f"data.root {root} is not found (no such bucket, prefix or "
                                f"folder)")
            raise DataError(f"no Parquet files for the {split} split under {root} (looked for "
                            f"{_looked_for(split)})")
    folders = {name.rsplit("/", 1)[0] for name in listed}
    assert len(folders) == 1, folders  # the patterns take one folder's files
    return [(f"{root}/{name}", listed[name]) for name in sorted(listed)]


def hub_class_names(metadata: Optional[dict], column: str) -> Optional[List[str]]:
    """The ClassLabel names of ``column`` in a Parquet schema's ``huggingface`` metadata (as the
    Hub's ``datasets`` writes it), or None when there are none."""
    raw = (metadata or {}).get(b"huggingface")
    if not raw:
        return None
    try:
        features = json.loads(raw)["info"]["features"]
        feature = features[column]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(feature, dict) or feature.get("_type") != "ClassLabel":
        return None
    names = feature.get("names")
    return [str(n) for n in names] if isinstance(names, list) and names else None


class ParquetSplit(EncodedImageSplit):
    """One split stored as Parquet files: sample *i* is ``(PIL image, label)``, rows in file
    order (files sorted by name), decoded exactly as
    :class:`~resnest_engine.data.datasets.ImageFolderSplit` decodes the bytes' file.

    Class names are the ClassLabel names of the label column in the files' ``huggingface``
    schema metadata when present (every file that has them must agree), else ``0`` .. ``K-1``
    (``K`` = the largest label + 1); ``classes`` (the train split's, or a run's) replaces them and
    must agree with the metadata's. A missing column, a column of the wrong type, an unreadable
    file, a null or out-of-range label is a one-line ``DataError`` naming the file and column; an
    image that does not decode names the file and row (with ``skip_corrupt``: a warning, and the
    next sample is used instead).

    ``filesystem`` (an fsspec filesystem, e.g. ``fsspec.filesystem("file")``) opens the paths;
    default: the local file system through pyarrow. ``cache`` (remote files, with
    ``filesystem``): a :class:`~resnest_engine.data.shard_cache.ShardCache` whose entry *k* is
    file *k*; the split is indexed through ``filesystem`` (footers and the label column only,
    or the cached copy when there is one) and the image bytes are read from the cached files.
    """

    #: Row groups whose image column each process keeps (least recently used dropped first),
    #: at least: twice DATA.SHUFFLE_WINDOW's default, so the window order reads a row group about
    #: once. Following a sampler with a larger window raises it to two windows (:meth:`follow`).
    KEEP_ROW_GROUPS = 8
    #: ... and at most this many bytes of them per process (one row group is always kept): a
    #: file written with pyarrow's default row groups (up to 1 Mi rows) can have GB-sized ones.
    KEEP_BYTES = 1 << 30
    keep_row_groups = 0

    def __init__(self, files: Sequence[str], image_column: str = "image",
                 label_column: str = "label", in_chans: int = 3,
                 classes: Optional[Sequence[str]] = None, skip_corrupt: bool = False,
                 filesystem: Any = None, cache: Optional[ShardCache] = None) -> None:
        pa, _ = _pa()
        if not files:
            raise DataError("a Parquet split needs at least one file")
        self.files = [str(f) for f in files]
        self.image_column, self.label_column = image_column, label_column
        self.mode = "L" if in_chans == 1 else "RGB"
        self.skip_corrupt = skip_corrupt
        self.skipped_at_load = 0
        self.filesystem = filesystem
        self.cache = cache
        if cache is not None and len(cache.names) != len(self.files):
            raise ValueError("the cache needs one entry per file")
        group_file, group_index, group_rows, self._bytes_field = [], [], [], {}
        labels, names, shape = [], None, []
        for f, path in enumerate(self.files):
            pf = None
            if cache is not None and cache.cached(f):
                try:  # the cached copy's footer, unless another process evicts it meanwhile
                    pf = self._open(cache.local(f), path)
                except DataError:
                    if cache.cached(f):
                        raise
            if pf is None:
                pf = self._open(path, path)
            try:
                schema = pf.schema_arrow
                self._bytes_field[f] = self._check_image_type(schema, path)
                self._check_label_type(schema, path)
                md = pf.metadata
                for g in range(md.num_row_groups):
                    group_file.append(f)
                    group_index.append(g)
                    group_rows.append(md.row_group(g).num_rows)
                    shape.append([os.path.basename(path), md.row_group(g).num_rows,
                                  md.row_group(g).total_byte_size])
                own = hub_class_names(schema.metadata, label_column)
                if own is not None:
                    if names is not None and own != names:
                        raise DataError(f"{path}: its class names (huggingface metadata of column "
                                        f"{label_column!r}) differ from {self.files[0]}'s")
                    names = own
                column = self._read(lambda: pf.read(columns=[label_column]), path,
                                    label_column).column(0)
            finally:
                self._close_one(pf)
            if column.null_count:
                raise DataError(f"{path}: column {label_column!r} holds {column.null_count} null "
                                f"label(s)")
            labels.append(column.to_numpy().astype(np.int64, copy=False))
        targets = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        if not len(targets):
            raise DataError(f"Parquet split {self.files[0]}{' ...' if len(files) > 1 else ''} "
                            f"has no rows")
        if classes is not None and names is not None and list(classes) != names:
            raise DataError(f"{self.files[0]}: its class names (huggingface metadata of column "
                            f"{label_column!r}) differ from the ones asked for (the train "
                            f"split's or the run's)")
        if classes is not None:
            names = [str(c) for c in classes]
        low, high = int(targets.min()), int(targets.max())
        if low < 0 or (names is not None and high >= len(names)):
            bad = low if low < 0 else high
            ends = np.cumsum([len(a) for a in labels])
            where = self.files[int(np.searchsorted(ends, int(np.argmax(targets == bad)), "right"))]
            what = (f"out of range for {len(names)} classes" if bad >= 0 else
                    "(labels are class indices from 0)")
            raise DataError(f"{where}: column {label_column!r} holds label {bad}, {what}")
        self.classes = names if names is not None else [str(i) for i in range(high + 1)]
        self.targets = targets.tolist()
        self._group_file = np.asarray(group_file, dtype=np.int32)
        self._group_index = np.asarray(group_index, dtype=np.int32)
        self._group_start = np.concatenate([[0], np.cumsum(group_rows, dtype=np.int64)])
        # Parquet holds no checksum of its own: the file names, each row group's row count and
        # byte size, the labels and the classes stand for the content.
        digest = hashlib.sha256(json.dumps([self.classes, shape]).encode())
        digest.update(targets.astype("<i8").tobytes())
        self._fingerprint = digest.hexdigest()
        if cache is not None:
            self.filesystem = None  # the image bytes come from the cache's local files
        self._init_process_state()

    # ------------------------------------------------------------------ opening and checks
    def _open(self, path: str, name: Optional[str] = None) -> Any:
        """``path`` as a ``pyarrow.parquet.ParquetFile`` (``name``: the file in messages)."""
        _, pq = _pa()
        if name is None:
            name = path
        try:
            if self.filesystem is not None and path == name:
                return pq.ParquetFile(self.filesystem.open(path, "rb"))
            return pq.ParquetFile(path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise DataError(f"cannot read Parquet file {name}: {type(e).__name__}: "
                            f"{_one_line(e)}") from None

    def _open_cached(self, f: int) -> Any:
        """Remote file ``f`` from the cache, fetched first when it is not there (called holding
        ``self._lock``). The descriptor holds the cache's shared lock, so the file is not evicted
        while this process has it open."""
        cache = self.cache
        if not cache.cached(f):
            self._close_files()  # a fetch may have to evict: hold no file of our own open
            self._want_in_index_order(f, len(self.files))
        handle = os.fdopen(cache.open(f), "rb")
        self._handles[f] = handle
        _, pq = _pa()
        try:
            return pq.ParquetFile(handle)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise DataError(f"cannot read Parquet file {self.files[f]} (cached as "
                            f"{cache.local(f)}): {type(e).__name__}: {_one_line(e)}") from None

    @staticmethod
    def _close_one(pf: Any) -> None:
        try:
            pf.close()
        except Exception:  # noqa: BLE001 - closing a reader that failed
            pass

    @staticmethod
    def _read(fn: Any, path: str, column: str) -> Any:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise DataError(f"cannot read column {column!r} of Parquet file {path}: "
                            f"{type(e).__name__}: {_one_line(e)}") from None

    def _field(self, schema: Any, path: str, column: str, key: str) -> Any:
        i = schema.get_field_index(column)
        if i < 0:
            shown = ", ".join(schema.names[:8]) + (" ..." if len(schema.names) > 8 else "")
            raise DataError(f"{path} has no column {column!r} (its columns: {shown}); set "
                            f"DATA.{key}")
        return schema.field(i)

    def _check_image_type(self, schema: Any, path: str) -> bool:
        """Whether the image column is a struct (read its ``bytes`` field) or binary itself."""
        pa, _ = _pa()
        field = self._field(schema, path, self.image_column, "PARQUET_IMAGE_COLUMN")
        binary = (pa.types.is_binary, pa.types.is_large_binary)
        if any(t(field.type) for t in binary):
            return False
        if pa.types.is_struct(field.type):
            i = field.type.get_field_index("bytes")
            if i >= 0 and any(t(field.type.field(i).type) for t in binary):
                return True
        raise DataError(f"{path}: column {self.image_column!r} is {field.type}; expected binary "
                        f"image bytes or a struct with a binary 'bytes' field (the Hub's Image "
                        f"feature)")

    def _check_label_type(self, schema: Any, path: str) -> None:
        pa, _ = _pa()
        field = self._field(schema, path, self.label_column, "PARQUET_LABEL_COLUMN")
        if not pa.types.is_integer(field.type):
            raise DataError(f"{path}: column {self.label_column!r} is {field.type}; expected "
                            f"integer class indices (the Hub's ClassLabel feature)")

    # ------------------------------------------------------------------ per-process state
    # Open files, the cached row group and the lock are per process: a worker gets the dataset
    # pickled without them, and a forked process drops its parent's.
    def _init_process_state(self) -> None:
        self._pid = os.getpid()
        self._readers: dict = {}
        self._handles: dict = {}  # remote files: the cached file objects the readers read
        self._groups: "OrderedDict[int, Any]" = OrderedDict()  # row group -> image column, LRU
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for key in ("_readers", "_handles", "_groups", "_lock", "_orders"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_process_state()

    def _own_state(self) -> None:
        if self._pid != os.getpid():
            self._init_process_state()

    def close(self) -> None:
        """Close this process's Parquet files (they reopen on the next read)."""
        self._own_state()
        with self._lock:
            self._close_all()
        if self.cache is not None:
            self.cache.stop()  # no fetching ahead for a split that is closed or collected

    def _close_all(self) -> None:
        self._close_files()
        self._groups = OrderedDict()

    def _close_files(self) -> None:
        """Close the open files; the row groups already read stay (they are in memory)."""
        readers, self._readers = self._readers, {}
        handles, self._handles = self._handles, {}
        for pf in readers.values():
            self._close_one(pf)
        for handle in handles.values():
            handle.close()

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self.targets)

    def locate(self, index: int) -> Tuple[str, int, int]:
        """``(file, row group, row in the file)`` of sample ``index``."""
        group = int(np.searchsorted(self._group_start, index, "right")) - 1
        f = int(self._group_file[group])
        first = int(np.searchsorted(self._group_file, f, "left"))
        return self.files[f], int(self._group_index[group]), index - int(self._group_start[first])

    def _row_group(self, group: int) -> Any:
        """The image column (the binary array) of global row group ``group``; the last
        ``KEEP_ROW_GROUPS`` read are kept, so the window order (samples of a few row groups
        mixed) reads each row group about once per window instead of once per sample."""
        values = self._groups.get(group)
        if values is not None:
            self._groups.move_to_end(group)
            return values
        f, g = int(self._group_file[group]), int(self._group_index[group])
        pf = self._readers.get(f)
        if pf is None:
            pf = self._open_cached(f) if self.cache is not None else self._open(self.files[f])
            self._readers[f] = pf
        struct = self._bytes_field[f]
        column = f"{self.image_column}.bytes" if struct else self.image_column
        table = self._read(lambda: pf.read_row_group(g, columns=[column]), self.files[f],
                           self.image_column)
        values = table.column(0).combine_chunks()
        if struct:
            values = values.field("bytes")
        self._groups[group] = values
        keep = max(self.KEEP_ROW_GROUPS, self.keep_row_groups)
        while len(self._groups) > 1 and (len(self._groups) > keep or sum(
                v.nbytes for v in self._groups.values()) > self.KEEP_BYTES):
            self._groups.popitem(last=False)
        return values

    def read_bytes(self, index: int) -> bytes:
        """The image bytes of sample ``index`` (the original file's bytes)."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        self._own_state()
        group = int(np.searchsorted(self._group_start, index, "right")) - 1
        with self._lock:  # the cache's decoding threads share the reader and the row group
            value = self._row_group(group)[index - int(self._group_start[group])].as_py()
        if value is None:
            path, _, row = self.locate(index)
            raise DataError(f"row {row} of Parquet file {path} has no image bytes (column "
                            f"{self.image_column!r} is null)")
        return value

    def where(self, index: int) -> str:
        path, _, row = self.locate(index)
        return f"row {row} of Parquet file {path}"

    def block_sizes(self) -> List[int]:
        return np.diff(self._group_start).tolist()

    def follow(self, sampler: Any) -> None:
        """As :meth:`EncodedImageSplit.follow`; also keeps two of the sampler's windows of row
        groups (``WindowSampler.window``) when that is more than ``KEEP_ROW_GROUPS``."""
        super().follow(sampler)
        self.keep_row_groups = 2 * int(getattr(sampler, "window", 0))

    def fetch_units(self) -> np.ndarray:
        return np.repeat(self._group_file, np.diff(self._group_start))

    def block_groups(self) -> List[int]:
        """The file of each row group: the window order permutes files, then the row groups
        within each file, so a process reads a few files at a time (remote files are fetched
        whole)."""
        return self._group_file.tolist()

    @property
    def fingerprint(self) -> str:
        return self._fingerprint


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


@register_dataset("parquet")
def _parquet(opts: DataOptions, split: str, classes: Optional[Sequence[str]] = None
             ) -> ParquetSplit:
    if not opts.root:
        raise DataError("data.dataset=parquet needs data.root: a folder or URL holding "
                        "train/*.parquet and val/*.parquet (or the Hub's data/train-*.parquet "
                        "and data/validation-*.parquet)")
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    common = dict(image_column=opts.parquet_image_column, label_column=opts.parquet_label_column,
                  in_chans=opts.in_chans, classes=classes, skip_corrupt=opts.skip_corrupt)
    if is_url(opts.root):
        root = str(opts.root).rstrip("/")
        files = remote_split_files(root, split)
        folder = files[0][0].rsplit("/", 1)[0]
        entries = [{"name": url.rsplit("/", 1)[1], "bytes": int(info["size"]), "sha256": None,
                    "tag": _tag(url, info)} for url, info in files]
        where = os.path.join(os.path.expanduser(opts.cache_dir) if opts.cache_dir
                             else default_cache_dir(root), split)
        cache = ShardCache(folder, entries, where, int(opts.shard_cache_gb * 1e9))
        return ParquetSplit([url for url, _ in files], filesystem=_filesystem(root)[0],
                            cache=cache, **common)
    root = local_path(opts.root)
    if not os.path.isdir(root):
        raise DataError(f"data.root {root} is not a folder")
    return ParquetSplit(split_files(root, split), **common)
