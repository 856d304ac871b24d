"""Checkpoints written off the training thread.

:class:`BackgroundDiskSaver` is :class:`~.checkpoint.AtomicDiskSaver` with the slow part moved to
a writer thread: at the step, the checkpoint's tensors are copied into host buffers that are
reused from one save to the next (:class:`HostStaging`; pinned memory for CUDA tensors), and the
training thread goes on; serialising, the checksum, fsync, rename and the deletions rotation
asked for happen on the writer. The file is the same single ``weights_only``-loadable file.

Written here, not taken from torch: ``torch.distributed.checkpoint.async_save`` stages the same
way but writes its own sharded directory format, which ``torch.load``, timm and our resume do
not read. Ordering is what makes it as safe as the synchronous saver: a save first waits for
the previous one (so at most one file is in flight and the staging buffers are free), and
:meth:`BackgroundDiskSaver.wait` is called at the end of the run, on SIGTERM/SIGINT and when the
NaN guard stops it (the standard handlers do). A failed write is raised by the next
:meth:`~BackgroundDiskSaver.check` (every step) or :meth:`~BackgroundDiskSaver.wait`, as the same
one-line ``CheckpointWriteError``; the earlier files are intact because every write is atomic.
A SIGKILL in the middle of a background write leaves a temp file that the next run removes, and
the previous resume points, exactly as with a synchronous write.
"""
from __future__ import annotations

import copy
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Dict, Mapping, Optional

import ignite.distributed as idist
import torch

from .checkpoint import AtomicDiskSaver

__all__ = ["BackgroundDiskSaver", "HostStaging"]


class HostStaging:
    """Copies of a checkpoint's tensors in host buffers kept between snapshots (same key path,
    shape and dtype: the buffer is reused). Everything else is deep-copied."""

    def __init__(self) -> None:
        self._buffers: Dict[str, torch.Tensor] = {}

    def snapshot(self, obj: Any) -> Any:
        out = self._copy(obj, "")
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the non-blocking device-to-host copies have landed
        return out

    def _copy(self, obj: Any, path: str) -> Any:
        if isinstance(obj, torch.Tensor):
            return self._tensor(obj.detach(), path)
        if isinstance(obj, Mapping):
            return {k: self._copy(v, f"{path}/{k!r}") for k, v in obj.items()}
        if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
            return type(obj)(self._copy(v, f"{path}[{i}]") for i, v in enumerate(obj))
        return copy.deepcopy(obj)

    def _tensor(self, t: torch.Tensor, path: str) -> torch.Tensor:
        buf = self._buffers.get(path)
        if buf is None or buf.shape != t.shape or buf.dtype != t.dtype:
            buf = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=t.is_cuda)
            self._buffers[path] = buf
        buf.copy_(t, non_blocking=t.is_cuda)
        return buf


class BackgroundDiskSaver(AtomicDiskSaver):
    """ignite save handler: the state is copied to host memory at the call and written by one
    background thread (see the module docstring). Only rank 0 writes."""

    def __init__(self, dirname) -> None:
        super().__init__(dirname)
        self._staging = HostStaging()
        self._writer: Optional[ThreadPoolExecutor] = None
        self._in_flight: Optional[Future] = None

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Optional[Mapping] = None) -> None:
        if idist.get_rank() != 0:
            return
        self.wait()  # the previous file is complete (or its error raised) before the next starts
        snapshot = self._staging.snapshot(checkpoint)
        pending, self._pending = self._pending, []
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="checkpoint-writer")
        self._in_flight = self._writer.submit(self._write, snapshot, filename, pending)

    def wait(self) -> None:
        """Block until the write in flight is on disk; raise its error, if it failed."""
        future, self._in_flight = self._in_flight, None
        if future is not None:
            future.result()

    def check(self, _engine: Any = None) -> None:
        """Raise the error of a background write that has failed (never blocks)."""
        if self._in_flight is not None and self._in_flight.done():
            self.wait()
