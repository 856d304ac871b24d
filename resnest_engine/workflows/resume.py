"""Where a resumed run starts: one piece that answers every resume question.

:func:`open_resume` reads a checkpoint file and returns a resume source of one of two kinds:

- :class:`CheckpointResume`, our own checkpoint. On the number of processes that wrote it, it
  is the bitwise continuation. On another number (elastic), it is the newest epoch-end resume
  point at or before it, with the same global batch through gradient accumulation
  (:func:`elastic_accum`), and the log says what is no longer guaranteed.
- :class:`OfficialResume`, a ``checkpoint_N.pth`` of the official ResNeSt ``train.py``: its
  weights and SGD momentum, the trainer and LR schedule placed at the next epoch.

Each answers the same questions, in the order a run asks them: the gradient accumulation to run
with (:attr:`grad_accum`), the thread count to restore (:meth:`restore_threads`), whether the
model still needs its pretrained weights (never: the checkpoint replaces them), the
architecture check (:meth:`check_architecture`) and the loading into the handlers and trainer
(:meth:`load`, which returns the line to log), and whether the run directory is new
(:attr:`new_run_dir`). Written here because no library resumes an
ignite run on another world size or from another trainer's files.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
from ignite.engine import Engine
from torch import nn

from ..handlers.checkpoint import (EPOCH_PREFIX, RESUME_PREFIX, CheckpointError,
                                  check_architecture, list_checkpoints, load_checkpoint,
                                  read_checkpoint)
from ..official import is_official_checkpoint, load_official_checkpoint, read_resume_file
from ..handlers.standard import StandardHandlers
from ..models.weights import strip_prefixes

__all__ = ["CheckpointResume", "OfficialResume", "elastic_accum", "elastic_resume_point",
           "open_resume"]

logger = logging.getLogger("resnest_engine")


def elastic_accum(batch: int, saved_world: int, saved_accum: int, world: int) -> int:
    """Micro-steps per optimizer step on ``world`` processes that keep the global batch and the
    per-process micro-batch of the saved run (``batch / (saved_world x saved_accum)``) where it
    divides; otherwise the fewest micro-steps whose micro-batch is no larger than the saved one
    (what fitted in memory still fits). Raises ``CheckpointError`` when the global batch does not
    divide by ``world``."""
    if batch % world:
        raise CheckpointError(f"TRAINING.BATCH_SIZE {batch} (the global batch of the saved run) "
                              f"does not divide by {world} processes; resume with a number of "
                              f"processes that divides it (the run used {saved_world})")
    micro = max(batch // (saved_world * saved_accum), 1)
    per_process = batch // world
    return next(a for a in range(1, per_process + 1)
                if per_process % a == 0 and per_process // a <= micro)


def _epoch_boundary_before(path: Path, iteration: int, length: int
                           ) -> Optional[Tuple[Dict[str, Any], Path]]:
    """The newest readable resume or epoch-end point beside ``path`` at an epoch boundary before
    ``iteration``, or None."""
    for other in list_checkpoints(path.parent, (RESUME_PREFIX, EPOCH_PREFIX)):
        try:
            cand = read_checkpoint(other)
        except CheckpointError:
            continue
        it = int(cand["trainer"]["iteration"])
        if it % length == 0 and it < iteration:
            return cand, other
    return None


def elastic_resume_point(ckpt: Dict[str, Any], path: Path, batch_size: int, grad_accum: int,
                         world: int) -> Tuple[Dict[str, Any], Path, int]:
    """``(checkpoint, its path, grad_accum)`` to resume on ``world`` processes.

    Same world size as the checkpoint: it as it is (the bitwise guarantee). Another world size:
    an epoch-boundary resume point (the newest mid-epoch point is replaced by the newest epoch-end
    point beside it, said in the log), the same global batch ``batch_size`` through gradient
    accumulation, and a log line on what is no longer guaranteed. ``grad_accum`` is the config's,
    for a checkpoint that does not record its own.
    """
    meta = ckpt["meta"]
    saved_world = int(meta.get("world_size") or world)
    saved_accum = int(meta.get("grad_accum") or grad_accum)
    if saved_world == world:
        return ckpt, path, saved_accum
    length = int(ckpt["trainer"]["epoch_length"])
    iteration = int(ckpt["trainer"]["iteration"])
    if iteration % length:
        boundary = _epoch_boundary_before(path, iteration, length)
        if boundary is None:
            raise CheckpointError(f"{path} is a mid-epoch resume point of a {saved_world}-process "
                                  f"run and no epoch-end resume point is beside it; resume with "
                                  f"{saved_world} processes")
        logger.warning("%s is a mid-epoch resume point of %d processes: another world size "
                       "resumes from the epoch boundary %s (epoch %d); the steps after it are "
                       "trained again", path.name, saved_world, boundary[1].name,
                       int(boundary[0]["trainer"]["iteration"]) // length)
        ckpt, path = boundary
        saved_accum = int(ckpt["meta"].get("grad_accum") or saved_accum)
    accum = elastic_accum(batch_size, saved_world, saved_accum, world)
    micro_before = batch_size // (saved_world * saved_accum)
    micro_now = batch_size // (world * accum)
    logger.warning(
        "Resuming a %d-process run on %d processes (elastic, from %s at epoch %d): same global "
        "batch %d (%d micro-step(s) of %d per process, was %d of %d), same LR schedule position, "
        "EMA, scaler and metrics history. Not bitwise: each epoch's sample order is re-drawn from "
        "the seed and epoch for %d processes%s.", saved_world, world, path.name,
        int(ckpt["trainer"]["iteration"]) // length, batch_size, accum, micro_now,
        saved_accum, micro_before, world,
        "" if micro_now == micro_before else " and BatchNorm sees micro-batches of "
        f"{micro_now} instead of {micro_before}")
    return ckpt, path, accum


class CheckpointResume:
    """A resume from one of our checkpoints (a resume point, a best-N file, an epoch-end point)."""

    kind = "checkpoint"
    new_run_dir = False  # the run directory that wrote it goes on

    def __init__(self, ckpt: Dict[str, Any], path: Path, grad_accum: int) -> None:
        self.ckpt, self.path, self.grad_accum = ckpt, Path(path), grad_accum

    @property
    def meta(self) -> Dict[str, Any]:
        """What the run recorded beside the states (``checkpoint_meta``, the MLflow run id)."""
        return self.ckpt["meta"]

    @property
    def threads(self) -> Optional[int]:
        """The thread count of the run that wrote it (a deterministic CPU run needs the same)."""
        return self.meta.get("threads")

    def restore_threads(self, deterministic: bool) -> Optional[int]:
        """Set torch's thread count to the saved one when determinism needs it; the count set, or
        None."""
        saved = self.threads
        if deterministic and saved and saved != torch.get_num_threads():
            torch.set_num_threads(int(saved))
            return int(saved)
        return None

    def check_architecture(self, model: nn.Module) -> None:
        check_architecture(self.ckpt, model.state_dict(), self.path)

    def check_data(self, fingerprint: Optional[str]) -> None:
        """Refuse (one line) a train split whose content fingerprint (shards, Parquet) differs
        from the one the checkpoint's run trained on: the same indices would be other images.
        The same set elsewhere (a local copy, another bucket) has the same fingerprint."""
        saved = self.meta.get("data_fingerprint")
        if saved and fingerprint and saved != fingerprint:
            raise CheckpointError(
                f"{self.path} was trained on another data set: its train split's fingerprint is "
                f"{saved[:12]}..., DATA.ROOT's is {fingerprint[:12]}...; resume with the shards "
                f"or Parquet files it was trained on")

    def load(self, handlers: StandardHandlers, trainer: Engine, **_: Any) -> str:
        """Load every state into ``handlers.to_save``; the rotation state of the resume (or best)
        checkpointer continues from the file's own."""
        load_checkpoint(self.ckpt, handlers.to_save)
        own_state = self.ckpt.get("checkpointer")
        if self.path.name.startswith(RESUME_PREFIX):
            if own_state and handlers.resume_checkpointer is not None:
                handlers.resume_checkpointer.load_state_dict(own_state)
            best_state = self.ckpt.get("best_checkpointer")
        else:  # a best-N file: its own rotation state is the best checkpointer's
            best_state = own_state
        if best_state and handlers.best_checkpointer is not None:
            handlers.best_checkpointer.load_state_dict(best_state)
        return (f"Resumed from {self.path} (epoch {trainer.state.epoch}, iteration "
                f"{trainer.state.iteration})")


class OfficialResume:
    """A resume from the official ``train.py``'s ``checkpoint_N.pth`` (SGD, epoch boundary, fresh
    RNG, sampler and metrics history: not the bitwise continuation of our own checkpoints)."""

    kind = "official"
    new_run_dir = True  # our run directory starts here (config.yaml is written)
    threads = None

    def __init__(self, ckpt: Mapping[str, Any], path: Path, grad_accum: int) -> None:
        self.ckpt, self.path, self.grad_accum = ckpt, Path(path), grad_accum

    @property
    def meta(self) -> Dict[str, Any]:
        return {}  # the official file records none of ours

    def restore_threads(self, deterministic: bool) -> Optional[int]:
        return None

    def check_architecture(self, model: nn.Module) -> None:
        check_architecture({"model": strip_prefixes(self.ckpt["state_dict"]), "meta": {}},
                           model.state_dict(), self.path)

    def check_data(self, fingerprint: Optional[str]) -> None:
        """An official checkpoint records no data fingerprint: nothing to check."""

    def load(self, handlers: StandardHandlers, trainer: Engine, *, model: nn.Module,
             optimizer: torch.optim.Optimizer, epoch_length: int, max_epochs: int) -> str:
        info = load_official_checkpoint(self.ckpt, model, optimizer, trainer, handlers.lr_scheduler,
                                        epoch_length, max_epochs, self.path)
        done = info["epochs_done"]
        return (f"Resumed from the official checkpoint {self.path}: {done} epoch(s) done "
                f"(official epoch {done - 1}), continuing at epoch {done + 1} of {max_epochs} "
                f"(official epoch {done}) with its weights and {info['momentum_buffers']} SGD "
                "momentum buffers. An official checkpoint resumes at an epoch boundary with fresh "
                "RNG, sampler and metrics history: not the bitwise continuation of our own "
                "checkpoints.")


ResumeSource = Union[CheckpointResume, OfficialResume]


def open_resume(path: Union[str, Path], batch_size: int, grad_accum: int,
                world: int) -> ResumeSource:
    """The resume source of the checkpoint at ``path`` for a run of global batch ``batch_size``
    on ``world`` processes (``grad_accum``: the config's, for files that do not record theirs)."""
    path = Path(path)
    ckpt = read_resume_file(path)
    if is_official_checkpoint(ckpt):
        return OfficialResume(ckpt, path, grad_accum)
    ckpt, path, accum = elastic_resume_point(ckpt, path, batch_size, grad_accum, world)
    return CheckpointResume(ckpt, path, accum)
