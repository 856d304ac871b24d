"""Per-step learning-rate schedules: linear warmup, then cosine / step / linear / poly decay.

Built from ignite's param schedulers so their ``state_dict`` checkpoints the position and a resume
continues exactly. ignite's ``CosineAnnealingScheduler`` is cyclical, so its cycle is sized to the
whole post-warmup run: it never restarts within training.
"""
from __future__ import annotations

from typing import List, Sequence

from ignite.engine import Engine
from ignite.handlers.param_scheduler import (
    ConcatScheduler,
    CosineAnnealingScheduler,
    ParamScheduler,
    PiecewiseLinear,
)
from torch.optim import Optimizer

__all__ = ["SCHEDULES", "LRScale", "PolyScheduler", "create_lr_scheduler", "simulate_lr"]

SCHEDULES = ("cos", "step", "linear", "poly")


class PolyScheduler(ParamScheduler):
    """``value = end + (start - end) * (1 - t / T) ** power`` for event index ``t`` in ``[0, T]``.

    ignite has no polynomial schedule; this is its documented extension point.
    """

    def __init__(self, optimizer: Optimizer, param_name: str, start_value: float,
                 end_value: float, num_steps: int, power: float = 0.9) -> None:
        super().__init__(optimizer, param_name)
        self.start_value, self.end_value = start_value, end_value
        self.num_steps, self.power = max(int(num_steps), 1), power
        self._state_attrs += ["start_value", "end_value", "num_steps", "power"]

    def get_param(self) -> float:
        t = min(self.event_index, self.num_steps) / self.num_steps
        return self.end_value + (self.start_value - self.end_value) * (1.0 - t) ** self.power


def _decay(optimizer: Optimizer, name: str, lr: float, min_lr: float, steps: int,
           milestones: Sequence[int], gamma: float, power: float) -> ParamScheduler:
    if name == "cos":
        return CosineAnnealingScheduler(optimizer, "lr", start_value=lr, end_value=min_lr,
                                        cycle_size=max(steps, 2))
    if name == "linear":
        return PiecewiseLinear(optimizer, "lr", [(0, lr), (max(steps, 1), min_lr)])
    if name == "poly":
        return PolyScheduler(optimizer, "lr", lr, min_lr, steps, power)
    if name == "step":
        # A step function from linear pieces: ignite only evaluates integer indices, so a ramp
        # from m - 1 to m is an exact jump at m.
        # Milestones at or before the decay's start (inside warmup) apply from its first step.
        value = lr
        for _ in (m for m in milestones if m <= 0):
            value = max(value * gamma, min_lr)
        points = [(0, value)]
        for m in sorted(milestones):
            if m <= 0:
                continue
            if m - 1 > points[-1][0]:
                points.append((m - 1, value))
            value = max(value * gamma, min_lr)
            points.append((m, value))
        if len(points) == 1:
            points.append((1, value))
        return PiecewiseLinear(optimizer, "lr", points)
    raise ValueError(f"unknown LR schedule {name!r}; expected one of {SCHEDULES}")


def create_lr_scheduler(
    optimizer: Optimizer,
    name: str,
    lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    warmup_start_factor: float = 0.0,
    min_lr: float = 0.0,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    power: float = 0.9,
) -> ParamScheduler:
    """An ignite scheduler of the LR over ``total_steps`` optimizer steps.

    Step ``i < warmup_steps``: ``lr * (f + (1 - f) * i / warmup_steps)`` with
    ``f = warmup_start_factor``; then the decay over the remaining steps. When
    ``warmup_steps >= total_steps`` the whole run is that warmup line, cut short (no decay). ``milestones`` (for
    ``step``) count steps from the start of training, warmup included.

    Args:
        optimizer: the optimizer whose groups' LR is scheduled.
        name: the schedule, one of ``SCHEDULES`` (``cos``, ``step``, ``linear``, ``poly``).
        lr: the peak learning rate.
        total_steps: the run's optimizer steps.
        warmup_steps: linear warmup steps at the start.
        warmup_start_factor: the warmup's first LR as a fraction of ``lr``.
        min_lr: the LR the decay ends at.
        milestones: ``step``'s decay points, in steps from the start of training.
        gamma: ``step``'s factor at each milestone.
        power: ``poly``'s exponent.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    warmup = None
    if warmup_steps > 0:
        warmup = PiecewiseLinear(optimizer, "lr",
                                 [(0, lr * warmup_start_factor), (warmup_steps, lr)])
    if warmup is not None and warmup_steps >= total_steps:
        # Warmup cut to the run: the LR follows the full warmup's line and stops short of the peak.
        return warmup
    decay_steps = total_steps - warmup_steps
    decay = _decay(optimizer, name, lr, min_lr, decay_steps,
                   [m - warmup_steps for m in milestones], gamma, power)
    if warmup_steps == 0:
        return decay
    return ConcatScheduler([warmup, decay], durations=[warmup_steps])


class LRScale:
    """Callable for ``ITERATION_STARTED``, after the LR scheduler: every param group with an
    ``lr_scale`` key (see ``param_groups(body_lr_scale=...)``) gets the schedule's value times
    that scale (ignite's schedulers set one value on every group)::

        trainer.add_event_handler(Events.ITERATION_STARTED, scheduler)
        trainer.add_event_handler(Events.ITERATION_STARTED, LRScale(optimizer))
    """

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer

    @staticmethod
    def needed(optimizer: Optimizer) -> bool:
        return any("lr_scale" in g for g in optimizer.param_groups)

    def __call__(self, _engine: Engine) -> None:
        for group in self.optimizer.param_groups:
            if "lr_scale" in group:
                group["lr"] = group["lr"] * group["lr_scale"]


def simulate_lr(scheduler: ParamScheduler, num_steps: int) -> List[float]:
    """The LR the scheduler would set at steps ``0 .. num_steps - 1``, without training.

    Runs a copy of the scheduler's state on the real optimizer and restores both afterwards.
    """
    saved_state = scheduler.state_dict()
    saved_lrs = [g["lr"] for g in scheduler.optimizer.param_groups]
    values = []
    try:
        for _ in range(num_steps):
            scheduler(None)
            values.append(scheduler.optimizer.param_groups[0]["lr"])
    finally:
        scheduler.load_state_dict(saved_state)
        for g, lr in zip(scheduler.optimizer.param_groups, saved_lrs):
            g["lr"] = lr
    return values
