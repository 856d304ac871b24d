"""Crash-safe checkpoints on ignite's ``Checkpoint``.

ignite's ``Checkpoint`` asks its saver to delete the oldest file *before* it writes the new one,
and ``DiskSaver`` does not fsync. :class:`AtomicDiskSaver` writes to a temp file in the same
directory, fsyncs it, renames it, fsyncs the directory, and only then carries out the deletions
ignite asked for, so at least ``n_saved`` valid files exist at every moment.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.handlers import Checkpoint
from ignite.handlers.checkpoint import BaseSaveHandler

from ..errors import InputError
from ..storage.checksum import tensor_checksum, with_checksum
from ..storage.files import UnsafeLoadError, WriteError, atomic_write, safe_load, write_sidecar
from ..models.weights import KeyMismatch

__all__ = ["AtomicDiskSaver", "CheckpointError", "CheckpointWriteError", "Stateful", "atomic_save",
           "check_architecture", "create_best_checkpointer", "create_epoch_checkpointer",
           "create_resume_checkpointer", "list_checkpoints", "load_checkpoint", "read_checkpoint",
           "save_weights", "tensor_bytes"]

FORMAT_VERSION = 1
RESUME_PREFIX = "resume-"
EPOCH_PREFIX = "epoch-"  # the newest epoch-end point, kept apart when mid-epoch points rotate
BEST_PREFIX = "best-"
CHECKPOINT_KEYS = ("format_version", "meta", "model", "optimizer", "trainer", "schedulers",
                   "scaler", "ema", "rng", "metrics")


class CheckpointError(InputError, RuntimeError):
    """A checkpoint could not be written or does not load/verify."""


class CheckpointWriteError(CheckpointError, WriteError):
    """A checkpoint could not be written (disk full, unwritable directory)."""


def tensor_bytes(obj: Any) -> int:
    """The bytes of the tensors in ``obj`` (nested dicts, lists, tuples): about
    the size of its ``torch.save`` file."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def atomic_save(obj: Any, path: Union[str, Path], on_written: Optional[Callable] = None) -> None:
    """``torch.save`` to ``path`` so that ``path`` is either the old file or the complete new one.

    Raises :class:`CheckpointWriteError` with the reason (e.g. disk full, with the size the file
    needed) and leaves no temp file.
    """
    try:
        atomic_write(path, lambda f: torch.save(obj, f), on_written, size=tensor_bytes(obj))
    except WriteError as e:
        raise CheckpointWriteError(str(e)) from None


def save_weights(state_dict: Mapping[str, torch.Tensor], path: Union[str, Path]) -> None:
    """:func:`atomic_save` of a plain state_dict (loadable as it is by timm, the official code
    and ``torch.load``) with its checksum in the sidecar ``PATH.checksum``, written just before
    the file is renamed into place (see :mod:`resnest_engine.storage.checksum`)."""
    atomic_save(state_dict, path, on_written=lambda: write_sidecar(path, tensor_checksum(state_dict)))


class AtomicDiskSaver(BaseSaveHandler):
    """ignite save handler: atomic, fsynced writes; deletions deferred until after a write.

    Only rank 0 writes. Stale temp files from an interrupted run are removed on construction.
    """

    def __init__(self, dirname: Union[str, Path]) -> None:
        self.dirname = Path(dirname)
        self._pending: List[str] = []
        if idist.get_rank() == 0:
            self.dirname.mkdir(parents=True, exist_ok=True)
            for stale in self.dirname.glob(".*.tmp-*"):
                stale.unlink(missing_ok=True)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Optional[Mapping] = None) -> None:
        if idist.get_rank() != 0:
            return
        pending, self._pending = self._pending, []
        self._write(checkpoint, filename, pending)

    def _write(self, checkpoint: Mapping, filename: str, pending: List[str]) -> None:
        """Write the file, then carry out the deletions rotation asked for before it."""
        atomic_save(with_checksum(checkpoint), self.dirname / filename)
        for name in pending:
            if name != filename:
                (self.dirname / name).unlink(missing_ok=True)

    def remove(self, filename: str) -> None:
        self._pending.append(filename)


class Stateful:
    """Adapts a getter/setter pair to the ``state_dict`` protocol ignite's Checkpoint expects."""

    def __init__(self, get: Callable[[], Any], set: Optional[Callable[[Any], None]] = None) -> None:
        self._get, self._set = get, set

    def state_dict(self) -> Any:
        return self._get()

    def load_state_dict(self, state: Any) -> None:
        if self._set is not None:
            self._set(state)


def _resume_step(engine: Engine, _event: Any = None) -> str:
    return f"e{engine.state.epoch:03d}-i{engine.state.iteration:07d}"


def create_resume_checkpointer(to_save: Mapping[str, Any], saver: AtomicDiskSaver,
                               n_saved: int = 2) -> Checkpoint:
    """Resume points ``resume-e{epoch:03d}-i{iteration:07d}.pt``, newest ``n_saved`` kept.

    Rotation state is saved inside each file (``include_self``), so it continues across resumes.

    Args:
        to_save: the objects a resume point holds (``StandardHandlers.to_save``).
        saver: the disk saver that writes the files.
        n_saved: how many resume points to keep.
    """
    return Checkpoint(to_save, saver, filename_pattern=RESUME_PREFIX + "{global_step}.{ext}",
                      score_function=lambda e: e.state.iteration, global_step_transform=_resume_step,
                      n_saved=n_saved, include_self=True)


def create_epoch_checkpointer(to_save: Mapping[str, Any], saver: AtomicDiskSaver) -> Checkpoint:
    """The newest epoch-end resume point, ``epoch-e{epoch:03d}-i{iteration:07d}.pt``, kept even
    when mid-epoch resume points rotate it out of ``resume-*``: a resume on another number of
    processes needs an epoch boundary."""
    return Checkpoint(to_save, saver, filename_pattern=EPOCH_PREFIX + "{global_step}.{ext}",
                      score_function=lambda e: e.state.iteration, global_step_transform=_resume_step,
                      n_saved=1)


def create_best_checkpointer(to_save: Mapping[str, Any], saver: AtomicDiskSaver, trainer: Engine,
                             metric: str = "top1", n_saved: int = 1) -> Checkpoint:
    """Best-``n_saved`` by an evaluator's ``metric``: ``best-e{epoch:03d}-top1={x:.2f}.pt``.

    ignite's way: place it on the evaluator,
    ``evaluator.add_event_handler(Events.COMPLETED, best)``; the score is the evaluator's
    ``state.metrics[metric]``, the epoch the trainer's. Holds the same objects as a resume point,
    so a best checkpoint is resumable.

    Args:
        to_save: the objects a checkpoint holds (``StandardHandlers.to_save``).
        saver: the disk saver that writes the files.
        trainer: the training engine whose epoch names the file.
        metric: the evaluator's metric to rank by (higher is better).
        n_saved: how many best checkpoints to keep.
    """
    score = lambda ev: float(ev.state.metrics[metric])  # noqa: E731
    return Checkpoint(to_save, saver, filename_pattern=BEST_PREFIX + "{global_step}.{ext}",
                      score_function=score,
                      global_step_transform=lambda ev, _: f"e{trainer.state.epoch:03d}-{metric}={score(ev):.2f}",
                      n_saved=n_saved, include_self=True)


def read_checkpoint(path: Union[str, Path],
                    accept: Optional[Callable[[Any], bool]] = None) -> Dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check its format; never unpickles code.

    ``accept``: a test for files of another layout that the caller reads itself; a file it
    accepts is returned as it is, unchecked."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = safe_load(path)
    except UnsafeLoadError as e:
        raise CheckpointError(f"cannot load checkpoint {path}: {e}") from None
    if accept is not None and accept(ckpt):
        return ckpt
    if not isinstance(ckpt, dict) or "format_version" not in ckpt:
        raise CheckpointError(f"{path} is not a resnest-engine checkpoint (no format_version)")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format_version {ckpt['format_version']}, "
                              f"this version reads {FORMAT_VERSION}")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks keys: {', '.join(missing)}")
    return ckpt


def check_architecture(ckpt: Mapping[str, Any], model_state: Mapping[str, torch.Tensor],
                       path: Union[str, Path] = "checkpoint") -> None:
    """Raise :class:`CheckpointError` naming mismatched keys when ``ckpt`` is for another model."""
    mismatch = KeyMismatch.compare(ckpt["model"], model_state)
    if mismatch:
        name = ckpt.get("meta", {}).get("model", "?")
        raise CheckpointError(f"{path} is for another architecture ({name}): "
                              + mismatch.describe())


def list_checkpoints(dirname: Union[str, Path],
                     prefix: Union[str, Tuple[str, ...]] = RESUME_PREFIX) -> List[Path]:
    """Checkpoint files in ``dirname`` whose names start with ``prefix`` (or one of several),
    newest (highest iteration) first; a name without an iteration sorts last."""
    def iteration(p: Path) -> int:
        try:
            return int(p.stem.split("-i")[-1])
        except ValueError:
            return -1
    prefixes = (prefix,) if isinstance(prefix, str) else tuple(prefix)
    files = [p for pre in prefixes for p in Path(dirname).glob(f"{pre}*.pt")]
    return sorted(files, key=iteration, reverse=True)


def load_checkpoint(ckpt: Mapping[str, Any], to_load: Mapping[str, Any]) -> None:
    """Load a checkpoint read by :func:`read_checkpoint` into the objects of ``to_load``."""
    Checkpoint.load_objects(to_load={k: v for k, v in to_load.items() if k in ckpt},
                            checkpoint=dict(ckpt))
