"""The training step: output dict, gradient accumulation, AMP on CPU, clipping."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Engine
from torch import nn

from resnest_engine.engine import SeededDeterministicEngine, create_trainer


def _bn_free_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(6, 10))


def _one_batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _step_once(model, batch, **kwargs):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)
    trainer = create_trainer(model, opt, F.cross_entropy, **kwargs)
    trainer.run([batch], max_epochs=1)
    return trainer


def test_output_dict(tiny_model):
    model = tiny_model()
    batch = _one_batch()
    trainer = _step_once(model, batch)
    out = trainer.state.output
    assert set(out) == {"loss", "batch_size", "y_pred", "y", "soft_targets"}
    assert out["soft_targets"] is False  # no batch transform: hard labels
    assert out["loss"].ndim == 0 and out["loss"].dtype == torch.float32
    assert out["batch_size"] == 16 and isinstance(out["batch_size"], int)
    assert out["y_pred"].shape == (16, 10) and not out["y_pred"].requires_grad
    assert torch.equal(out["y"], batch[1])
    assert trainer.state.scaler is None
    assert type(trainer) is Engine


@pytest.mark.parametrize("n,accum", [(16, 4), (10, 4), (3, 8)])
def test_grad_accumulation_equals_one_big_step(n, accum):
    batch = _one_batch(n)
    ref, acc = _bn_free_model(), _bn_free_model()
    t_ref = _step_once(ref, batch, grad_accum=1)
    t_acc = _step_once(acc, batch, grad_accum=accum)
    # fp32 weights |p| <= 0.4, steps ~lr = 0.1: micro-batches sum the gradient in another order.
    # Measured <= 1.4 eps * (|p| + lr); rtol 1e-5 = 84 eps, atol 1e-7 = 8 eps * lr.
    for (name, a), b in zip(ref.named_parameters(), acc.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7, msg=name)
    assert t_acc.state.output["batch_size"] == n
    assert t_acc.state.output["y_pred"].shape == (n, 10)
    torch.testing.assert_close(t_acc.state.output["loss"], t_ref.state.output["loss"],
                               rtol=1e-5, atol=1e-7)  # loss ~2.4: 84 eps (equal in fact)


def test_grad_accumulation_two_steps_bitwise_close():
    """Two optimizer steps (momentum state involved) still agree."""
    batches = [_one_batch(12, seed=s) for s in (1, 2)]
    ref, acc = _bn_free_model(), _bn_free_model()
    for model, k in ((ref, 1), (acc, 3)):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        create_trainer(model, opt, F.cross_entropy, grad_accum=k).run(batches, max_epochs=1)
    for a, b in zip(ref.parameters(), acc.parameters()):  # as above: >= 8 eps * (|p| + lr)
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


def test_bad_arguments():
    model = _bn_free_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="grad_accum"):
        create_trainer(model, opt, F.cross_entropy, grad_accum=0)
    with pytest.raises(ValueError, match="amp"):
        create_trainer(model, opt, F.cross_entropy, amp="fp8")


def test_bf16_autocast_step_on_cpu(tiny_model):
    model = tiny_model()
    before = copy.deepcopy(model.state_dict())
    trainer = _step_once(model, _one_batch(), amp="bf16")
    out = trainer.state.output
    assert trainer.state.scaler is None
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    assert out["y_pred"].dtype == torch.bfloat16  # the forward ran under autocast
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_fp16_on_cpu_uses_grad_scaler():
    model = _bn_free_model()
    try:
        trainer = _step_once(model, _one_batch(), amp="fp16", clip_grad=5.0)
    except (RuntimeError, NotImplementedError) as e:  # pragma: no cover - depends on the CPU build
        pytest.skip(f"fp16 autocast/GradScaler unsupported on this CPU build: {e}")
    assert isinstance(trainer.state.scaler, torch.amp.GradScaler)
    assert trainer.state.scaler.get_scale() > 0
    out = trainer.state.output
    assert torch.isfinite(out["loss"]) and torch.isfinite(out["grad_norm"])
    assert out["y_pred"].dtype == torch.float16
    # The given scaler is used as is.
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    trainer = _step_once(_bn_free_model(), _one_batch(), amp="fp16", scaler=scaler)
    assert trainer.state.scaler is scaler


def test_clip_grad_reports_pre_clip_norm_and_clips(tiny_model):
    c = 0.02
    batch = _one_batch()
    model = tiny_model()
    # Reference pre-clip gradient norm from a plain forward/backward on a copy.
    ref = copy.deepcopy(model).train()
    F.cross_entropy(ref(batch[0]), batch[1]).backward()
    pre = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in ref.parameters()]))
    assert pre > 5 * c
    trainer = _step_once(model, batch, clip_grad=c)
    out = trainer.state.output
    # the same gradients, norms summed in another order: rtol 1e-5 = 84 eps of the norm
    torch.testing.assert_close(out["grad_norm"], pre, rtol=1e-5, atol=1e-7)
    # Gradients are left in place after the step: these are the clipped ones.
    post = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    # clipping scales by c / (norm + 1e-6): post = c * norm / (norm + 1e-6), norm > 0.1
    assert float(post) <= c + 1e-6  # 1e-6 = 420 eps32 of c
    assert float(post) == pytest.approx(c, rel=1e-4)  # below c by < 1e-5 relative


def test_no_grad_norm_without_clipping(tiny_model):
    assert "grad_norm" not in _step_once(tiny_model(), _one_batch()).state.output


def test_prepare_batch_and_channels_last(tiny_model):
    model = tiny_model().to(memory_format=torch.channels_last)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8)
    y = torch.randint(0, 10, (4,))

    def prepare(batch, device, non_blocking):
        return batch["img"].to(device).float() / 255, batch["label"].to(device)

    trainer = _step_once(model, {"img": x, "label": y}, prepare_batch=prepare, channels_last=True)
    assert seen[0].dtype == torch.float32 and float(seen[0].max()) <= 1.0
    assert seen[0].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(trainer.state.output["y"], y)


def test_deterministic_engine_pins_seed(tiny_model, loader):
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_trainer(model, opt, F.cross_entropy, deterministic=True, seed=1234)
    assert isinstance(trainer, SeededDeterministicEngine)
    trainer.run(loader(n=8, batch_size=4), max_epochs=1)
    assert trainer.state.seed == 1234
    sd = trainer.state_dict()
    assert sd["seed"] == 1234
    other = create_trainer(model, opt, F.cross_entropy, deterministic=True, seed=7)
    other.load_state_dict(sd)
    assert other.state.seed == 1234 and other.state.iteration == 2
