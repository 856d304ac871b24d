"""Test-only fault injection for subprocess runs; the library has no test hooks.

``cli_env()`` puts ``tests/fault_site`` on ``PYTHONPATH``; its ``sitecustomize`` calls
:func:`install` in every Python process (spawned DDP workers too) when one of these is set:

- ``RESNEST_ENGINE_KILL_AT_ITER=N``: SIGKILL the process after iteration N, once every handler of
  that iteration ran (``RESNEST_ENGINE_KILL_RANK=r``: only on rank r);
- ``RESNEST_ENGINE_KILL_IN_SAVE=N``: SIGKILL rank 0 inside its N-th checkpoint write, after the
  temp file is written and before it is renamed into place (on the background writer thread
  when checkpoints are written asynchronously);
- ``RESNEST_ENGINE_FILL_DISK_BEFORE=PATTERN``: fill the file system for real (a filler file
  written until the kernel says ENOSPC) right before the first file write of the library whose
  target name matches the glob ``PATTERN`` (``resume-e001-i0000002.pt``, ``model_weights.pt``);
- ``RESNEST_ENGINE_FILL_DISK_AT_ITER=N``: the same, after iteration N (for the text log).

The disk is full for real: the write that follows fails in the kernel, as on a user's machine.
"""
from __future__ import annotations

import os
import signal

KILL_AT_ITER_ENV = "RESNEST_ENGINE_KILL_AT_ITER"
KILL_RANK_ENV = "RESNEST_ENGINE_KILL_RANK"
KILL_IN_SAVE_ENV = "RESNEST_ENGINE_KILL_IN_SAVE"
FILL_DISK_BEFORE_ENV = "RESNEST_ENGINE_FILL_DISK_BEFORE"
FILL_DISK_AT_ITER_ENV = "RESNEST_ENGINE_FILL_DISK_AT_ITER"
FILLER = ".filler"


def fill_disk(directory) -> None:
    """Write ``directory/.filler`` until the file system is full (ENOSPC from the kernel)."""
    import errno
    with open(os.path.join(directory, FILLER), "ab", buffering=0) as f:
        for chunk in (1 << 20, 1 << 12, 1):
            block = b"\0" * chunk
            while True:
                try:
                    f.write(block)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break


def _kill(*_args) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install_kill_at_iter(target: int, rank) -> None:
    import ignite.distributed as idist
    from ignite.engine import Events

    import resnest_engine.engine as engine_pkg
    import resnest_engine.engine.trainer as trainer_mod

    original = trainer_mod.create_trainer

    def create_trainer(*args, **kwargs):
        trainer = original(*args, **kwargs)

        def _arm(engine):
            # Added at STARTED, after every handler of the run: it fires last in its iteration.
            if rank is None or int(rank) == idist.get_rank():
                engine.add_event_handler(Events.ITERATION_COMPLETED(once=target), _kill)

        trainer.add_event_handler(Events.STARTED, _arm)
        return trainer

    trainer_mod.create_trainer = engine_pkg.create_trainer = create_trainer


def _install_kill_in_save(target: int) -> None:
    import ignite.distributed as idist

    import resnest_engine.handlers.checkpoint as ckpt_mod

    original_write = ckpt_mod.AtomicDiskSaver._write
    original_save = ckpt_mod.atomic_save
    writes = [0]

    # _write runs on the training thread (synchronous saver) or the checkpoint-writer thread
    # (TRAINING.ASYNC_CHECKPOINT): the kill lands inside the file write either way.
    def _write(self, checkpoint, filename, pending):
        if idist.get_rank() == 0:
            writes[0] += 1
            if writes[0] == target:
                ckpt_mod.atomic_save = lambda obj, path, on_written=None: original_save(obj, path, _kill)
        try:
            return original_write(self, checkpoint, filename, pending)
        finally:
            ckpt_mod.atomic_save = original_save

    ckpt_mod.AtomicDiskSaver._write = _write


def _install_fill_disk_before(pattern: str) -> None:
    import fnmatch

    import resnest_engine.storage.files as files_mod

    original_init = files_mod._RecordingFile.__init__
    done = [False]

    def __init__(self, f):  # every atomic write opens its temp file, then wraps it here
        target = os.path.basename(f.name).lstrip(".").rsplit(".tmp-", 1)[0]
        if not done[0] and fnmatch.fnmatch(target, pattern):
            done[0] = True
            fill_disk(os.path.dirname(f.name))
        original_init(self, f)

    files_mod._RecordingFile.__init__ = __init__


def _install_fill_disk_at_iter(target: int) -> None:
    from ignite.engine import Events

    import resnest_engine.engine as engine_pkg
    import resnest_engine.engine.trainer as trainer_mod

    original = trainer_mod.create_trainer

    def create_trainer(*args, **kwargs):
        trainer = original(*args, **kwargs)

        def _arm(engine):
            def _fill(_):
                # the run directory: where the text log of this process goes
                import logging
                for h in logging.getLogger("resnest_engine").handlers:
                    if hasattr(h, "baseFilename"):
                        fill_disk(os.path.dirname(h.baseFilename))
            engine.add_event_handler(Events.ITERATION_COMPLETED(once=target), _fill)

        trainer.add_event_handler(Events.STARTED, _arm)
        return trainer

    trainer_mod.create_trainer = engine_pkg.create_trainer = create_trainer


def install() -> None:
    """Patch the library for the faults the environment asks for (before it is used)."""
    at_iter = os.environ.get(KILL_AT_ITER_ENV)
    if at_iter:
        _install_kill_at_iter(int(at_iter), os.environ.get(KILL_RANK_ENV))
    in_save = os.environ.get(KILL_IN_SAVE_ENV)
    if in_save:
        _install_kill_in_save(int(in_save))
    fill_before = os.environ.get(FILL_DISK_BEFORE_ENV)
    if fill_before:
        _install_fill_disk_before(fill_before)
    fill_at = os.environ.get(FILL_DISK_AT_ITER_ENV)
    if fill_at:
        _install_fill_disk_at_iter(int(fill_at))
