"""EMA of the weights: closed form after k steps, evaluated beside the raw model."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events
from torch import nn

from tests.support.standard_setup import standard_handlers
from resnest_engine.engine import create_evaluator, create_trainer
from resnest_engine.handlers import (create_ema, attach_standard_handlers,
                                     read_checkpoint)


@pytest.mark.parametrize("decay", [0.9, 0.5])
def test_ema_closed_form(decay, loader):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    trainer = create_trainer(model, opt, F.cross_entropy)
    w0 = [p.detach().clone() for p in model.parameters()]
    ema = create_ema(model, decay)
    ema.attach(trainer, name="ema_momentum", event=Events.ITERATION_COMPLETED)
    assert trainer.state.ema_momentum == pytest.approx(1 - decay)
    weights = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED,
                              lambda e: weights.append([p.detach().clone() for p in model.parameters()]))
    k = 5
    trainer.run(loader(n=8 * k, batch_size=8), max_epochs=1)
    assert len(weights) == k
    # ema_k = d^k w_0 + sum_t (1 - d) d^(k - t) w_t
    for i, e in enumerate(ema.ema_model.parameters()):
        expected = decay ** k * w0[i].double()
        for t, w in enumerate(weights, start=1):
            expected = expected + (1 - decay) * decay ** (k - t) * w[i].double()
        # 5 fp32 EMA updates (each rounded) against float64, weights |w| <= 1.5: measured <= 0.33
        # eps32 * max|w|; atol 1e-6 >= 5.7 such units, rtol 1e-5 = 84 eps32
        torch.testing.assert_close(e.double(), expected, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(e, weights[-1][i])  # really an average, not a copy
    assert not ema.ema_model.training


def test_ema_decay_validated(tiny_model):
    model = tiny_model()
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError):
            create_ema(model, bad)


def test_ema_validated_beside_raw(tmp_path, tiny_model, loader):
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    trainer = create_trainer(model, opt, F.cross_entropy)
    val = loader(n=20, batch_size=8, seed=5)
    opts = dict(epochs=2, epoch_length=4, lr=0.2, output_dir=str(tmp_path),
                           ema_decay=0.8, log_every=1000, progress_bar="off", tensorboard=False)
    handlers = standard_handlers(trainer, model, opt, val, **opts)
    attach_standard_handlers(trainer, handlers)
    assert set(handlers.evaluators) == {"raw", "ema"}
    trainer.run(loader(n=16, batch_size=4), max_epochs=2)
    results = handlers.validation.results
    assert set(results) == {"raw", "ema"}
    for name in ("raw", "ema"):
        assert set(results[name]) == {"top1", "top5", "loss"}
    assert results["raw"]["loss"] != results["ema"]["loss"]
    # The numbers are those of each model evaluated on its own: the same evaluator code on the
    # same weights and data, bitwise by construction (the tolerances are slack).
    for name, net in (("raw", model), ("ema", handlers.ema.ema_model)):
        ev = create_evaluator(net)
        ev.run(val)
        assert ev.state.metrics["loss"] == pytest.approx(results[name]["loss"], rel=1e-6)
        assert ev.state.metrics["top1"] == pytest.approx(results[name]["top1"])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["weights"] == "ema"
    assert metrics["loss"] == pytest.approx(results["ema"]["loss"])
    assert metrics["history"][-1]["ema_loss"] == pytest.approx(results["ema"]["loss"])
    assert metrics["history"][-1]["loss"] == pytest.approx(results["raw"]["loss"])
    # The EMA weights are checkpointed and are the final weights.
    ckpt = read_checkpoint(sorted((tmp_path / "checkpoints").glob("resume-*.pt"))[-1])
    for k, v in handlers.ema.ema_model.state_dict().items():
        assert torch.equal(ckpt["ema"][k], v), k
    final = torch.load(tmp_path / "model_weights.pt", weights_only=True)
    for k, v in handlers.ema.ema_model.state_dict().items():
        assert torch.equal(final[k], v), k
