"""One writer per run directory: an exclusive ``fcntl.flock`` on ``<run dir>/.lock``.

The OS drops the lock when the holding process ends, however it ends (SIGKILL included), so a
crash never leaves a stale lock. The lock file holds one JSON line naming the holder (host, pid,
start time, command) while it is held; a second writer fails at once with that holder in its
message. The file itself is never run content (see :data:`LOCK_NAME`) and is not deleted on
release: deleting a lock file races with a process that has just opened it.

Limits: ``flock`` is advisory (only writers that take it are excluded) and is only as reliable
as the file system's locking; across hosts on NFS/Lustre/GPFS it may not exclude anything.
"""
from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Optional, Set

from ..errors import InputError, os_error_message
from .run_dir import RunDir

__all__ = ["LOCK_NAME", "RunDirError", "RunDirLock", "RunDirLockedError", "describe_holder",
           "has_run_content", "read_holder"]

LOCK_NAME = RunDir.LOCK
"""Name of the lock file inside a run directory; code that lists a run's content skips it."""

# errnos of a file system that cannot lock (the run goes on, unlocked, with a warning)
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_HELD: Set["RunDirLock"] = set()


class RunDirError(InputError):
    """The run directory cannot be created or locked (not a directory, no permission)."""


class RunDirLockedError(RunDirError):
    """Another live process holds the run directory; ``holder`` is its lock-file record."""

    def __init__(self, label: str, holder: Optional[dict], raw: str = ""):
        self.label, self.holder = label, holder
        super().__init__(f"{label} is in use by another run ({describe_holder(holder, raw)}); "
                         "wait for it or use another --outdir")


def describe_holder(holder: Optional[dict], raw: str = "") -> str:
    """``host h, pid 123, started 2026-11-30 07:00:01: resnest-train ...`` (one line)."""
    if not holder:
        text = " ".join(raw.split())
        return f"holder: {text}" if text else "holder unknown: its lock file is empty"
    text = (f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, "
            f"started {holder.get('started', '?')}")
    command = " ".join(str(holder.get("command", "")).split())
    return f"{text}: {command}" if command else text


def has_run_content(path: Path) -> bool:
    """Whether ``path`` is a directory with anything in it besides the lock file."""
    return path.is_dir() and any(p.name != LOCK_NAME for p in path.iterdir())


def _after_fork_in_child() -> None:
    # A forked child (a DataLoader worker) shares the lock's open file description: close its
    # copy so the lock never outlives the holder because an orphaned child still has it open.
    for lock in list(_HELD):
        if lock._fd is not None:
            try:
                os.close(lock._fd)
            except OSError:
                pass
            lock._fd = None
    _HELD.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


class RunDirLock:
    """Exclusive lock on run directory ``path`` (created if missing, with its parents).

    ``acquire()`` creates the directory and ``.lock`` without looking first, takes
    ``flock(LOCK_EX | LOCK_NB)`` and writes the holder record; it raises
    :class:`RunDirLockedError` at once when another process holds it. ``command`` is recorded
    as the holder's command line, ``label`` names the directory in messages. Usable as a
    context manager. Forked children do not hold it; spawned/exec'ed ones never inherit it.
    """

    def __init__(self, path, command: str = "", label: Optional[str] = None):
        self.path = Path(path)
        self.lock_file = self.path / LOCK_NAME
        self.command = command or " ".join(sys.argv)
        self.label = label or f"run directory {self.path}"
        self.locked = False  # False also when the file system cannot lock (see acquire)
        self._fd: Optional[int] = None
        self._created_dir = False
        self._created_file = False

    def acquire(self) -> "RunDirLock":
        """Take the lock or raise :class:`RunDirLockedError` (held) / :class:`RunDirError`."""
        if self._fd is not None:
            return self
        for _ in range(50):  # retried only when the lock file was replaced under us
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder, raw = _read_holder(fd)
                os.close(fd)
                raise RunDirLockedError(self.label, holder, raw) from None
            except OSError as e:
                os.close(fd)
                if e.errno not in _UNSUPPORTED:
                    raise RunDirError(f"cannot lock {self.label}: {_reason(e)}") from None
                print(f"warning: cannot lock {self.label} ({_reason(e)}): nothing stops another "
                      "run from writing into it at the same time", file=sys.stderr)
                return self
            if not self._same_file(fd):  # unlinked or the directory moved: lock the new one
                os.close(fd)
                continue
            self._fd, self.locked = fd, True
            _HELD.add(self)
            self._write_holder()
            return self
        raise RunDirError(f"cannot lock {self.label}: its lock file keeps being replaced")

    def release(self, discard: bool = False) -> None:
        """Drop the lock and empty the holder record. ``discard``: nothing was written, so also
        remove the lock file and the directory when this lock created them."""
        fd, self._fd, self.locked = self._fd, None, False
        _HELD.discard(self)
        if fd is None:
            return
        try:
            if discard and self._created_file and self._same_file(fd):
                os.unlink(self.lock_file)
                if self._created_dir:
                    try:
                        os.rmdir(self.path)
                    except OSError:
                        pass  # something else is in it now
            else:
                os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> "RunDirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.mkdir(self.path)
                self._created_dir = True
            except FileExistsError:
                if not self.path.is_dir():
                    raise RunDirError(f"{self.label} is not a directory") from None
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
            try:
                fd = os.open(self.lock_file, flags | os.O_EXCL, 0o644)
                self._created_file = True
            except FileExistsError:
                fd = os.open(self.lock_file, flags, 0o644)
            return fd
        except RunDirError:
            raise
        except OSError as e:
            raise RunDirError(f"cannot lock {self.label}: {_reason(e)} "
                              f"({e.filename or self.lock_file})") from None

    def _same_file(self, fd: int) -> bool:
        try:
            st, fst = os.stat(self.lock_file), os.fstat(fd)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)

    def _write_holder(self) -> None:
        record = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
                  "command": self.command}
        data = (json.dumps(record) + "\n").encode()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
            os.fsync(self._fd)
        except OSError as e:  # the lock holds without its record; say so, do not fail the run
            print(f"warning: cannot write the holder record into {self.lock_file}: {_reason(e)}",
                  file=sys.stderr)


def read_holder(path) -> Optional[dict]:
    """The holder record in run directory ``path``'s lock file (``None``: empty or unreadable).
    It says who took the lock last; only a failed ``acquire`` says whether it is held now."""
    try:
        fd = os.open(Path(path) / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _parse(os.pread(fd, 65536, 0))
    finally:
        os.close(fd)


def _read_holder(fd: int, wait_s: float = 1.0):
    """The holder record, waiting up to ``wait_s`` for a holder that has just taken the lock to
    write it; ``(record or None, raw text)``."""
    deadline = time.monotonic() + wait_s
    while True:
        raw = os.pread(fd, 65536, 0)
        record = _parse(raw)
        if record is not None or time.monotonic() >= deadline:
            return record, raw.decode("utf-8", "replace")
        time.sleep(0.02)


def _parse(raw: bytes) -> Optional[dict]:
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _reason(e: OSError) -> str:
    return os_error_message(e)
