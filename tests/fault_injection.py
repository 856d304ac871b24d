"""Test-only fault injection for subprocess runs; the library has no test hooks.

``cli_env()`` puts ``tests/fault_site`` on ``PYTHONPATH``; its ``sitecustomize`` calls
:func:`install` in every Python process (spawned DDP workers too) when one of these is set:

- ``RESNEST_ENGINE_KILL_AT_ITER=N``: SIGKILL the process after iteration N, once every handler of
  that iteration ran (``RESNEST_ENGINE_KILL_RANK=r``: only on rank r);
- ``RESNEST_ENGINE_KILL_IN_SAVE=N``: SIGKILL rank 0 inside its N-th checkpoint write, after the
  temp file is written and before it is renamed into place.
"""
from __future__ import annotations

import os
import signal

KILL_AT_ITER_ENV = "RESNEST_ENGINE_KILL_AT_ITER"
KILL_RANK_ENV = "RESNEST_ENGINE_KILL_RANK"
KILL_IN_SAVE_ENV = "RESNEST_ENGINE_KILL_IN_SAVE"


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

    original_call = ckpt_mod.AtomicDiskSaver.__call__
    original_save = ckpt_mod.atomic_save
    writes = [0]

    def __call__(self, checkpoint, filename, metadata=None):
        if idist.get_rank() == 0:
            writes[0] += 1
            if writes[0] == target:
                ckpt_mod.atomic_save = lambda obj, path, on_written=None: original_save(obj, path, _kill)
        try:
            return original_call(self, checkpoint, filename, metadata)
        finally:
            ckpt_mod.atomic_save = original_save

    ckpt_mod.AtomicDiskSaver.__call__ = __call__


def install() -> None:
    """Patch the library for the faults the environment asks for (before it is used)."""
    at_iter = os.environ.get(KILL_AT_ITER_ENV)
    if at_iter:
        _install_kill_at_iter(int(at_iter), os.environ.get(KILL_RANK_ENV))
    in_save = os.environ.get(KILL_IN_SAVE_ENV)
    if in_save:
        _install_kill_in_save(int(in_save))
