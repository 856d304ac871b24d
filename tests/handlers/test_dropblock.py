"""Linear DropBlock ramp: values, and the model's DropBlock.p as training proceeds."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events
from torch import nn

from tests.support.standard_setup import standard_handlers
from resnest_engine.engine import create_trainer
from resnest_engine.handlers import DropBlockRamp, attach_standard_handlers
from resnest_engine.handlers.dropblock import dropblock_prob_at
from resnest_engine.models import get_model
from resnest_engine.models.dropblock import DropBlock, set_dropblock_prob


def test_dropblock_prob_at_values():
    assert dropblock_prob_at(0, 11, 0.1) == 0.0
    assert dropblock_prob_at(5, 11, 0.1) == pytest.approx(0.05)
    assert dropblock_prob_at(10, 11, 0.1) == pytest.approx(0.1)
    assert dropblock_prob_at(25, 11, 0.1) == pytest.approx(0.1)  # clamped past the end
    assert dropblock_prob_at(0, 1, 0.2) == 0.2  # a one-step run uses the target
    values = [dropblock_prob_at(i, 100, 0.1) for i in range(100)]
    assert all(b > a for a, b in zip(values, values[1:]))


def _db_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), DropBlock(), nn.ReLU(), DropBlock(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))


def test_ramp_sets_model_p_each_iteration(loader):
    model = _db_model()
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), F.cross_entropy)
    total = 9
    ramp = DropBlockRamp(model, 0.2, total)
    trainer.add_event_handler(Events.ITERATION_STARTED, ramp)
    seen = {}

    def record(engine):  # during the step, both modules hold the ramp's value
        seen[engine.state.iteration] = (model[1].p, model[3].p, ramp.prob)

    trainer.add_event_handler(Events.ITERATION_STARTED, record)
    trainer.run(loader(n=12, batch_size=4), max_epochs=3)
    assert sorted(seen) == list(range(1, total + 1))
    for it, (p1, p3, state_p) in seen.items():
        expected = 0.2 * (it - 1) / (total - 1)
        assert p1 == pytest.approx(expected) and p3 == p1 and state_p == p1
    assert seen[1][0] == 0.0 and seen[5][0] == pytest.approx(0.1) and seen[9][0] == pytest.approx(0.2)


def test_ramp_continues_after_resume(loader):
    model = _db_model()
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), F.cross_entropy)
    trainer.add_event_handler(Events.ITERATION_STARTED, DropBlockRamp(model, 0.2, 9))
    trainer.load_state_dict({"iteration": 6, "epoch_length": 3, "max_epochs": 3})
    seen = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append(model[1].p))
    trainer.run(loader(n=12, batch_size=4))
    assert seen == pytest.approx([0.2 * i / 8 for i in (6, 7, 8)])


def test_standard_handlers_ramp_dropblock(loader):
    model = _db_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_trainer(model, opt, F.cross_entropy)
    opts = dict(epochs=2, epoch_length=3, lr=0.1, dropblock_prob=0.1, log_every=1000,
                           progress_bar="off")
    attach_standard_handlers(trainer, standard_handlers(trainer, model, opt, None, **opts))
    seen = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append(model[3].p))
    trainer.run(loader(n=12, batch_size=4), max_epochs=2)
    assert seen == pytest.approx([0.1 * i / 5 for i in range(6)])


def test_resnest_has_dropblock_modules_in_stages_3_and_4():
    model = get_model("resnest14", num_classes=10, dropblock_prob=0.1)
    blocks = {name.split(".")[0] for name, m in model.named_modules() if isinstance(m, DropBlock)}
    assert blocks == {"layer3", "layer4"}
    n = set_dropblock_prob(model, 0.07)
    assert n == sum(isinstance(m, DropBlock) for m in model.modules()) > 0
    assert all(m.p == 0.07 for m in model.modules() if isinstance(m, DropBlock))
    assert set_dropblock_prob(get_model("resnest14", num_classes=10), 0.1) == 0
