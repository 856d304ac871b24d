"""Linear DropBlock ramp: probability 0 at the first step, the target at the last."""
from __future__ import annotations

from ignite.engine import Engine, Events
from torch import nn

from ..models.dropblock import set_dropblock_prob


def dropblock_prob_at(step: int, total_steps: int, target: float) -> float:
    """Probability at 0-based optimizer step ``step`` of ``total_steps``."""
    if total_steps <= 1:
        return target
    return target * min(step, total_steps - 1) / (total_steps - 1)


def attach_dropblock_ramp(trainer: Engine, model: nn.Module, target: float, total_steps: int) -> None:
    """Set the model's DropBlock probability before every step from the trainer's iteration.

    Stateless (a function of ``state.iteration``), so a resumed run continues the ramp exactly.
    """
    def _update(engine: Engine) -> None:
        engine.state.dropblock_prob = dropblock_prob_at(engine.state.iteration - 1, total_steps, target)
        set_dropblock_prob(model, engine.state.dropblock_prob)

    trainer.add_event_handler(Events.ITERATION_STARTED, _update)
