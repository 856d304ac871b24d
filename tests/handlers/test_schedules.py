"""LR schedules: closed-form values, the same values from a real trainer, exact resume."""
from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Events

from tests.support.standard_setup import standard_handlers
from resnest_engine.engine import create_trainer
from resnest_engine.handlers import attach_standard_handlers, create_lr_scheduler
from resnest_engine.handlers.schedules import simulate_lr

LR, MIN_LR, GAMMA, POWER = 0.4, 0.01, 0.1, 0.9


def expected_lr(name, i, total, warmup, f, milestones=()):
    """The documented schedule, written out independently of the implementation."""
    if i < warmup:
        return LR * (f + (1 - f) * i / warmup)
    t, d = i - warmup, total - warmup
    if name == "cos":
        return MIN_LR + (LR - MIN_LR) * (1 + math.cos(math.pi * t / d)) / 2
    if name == "linear":
        return LR + (MIN_LR - LR) * t / d
    if name == "poly":
        return MIN_LR + (LR - MIN_LR) * (1 - t / d) ** POWER
    if name == "step":
        return max(LR * GAMMA ** sum(1 for m in milestones if m <= i), MIN_LR)
    raise AssertionError(name)


def _opt():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=123.0, momentum=0.9)


CASES = [(name, w, f) for name in ("cos", "step", "linear", "poly")
         for (w, f) in ((0, 0.0), (4, 0.0), (4, 0.25))]


@pytest.mark.parametrize("name,warmup,factor", CASES)
def test_simulate_lr_matches_closed_form(name, warmup, factor):
    total, milestones = 20, (10, 15)
    opt = _opt()
    sched = create_lr_scheduler(opt, name, LR, total, warmup, factor, MIN_LR, milestones, GAMMA, POWER)
    values = simulate_lr(sched, total)
    expected = [expected_lr(name, i, total, warmup, factor, milestones) for i in range(total)]
    # float64 both sides, formulas written apart: rel 1e-9 = 4.5e6 eps64, abs 1e-12 for 0.0
    assert values == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # Spot checks at chosen steps.
    if warmup:
        assert values[0] == pytest.approx(LR * factor)
        assert values[warmup // 2] == pytest.approx(LR * (factor + (1 - factor) * 0.5))
    assert values[warmup] == pytest.approx(LR)  # decay starts at the peak
    if name == "step":
        assert values[9] == pytest.approx(LR) and values[10] == pytest.approx(LR * GAMMA)
        assert values[15] == pytest.approx(MIN_LR)  # 0.004 is floored at min_lr
    # simulate_lr leaves the optimizer and the scheduler as they were.
    assert opt.param_groups[0]["lr"] == 123.0
    assert simulate_lr(sched, total) == values


def test_step_milestone_at_end_of_warmup_still_decays():
    opt = _opt()
    sched = create_lr_scheduler(opt, "step", LR, 12, 4, 0.0, 0.0, milestones=(2, 4, 8), gamma=GAMMA)
    values = simulate_lr(sched, 12)
    # Milestones inside/at the end of warmup apply from the first post-warmup step on.
    assert values[4] == pytest.approx(LR * GAMMA ** 2)
    assert values[8] == pytest.approx(LR * GAMMA ** 3)


@pytest.mark.parametrize("name,warmup,factor", [("cos", 3, 0.1), ("step", 0, 0.0),
                                                ("linear", 3, 0.0), ("poly", 2, 0.5)])
def test_trainer_sees_scheduled_lr_each_iteration(name, warmup, factor, tiny_model, loader):
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=999.0)
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy)
    epochs, el = 3, 4
    total = epochs * el
    milestones = (5, 9)
    sched = create_lr_scheduler(opt, name, LR, total, warmup, factor, MIN_LR, milestones, GAMMA, POWER)
    simulated = simulate_lr(sched, total)
    trainer.add_event_handler(Events.ITERATION_STARTED, sched)
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED,
                              lambda e: seen.append(opt.param_groups[0]["lr"]))
    trainer.run(loader(n=16, batch_size=4), max_epochs=epochs)
    assert len(seen) == total
    assert seen == pytest.approx(simulated, rel=1e-12)
    assert seen == pytest.approx([expected_lr(name, i, total, warmup, factor, milestones)
                                  for i in range(total)], rel=1e-9, abs=1e-12)


def test_cosine_does_not_restart_within_run(tiny_model, loader):
    """Through the standard handlers: warmup epochs, then one cosine over the rest of the run."""
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy)
    opts = dict(epochs=4, epoch_length=4, lr=LR, warmup_epochs=1, min_lr=0.0,
                           lr_scheduler="cos", log_every=1000, progress_bar="off")
    attach_standard_handlers(trainer, standard_handlers(trainer, model, opt, None, **opts))
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED,
                              lambda e: seen.append(opt.param_groups[0]["lr"]))
    trainer.run(loader(n=16, batch_size=4), max_epochs=4)
    assert len(seen) == 16
    assert seen[:4] == pytest.approx([0.0, LR / 4, LR / 2, 3 * LR / 4])
    decay = seen[4:]
    assert decay[0] == pytest.approx(LR)
    assert all(b < a for a, b in zip(decay, decay[1:])), decay  # strictly decreasing: no restart
    assert decay[-1] == pytest.approx(LR * (1 + math.cos(math.pi * 11 / 12)) / 2)


@pytest.mark.parametrize("name,warmup", [("cos", 3), ("step", 0), ("linear", 2), ("poly", 3)])
def test_scheduler_state_dict_resumes_exactly(name, warmup):
    total, cut = 15, 5
    full_opt = _opt()
    full = create_lr_scheduler(full_opt, name, LR, total, warmup, 0.1, MIN_LR, (6, 11), GAMMA, POWER)
    reference = []
    for _ in range(total):
        full(None)
        reference.append(full_opt.param_groups[0]["lr"])

    opt_a = _opt()
    a = create_lr_scheduler(opt_a, name, LR, total, warmup, 0.1, MIN_LR, (6, 11), GAMMA, POWER)
    for _ in range(cut):
        a(None)
    state = a.state_dict()
    opt_b = _opt()
    b = create_lr_scheduler(opt_b, name, LR, total, warmup, 0.1, MIN_LR, (6, 11), GAMMA, POWER)
    b.load_state_dict(state)
    resumed = []
    for _ in range(total - cut):
        b(None)
        resumed.append(opt_b.param_groups[0]["lr"])
    assert resumed == reference[cut:]  # the same formula at the same event index: bitwise


def test_create_lr_scheduler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="total_steps"):
        create_lr_scheduler(_opt(), "cos", LR, 0)
    with pytest.raises(ValueError, match="warmup_steps"):
        create_lr_scheduler(_opt(), "cos", LR, 10, -1)


@pytest.mark.parametrize("warmup", [10, 25])
def test_warmup_longer_than_the_run_is_cut_to_it(warmup):
    """The LR follows the full warmup's line for the whole run and never reaches the peak."""
    sched = create_lr_scheduler(_opt(), "cos", LR, 10, warmup, 0.1)
    values = simulate_lr(sched, 10)
    assert values == pytest.approx([LR * (0.1 + 0.9 * i / warmup) for i in range(10)])
    assert max(values) < LR
    with pytest.raises(ValueError, match="unknown LR schedule"):
        create_lr_scheduler(_opt(), "exp", LR, 10)
