"""Stop at a step boundary on SIGTERM/SIGINT (SLURM preemption, Ctrl-C) after saving a resume point."""
from __future__ import annotations

import logging
import os
import signal
from typing import Callable, Optional

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

logger = logging.getLogger("resnest_engine")

__all__ = ["GracefulInterrupt"]


# A SIGTERM/SIGINT that arrived after defer_signals() and before GracefulInterrupt.attach.
_pending: Optional[int] = None


def defer_signals() -> None:
    """Hold SIGTERM/SIGINT until a :class:`GracefulInterrupt` is attached, which then stops at
    its next check with a resume point, as for a signal during training. For the
    start-up of a launched worker: the launcher passes a pre-emption on as soon as the worker
    exists, and a worker still loading its data or checkpoint would otherwise die of it (the
    launch then ends as a failure, not as an interrupted run). A second signal before the attach
    ends the process as the first would have without this. Main thread only."""
    global _pending
    _pending = None

    def hold(signum, _frame):
        global _pending
        if _pending is not None:  # asked twice: stop now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        _pending = signum

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, hold)


class GracefulInterrupt:
    """On SIGTERM/SIGINT: finish the current step, call ``on_interrupt(trainer)`` (e.g.
    ``handlers.write_resume_point``), log, and terminate the run. ``signal`` is the signal
    number that arrived (None while none did).

    Under DDP the flag is all-reduced every ``every`` steps so that every rank stops at the same
    step (a rank that got no signal of its own records SIGTERM); alone, the flag is read each
    step. ``attach`` installs the signal handlers (main thread only) and places the check on
    ``ITERATION_COMPLETED``; place it after the other handlers of that event. A signal held by
    :func:`defer_signals` before the attach counts as arrived.
    """

    def __init__(self, on_interrupt: Optional[Callable[[Engine], None]] = None, every: int = 1) -> None:
        self.on_interrupt = on_interrupt
        self.every = max(int(every), 1)
        self.signal: Optional[int] = None

    def _on_signal(self, signum, _frame) -> None:
        self.signal = signum

    def _due(self, _engine: Engine, iteration: int) -> bool:
        """Event filter: alone every step; under DDP every ``every`` steps (a collective)."""
        return idist.get_world_size() == 1 or iteration % self.every == 0

    def __call__(self, engine: Engine) -> None:
        interrupted = self.signal is not None
        if idist.get_world_size() > 1:  # every rank stops at the same step
            interrupted = float(idist.all_reduce(torch.tensor(float(interrupted)))) > 0
            if interrupted and self.signal is None:
                self.signal = signal.SIGTERM
        if not interrupted:
            return
        if self.on_interrupt is not None:
            self.on_interrupt(engine)
        logger.error("Interrupted by signal %s at iteration %d; a resume point was written. "
                     "Continue with --resume auto.", self.signal, engine.state.iteration)
        engine.terminate()

    def attach(self, trainer: Engine) -> None:
        global _pending
        if _pending is not None:  # held since defer_signals(): acted on at the first check
            self.signal, _pending = _pending, None
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread
                pass
        trainer.add_event_handler(Events.ITERATION_COMPLETED(event_filter=self._due), self)
