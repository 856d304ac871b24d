"""Linear DropBlock ramp: probability 0 at the first step, the target at the last."""
from __future__ import annotations

from ignite.engine import Engine
from torch import nn

from ..models.dropblock import set_dropblock_prob

__all__ = ["DropBlockRamp", "dropblock_prob_at"]


def dropblock_prob_at(step: int, total_steps: int, target: float) -> float:
    """Probability at 0-based optimizer step ``step`` of ``total_steps``."""
    if total_steps <= 1:
        return target
    return target * min(step, total_steps - 1) / (total_steps - 1)


class DropBlockRamp:
    """Callable for ``ITERATION_STARTED``: sets the model's DropBlock probability from the
    trainer's iteration; ``prob`` is the value it set last.

    Stateless (a function of ``state.iteration``), so a resumed run continues the ramp exactly::

        trainer.add_event_handler(Events.ITERATION_STARTED, DropBlockRamp(model, 0.1, total_steps))
    """

    def __init__(self, model: nn.Module, target: float, total_steps: int) -> None:
        self.model, self.target, self.total_steps = model, target, total_steps
        self.prob = 0.0

    def __call__(self, engine: Engine) -> None:
        self.prob = dropblock_prob_at(engine.state.iteration - 1, self.total_steps, self.target)
        set_dropblock_prob(self.model, self.prob)
