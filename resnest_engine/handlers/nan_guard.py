"""Stop every process together when the loss goes NaN/Inf."""
from __future__ import annotations

import logging
from typing import Callable, Optional

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from ..engine.events import TrainEvents, register_train_events

logger = logging.getLogger("resnest_engine")

__all__ = ["NanGuard"]


class NanGuard:
    """Accumulates a non-finite-loss flag on the device each step (no host sync) and checks it,
    all-reduced over processes (one host read), every ``every`` steps, at epoch ends, at the end
    of the run, and whenever ``force(engine)`` is true (e.g. a resume point is due) or
    :meth:`check` is called (the standard writers call it before every checkpoint and the final
    weights): none is written after an unchecked step, so ``every`` trades only how soon a bad
    run stops (at most ``every - 1`` wasted steps) against one sync per ``every`` steps. The
    default, 50, is ``LOGGING.LOG_EVERY``'s: the checks fall on log iterations, which read the
    device anyway.

    On a bad loss it logs the iteration and remedies, sets :attr:`detected`, fires
    :attr:`TrainEvents.NAN_DETECTED` and terminates the run without ``COMPLETED``
    (``terminate(skip_completed=True)``). The standard writers check :attr:`detected`, so nothing
    is written afterwards and the last resume point is the last good one. fp16 ``GradScaler``
    skips are not faults: only the loss counts.
    """

    def __init__(self, every: int = 50, force: Optional[Callable[[Engine], bool]] = None) -> None:
        self.every = max(int(every), 1)
        self.force = force
        self.detected = False
        self._bad: Optional[torch.Tensor] = None
        self._trainer: Optional[Engine] = None

    def _accumulate(self, engine: Engine) -> None:
        loss = engine.state.output["loss"] if isinstance(engine.state.output, dict) else engine.state.output
        bad = ~torch.isfinite(loss.detach()).all()
        self._bad = bad if self._bad is None else self._bad | bad

    def _due(self, engine: Engine, iteration: int) -> bool:
        """Event filter of the check: every ``every`` steps, epoch ends, and when ``force``."""
        return (iteration % self.every == 0 or iteration % engine.state.epoch_length == 0
                or (self.force is not None and self.force(engine)))

    def check(self, engine: Optional[Engine] = None) -> bool:
        """Check the steps since the last check now (all-reduced: every rank calls it); True when
        a bad loss was found (the run is then terminated). ``engine``: the trainer (default: the
        one the guard is attached to). Nothing to check (no step since the last check) reads
        nothing."""
        if self._bad is None:
            return self.detected
        engine = engine if engine is not None else self._trainer
        flag = idist.all_reduce(self._bad.to(torch.float32))
        self._bad = None
        if float(flag) > 0:
            self.detected = True
            world = idist.get_world_size()
            logger.error(
                "Loss is NaN/Inf at iteration %d (epoch %d)%s; stopping. Try a lower OPTIMIZER.LR, "
                "longer OPTIMIZER.WARMUP_EPOCHS, TRAINING.CLIP_GRAD or AMP off; the last resume "
                "point is the last good state.", engine.state.iteration, engine.state.epoch,
                f" on at least one of {world} processes" if world > 1 else "")
            engine.fire_event(TrainEvents.NAN_DETECTED)
            engine.terminate(skip_completed=True)
        return self.detected

    def attach(self, trainer: Engine) -> None:
        """Place the guard on ``ITERATION_COMPLETED`` (before any writer there): the flag is
        accumulated every step, checked when :meth:`_due` lets the event through."""
        register_train_events(trainer)
        self.detected = False
        self._bad, self._trainer = None, trainer
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        trainer.add_event_handler(Events.ITERATION_COMPLETED(event_filter=self._due), self.check)
        # a run ended between checks (a handler's terminate()) is checked too
        trainer.add_event_handler(Events.COMPLETED | Events.TERMINATE, self.check)
