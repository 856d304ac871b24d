"""Remote shard sets: whole shards fetched through fsspec into a local cache, verified, evicted.

``DATA.ROOT`` of ``DATA.DATASET: shards`` may be a URL (``s3://``, ``gs://``, ``http(s)://``,
any fsspec protocol; ``file://`` is a local folder). :class:`ShardCache` then keeps the split's
shards in a local folder (``DATA.CACHE_DIR``), each one:

* **fetched whole**, streamed to a temp name unique to the process and thread, hashed on the way,
  and renamed into place only when its size and SHA-256 are the index's. A mismatch deletes the
  file and fetches once more; a second mismatch is one line naming the URL and both digests.
* **retried**: a network error (server unreachable, connection cut mid-transfer) is retried with
  exponential backoff, then is one line naming the URL. A missing file is not retried.
* **within a budget** (``DATA.SHARD_CACHE_GB``): before a fetch, complete shards are evicted least
  recently used first, never one that a process has open (readers hold a shared ``flock`` on the
  shards they read; eviction skips a file it cannot lock exclusively).
* **shared by processes**: a per-shard lock file makes one process fetch while the others wait
  for it, and the atomic rename means no process ever reads a partial shard.
* **fetched ahead**: :meth:`ShardCache.want` tells a background thread which shards are needed
  next (the dataset derives them from the sampler's order); it fetches them while they fit the
  budget.

Cached names carry the SHA-256's first 16 hex digits, so a changed remote set never reuses a
stale file. Files without an index (remote Parquet files, :mod:`.parquet`) have no SHA-256: an
entry then gives ``sha256: None`` and a ``tag`` (16 hex digits of its URL, size and ETag or
modification time, from the listing) that names the cached file, and a transfer is checked by
its size only. Errors are :class:`~resnest_engine.data.errors.DataError`, one line each.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .errors import DataError

__all__ = ["ShardCache", "default_cache_dir", "is_url", "local_path", "read_remote_json",
           "split_url"]

logger = logging.getLogger(__name__)

CHUNK = 4 << 20
_CACHED_NAME = re.compile(r"^[0-9a-f]{16}-")
#: Network errors are retried this many times (so ``RETRIES + 1`` attempts) ...
RETRIES = 4
#: ... waiting ``BACKOFF_S * 2**attempt`` seconds in between (0.5, 1, 2, 4 s).
BACKOFF_S = 0.5


def is_url(root: str) -> bool:
    """Whether ``root`` names a remote location (``proto://...`` other than ``file://``)."""
    proto, sep, _ = str(root).partition("://")
    return bool(sep) and proto.lower() not in ("file", "local")


def local_path(root: str) -> str:
    """``root`` as a local path: ``file://`` stripped, ``~`` expanded."""
    root = str(root)
    if root.lower().startswith("file://"):
        root = root[len("file://"):]
    return os.path.expanduser(root)


def split_url(root: str, split: str) -> str:
    return str(root).rstrip("/") + "/" + split


def default_cache_dir(root: str) -> str:
    """``$XDG_CACHE_HOME/resnest-engine/shards/<hash of the URL>`` (``~/.cache`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    tag = hashlib.sha256(str(root).rstrip("/").encode()).hexdigest()[:16]
    return os.path.join(base, "resnest-engine", "shards", tag)


def _filesystem(url: str) -> Tuple[Any, str]:
    try:
        import fsspec
    except ImportError:
        raise DataError(f"data.root {url} is a URL: reading it needs fsspec (pip install "
                        f"'resnest-engine[cloud]')") from None
    try:
        # A fresh instance per process: an fsspec async filesystem does not survive a fork.
        return fsspec.core.url_to_fs(url, skip_instance_cache=True)
    except ImportError as e:
        raise DataError(f"data.root {url}: {e} (pip install 'resnest-engine[cloud]')") from None
    except ValueError as e:
        raise DataError(f"data.root {url}: {e}") from None


def _permanent(e: BaseException) -> bool:
    """Errors a retry cannot fix: a missing file, no permission."""
    return isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError))


def _describe(e: BaseException) -> str:
    text = " ".join(str(e).split()) or "no message"
    return f"{type(e).__name__}: {text}"


def _retrying(url: str, what: str, attempt_fn: Callable[[], Any], retries: int,
              backoff: float) -> Any:
    """``attempt_fn()``, retried on network errors with exponential backoff; DataError at last."""
    for attempt in range(retries + 1):
        try:
            return attempt_fn()
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - fsspec backends raise anything on a network error
            if _permanent(e):
                raise DataError(f"cannot {what} {url}: {_describe(e)}") from None
            if attempt == retries:
                raise DataError(f"cannot {what} {url}: {_describe(e)} (after {retries + 1} "
                                f"attempts with backoff; is the server reachable?)") from None
            delay = backoff * (2 ** attempt)
            logger.warning("%s %s failed (%s); retrying in %.1f s", what, url, _describe(e), delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def read_remote_json(url: str, retries: Optional[int] = None,
                     backoff: Optional[float] = None) -> Any:
    """The parsed JSON file at ``url`` (fsspec), with the fetch's retries."""
    fs, path = _filesystem(url)
    data = _retrying(url, "read", lambda: fs.cat_file(path),
                     RETRIES if retries is None else retries,
                     BACKOFF_S if backoff is None else backoff)
    try:
        return json.loads(data)
    except ValueError as e:
        raise DataError(f"cannot read {url}: not JSON ({e})") from None


class _DiskFull(Exception):
    pass


class ShardCache:
    """The local cache of one remote split's shards (see the module docstring).

    ``shards``: the index's entries (``name``, ``bytes``, ``sha256``; or ``sha256: None`` and
    ``tag``, 16 hex digits naming the cached file, for a file checked by size).
    ``budget_bytes``: the most the complete shards of this split may take in ``cache_dir`` (0: no limit); a single
    shard larger than the budget is still fetched (one at a time). Picklable: a DataLoader
    worker gets a copy without the filesystem, the locks or the thread, and makes its own.
    """

    def __init__(self, url: str, shards: Sequence[dict], cache_dir: str, budget_bytes: int = 0,
                 retries: Optional[int] = None, backoff: Optional[float] = None,
                 ahead: int = 4) -> None:
        self.url = str(url).rstrip("/")
        self.names = [str(s["name"]) for s in shards]
        self.sizes = [int(s["bytes"]) for s in shards]
        self.digests: List[Optional[str]] = [
            None if s.get("sha256") is None else str(s["sha256"]) for s in shards]
        self.tags = [d[:16] if d is not None else str(s["tag"])
                     for d, s in zip(self.digests, shards)]
        self.dir = os.path.abspath(os.path.expanduser(cache_dir))
        self.budget = int(budget_bytes)
        self.retries = RETRIES if retries is None else int(retries)
        self.backoff = BACKOFF_S if backoff is None else float(backoff)
        self.ahead = int(ahead)
        self.fetches: Dict[int, int] = {}  # shard -> transfers this process made (tests, logs)
        self._reset()

    def _reset(self) -> None:
        self._fs: Optional[Tuple[Any, str]] = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._wanted: List[int] = []
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._failed: set = set()

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items()
                 if k not in ("_fs", "_lock", "_wake", "_thread", "_wanted", "_failed", "_pid")}
        state["fetches"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    def _check_process(self) -> None:
        if self._pid != os.getpid():  # forked: the parent's thread and filesystem are not ours
            self._reset()

    # -- names ------------------------------------------------------------------------------
    def shard_url(self, shard: int) -> str:
        return f"{self.url}/{self.names[shard]}"

    def local(self, shard: int) -> str:
        """Where shard ``shard`` lives once cached (it may not be there yet)."""
        return os.path.join(self.dir, f"{self.tags[shard]}-{self.names[shard]}")

    def cached(self, shard: int) -> bool:
        try:
            return os.path.getsize(self.local(shard)) == self.sizes[shard]
        except OSError:
            return False

    # -- fetching -----------------------------------------------------------------------------
    def path(self, shard: int) -> str:
        """The local path of shard ``shard``, fetched first if it is not cached (blocking)."""
        self._check_process()
        if not self.cached(shard):
            self._fetch_locked(shard)
        return self.local(shard)

    def _fetch_locked(self, shard: int) -> None:
        os.makedirs(self.dir, exist_ok=True)
        lock_path = self.local(shard) + ".lock"
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one fetcher per shard; the others wait for it
            try:
                if self.cached(shard):
                    return
                self._make_room(self.sizes[shard], keep=shard)
                self._fetch(shard)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _filesystem(self) -> Tuple[Any, str]:
        if self._fs is None:
            self._fs = _filesystem(self.url)
        return self._fs

    def _fetch(self, shard: int) -> None:
        url, want = self.shard_url(shard), self.digests[shard]
        for attempt in (1, 2):
            got, size = _retrying(url, "fetch", lambda: self._transfer(shard), self.retries,
                                  self.backoff)
            if self._verified(shard, got, size):
                return
            if want is None:
                logger.warning("%s: %d bytes, the listing said %d; %s", url, size,
                               self.sizes[shard], "fetching it again" if attempt == 1 else
                               "giving up")
            else:
                logger.warning("shard %s: SHA-256 %s, the index says %s; %s", url, got, want,
                               "fetching it again" if attempt == 1 else "giving up")
        if want is None:
            raise DataError(f"{url} fails verification twice: {size} bytes, the listing said "
                            f"{self.sizes[shard]} (the file changed while it was read; start "
                            f"again)")
        raise DataError(f"shard {url} fails verification twice: SHA-256 {got}, the index says "
                        f"{want} (the stored copy differs from the one indexed; replace it or "
                        f"rewrite the index)")

    def _verified(self, shard: int, digest: str, size: int) -> bool:
        want = self.digests[shard]
        return size == self.sizes[shard] and (want is None or digest == want)

    def _transfer(self, shard: int) -> Tuple[str, int]:
        """One transfer of ``shard`` into the cache: its ``(SHA-256, size)``; renamed into place
        when right."""
        fs, root = self._filesystem()
        rpath = f"{root.rstrip('/')}/{self.names[shard]}"
        final = self.local(shard)
        tmp = f"{final}.{os.getpid()}.{threading.get_ident()}.tmp"
        digest, size = hashlib.sha256(), 0
        self.fetches[shard] = self.fetches.get(shard, 0) + 1
        protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        kwargs = {"block_size": 0} if {"http", "https"} & set(protocols) else {}
        try:
            with fs.open(rpath, "rb", **kwargs) as src, open(tmp, "wb") as dst:
                while True:
                    chunk = src.read(CHUNK)
                    if not chunk:
                        break
                    digest.update(chunk)
                    size += len(chunk)
                    try:
                        dst.write(chunk)
                    except OSError as e:
                        raise _DiskFull(e) from None
                try:
                    dst.flush()
                    os.fsync(dst.fileno())
                except OSError as e:
                    raise _DiskFull(e) from None
            got = digest.hexdigest()
            if self._verified(shard, got, size):
                os.replace(tmp, final)
            return got, size
        except _DiskFull as e:
            self._disk_full(shard, e.args[0])
            raise AssertionError("unreachable")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _disk_full(self, shard: int, e: OSError) -> None:
        if os.path.exists(f"{self.local(shard)}.{os.getpid()}.{threading.get_ident()}.tmp"):
            os.unlink(f"{self.local(shard)}.{os.getpid()}.{threading.get_ident()}.tmp")
        free = shutil.disk_usage(self.dir).free
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DataError(f"shard cache {self.dir} is full: cannot store {self.shard_url(shard)} "
                            f"({self.sizes[shard]} bytes, {free} bytes free on that disk); "
                            f"free space, set DATA.CACHE_DIR to a larger disk or lower "
                            f"DATA.SHARD_CACHE_GB") from None
        raise DataError(f"cannot write to shard cache {self.dir}: "
                        f"{os.strerror(e.errno) if e.errno else e}") from None

    # -- the budget ---------------------------------------------------------------------------
    def _complete_files(self) -> List[Tuple[float, int, str]]:
        """``(mtime, size, path)`` of the complete shards in the cache folder."""
        out = []
        try:
            entries = list(os.scandir(self.dir))
        except OSError:
            return out
        for entry in entries:
            if entry.name.endswith((".lock", ".tmp")) or not _CACHED_NAME.match(entry.name):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            out.append((st.st_mtime, st.st_size, entry.path))
        return out

    def _make_room(self, need: int, keep: int, protect: Sequence[int] = ()) -> bool:
        """Evict least recently used shards until ``need`` more bytes fit the budget; False when
        what is left is in use (or protected) and still too much."""
        if self.budget <= 0:
            return True
        files = sorted(self._complete_files())
        used = sum(size for _, size, _ in files)
        spared = {self.local(s) for s in (keep, *protect)}
        for _, size, path in files:
            if used + need <= self.budget:
                break
            if path not in spared and self._evict(path):
                used -= size
        return used + need <= self.budget

    @staticmethod
    def _evict(path: str) -> bool:
        """Delete ``path`` unless a reader holds it (a shared flock); True when deleted."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        try:
            os.unlink(path)
            logger.debug("shard cache: evicted %s", path)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    def open(self, shard: int) -> int:
        """A read-only descriptor of the cached shard, holding a shared lock (so it is never
        evicted while open); fetched first if needed. Marks the shard recently used."""
        for _ in range(3):
            path = self.path(shard)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:  # evicted by another process between the two calls
                continue
            except OSError as e:
                raise DataError(f"cannot open cached shard {path}: "
                                f"{os.strerror(e.errno) if e.errno else e}") from None
            fcntl.flock(fd, fcntl.LOCK_SH)
            if os.fstat(fd).st_nlink == 0:  # evicted before the lock was ours
                os.close(fd)
                continue
            try:
                os.utime(path)
            except OSError:
                pass
            return fd
        raise DataError(f"shard {self.shard_url(shard)} keeps being evicted from {self.dir} "
                        f"before it can be opened; raise DATA.SHARD_CACHE_GB")

    # -- fetching ahead -------------------------------------------------------------------------
    def want(self, shards: Sequence[int]) -> None:
        """The shards needed next, soonest first: a background thread fetches the first
        ``ahead`` of them that are not cached, as far as the budget allows without evicting
        one needed sooner."""
        self._check_process()
        wanted = list(shards)[: self.ahead]
        with self._lock:
            if wanted == self._wanted and self._thread is not None:
                return
            self._wanted = wanted
            if self._thread is None:
                self._thread = threading.Thread(target=self._prefetch, name="shard-prefetch",
                                                daemon=True)
                self._thread.start()
        self._wake.set()

    def stop(self) -> None:
        """Stop fetching ahead: the thread ends once its current fetch is done (a later
        :meth:`want` starts one again). Without it, the thread would keep checking the cache
        folder, and fetch what went missing, for the life of the process."""
        if self._pid != os.getpid():
            return
        with self._lock:
            self._wanted = []
        self._wake.set()

    def _prefetch(self) -> None:
        while True:
            self._wake.wait(timeout=5.0)
            self._wake.clear()
            with self._lock:
                wanted = list(self._wanted)
                if not wanted:  # stopped; decided under the lock that want() takes
                    self._thread = None
                    return
            for k, shard in enumerate(wanted):
                if shard in self._failed or self.cached(shard):
                    continue
                if not self._make_room(self.sizes[shard], keep=shard, protect=wanted[:k]):
                    break  # the budget holds no more of the shards needed soon
                try:
                    self._fetch_locked(shard)
                except Exception as e:  # noqa: BLE001 - the reader fetches again and reports it
                    self._failed.add(shard)
                    logger.debug("prefetch of %s failed: %s", self.shard_url(shard), e)
                if self._wake.is_set():
                    break  # a newer wish list
