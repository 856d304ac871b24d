"""``DevicePrefetcher``: the next batch is already on the device when the step asks for it.

On CUDA, while step n runs, batch n+1 is copied from pinned host memory with ``non_blocking``
copies on a side stream, and the loader's ``batch_transform`` (the fast JPEG path's uint8 ->
float normalisation, or the cache's normaliser) runs there too. ``next()`` makes the current
stream wait for the side stream and calls ``record_stream`` on the batch's tensors, so the
caching allocator does not hand their memory to the side stream's next batch while the step
still reads them. The yielded batch is ``(float images, labels)`` on the device; the
prefetcher's ``prepare_batch`` is then a pass-through (nothing left to move or normalise).

On the CPU (or for ``enabled=False``) it is a pass-through: iterating yields exactly the
loader's batches (the same objects) and ``prepare_batch`` is the loader's.

The wrapper keeps what the engine and the samplers need: ``len()``, ``sampler``,
``batch_sampler``, ``dataset``, ``classes``, ``set_epoch`` and every other attribute of the
loader are the loader's (``wrapped_loader``). ``SeededDeterministicEngine`` swaps the wrapped
loader's batch sampler as it does for a bare loader, and a mid-epoch resume starts the wrapped
loader at the saved iteration, so the batches (and a kill + ``--resume auto``) are unchanged.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence, Tuple, Union

import torch
from ignite.utils import convert_tensor

__all__ = ["DevicePrefetcher", "resolve_prefetch"]


def resolve_prefetch(value: Union[bool, str], device: torch.device) -> Tuple[bool, str]:
    """``(on, why)`` for ``DATA.PREFETCH`` (true, false or auto) on ``device``."""
    device = torch.device(device)
    if value == "auto":
        on = device.type == "cuda"
        return on, f"auto: {'on' if on else 'off'} for {'CUDA' if on else device.type.upper()}"
    if value and device.type != "cuda":
        return True, "as set; a pass-through off CUDA"
    return bool(value), "as set"


def _tensors(batch: Any):
    if torch.is_tensor(batch):
        yield batch
    elif isinstance(batch, (list, tuple)):
        for item in batch:
            yield from _tensors(item)
    elif isinstance(batch, dict):
        for item in batch.values():
            yield from _tensors(item)


def _pinned(t: Any) -> Any:
    if torch.is_tensor(t) and t.device.type == "cpu" and not t.is_pinned():
        return t.pin_memory()
    return t


class _CudaPrefetchIterator:
    """One epoch of ``loader`` as device batches, one batch ahead on a side stream."""

    def __init__(self, prefetcher: "DevicePrefetcher") -> None:
        self._p = prefetcher
        self._it = iter(prefetcher.wrapped_loader)
        self._stream = torch.cuda.Stream(device=prefetcher.device)
        self._next: Optional[Any] = None
        self._done = False
        self._preload()

    def _preload(self) -> None:
        try:
            batch = next(self._it)
        except StopIteration:
            self._next, self._done = None, True
            return
        p = self._p
        # The side stream must not copy into memory the current stream may still use.
        self._stream.wait_stream(torch.cuda.current_stream(p.device))
        with torch.cuda.stream(self._stream):
            from_host = getattr(p.batch_transform, "from_host", None)
            if from_host is not None:  # DATA.DECODE gpu: decodes from host bytes on the device
                self._next = from_host([_pinned(t) for t in batch], p.device, non_blocking=True)
                return
            moved = [convert_tensor(_pinned(t), device=p.device, non_blocking=True)
                     for t in batch]
            self._next = p.batch_transform(moved)

    def __iter__(self) -> "_CudaPrefetchIterator":
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        current = torch.cuda.current_stream(self._p.device)
        current.wait_stream(self._stream)
        batch = self._next
        for t in _tensors(batch):
            if t.device.type == "cuda":
                t.record_stream(current)
        self._preload()
        return batch

    def __len__(self) -> int:
        return len(self._it)


class DevicePrefetcher:
    """Wraps ``loader`` (an :class:`~resnest_engine.data.loaders.ImageLoader` or any loader of
    ``(images, labels, ...)`` tuples) so that its batches arrive on ``device`` one step ahead.

    Args:
        loader: the loader; its ``batch_transform`` (if any) runs on the device after the copy.
        device: where batches go. Prefetching happens only for a CUDA device.
        enabled: False: a pass-through on any device.
    """

    def __init__(self, loader: Any, device: Union[str, torch.device],
                 enabled: bool = True) -> None:
        self.wrapped_loader = loader
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.active = bool(enabled) and self.device.type == "cuda"

    # -- what the loader was
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "wrapped_loader":
            raise AttributeError(name)
        return getattr(self.wrapped_loader, name)

    def __len__(self) -> int:
        return len(self.wrapped_loader)

    def __iter__(self) -> Iterator[Any]:
        if not self.active:
            return iter(self.wrapped_loader)
        return _CudaPrefetchIterator(self)

    @property
    def batch_transform(self):
        return getattr(self.wrapped_loader, "batch_transform", _first_two)

    def set_epoch(self, epoch: int) -> None:
        from .loaders import find_epoch_sampler
        find_epoch_sampler(self.wrapped_loader).set_epoch(epoch)

    def prepare_batch(self, batch: Sequence[Any], device: Optional[Any] = None,
                      non_blocking: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """ignite's ``prepare_batch``: a prefetched batch is already on the device and
        transformed; a pass-through prefetcher defers to the loader's."""
        if self.active:
            return batch[0], batch[1]
        inner = getattr(self.wrapped_loader, "prepare_batch", None)
        if inner is not None:
            return inner(batch, device, non_blocking)
        return (convert_tensor(batch[0], device=device, non_blocking=non_blocking),
                convert_tensor(batch[1], device=device, non_blocking=non_blocking))

    def close(self) -> None:
        from .loaders import close_loader
        close_loader(self.wrapped_loader)

    def __repr__(self) -> str:
        return (f"DevicePrefetcher({type(self.wrapped_loader).__name__}, device={self.device}, "
                f"active={self.active})")


def _first_two(batch: Sequence[Any]) -> Tuple[Any, Any]:
    return batch[0], batch[1]
