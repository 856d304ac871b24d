"""Deployment paths: torch.export, channels_last memory format, torch.compile training."""
from __future__ import annotations

import copy
import shutil

import pytest
import torch
import torch.nn.functional as F

from resnest_engine.models import get_model


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def resnest14():
    torch.manual_seed(0)
    model = get_model("resnest14")
    # Non-trivial BN statistics so eval mode exercises the running stats.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def test_torch_export_matches_eager(resnest14):
    model = resnest14.eval()
    x = _x(1, 3, 64, 64)
    ep = torch.export.export(model, (x,))
    with torch.no_grad():
        expected = model(x)
        out = ep.module()(x)
        other = _x(1, 3, 64, 64, seed=1)
        out_other = ep.module()(other)
        expected_other = model(other)
    # The program runs eager's ATen kernels: bitwise in fact. Logits ~0.36 (one ulp <= 4.3e-8):
    # atol 1e-6 >= 23 eps * max|logit|, rtol 1e-5 = 84 eps.
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_other, expected_other, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["resnest14", "resnest50_fast_4s2x40d", "resnet50"])
def test_channels_last_same_outputs(name):
    torch.manual_seed(0)
    model = get_model(name).eval()
    x = _x(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        out = model_cl(x.contiguous(memory_format=torch.channels_last))
    # Relative to the logits' scale: elementwise rtol is meaningless for logits near zero.
    # Other conv algorithms: measured <= 7 eps32 * max|logit|; 1e-4 is 840 eps32.
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())

    # Train mode, gradients too.
    model_cl.train()
    out = model_cl(x.contiguous(memory_format=torch.channels_last))
    F.cross_entropy(out, torch.tensor([0, 1])).backward()
    assert all(torch.isfinite(p.grad).all() for p in model_cl.parameters())


def _have_compiler() -> bool:
    return any(shutil.which(c) for c in ("gcc", "cc", "clang", "g++"))


def _split_attention_block_net(resnest14):
    """resnest14's stride-2 split-attention bottleneck (avd pool, radix-2 split attention,
    avg-pool shortcut) under a small classifier head: every op of ours that the standard layers
    around it do not have."""
    torch.manual_seed(1)
    return torch.nn.Sequential(copy.deepcopy(resnest14.layer2[0]), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(512, 10))


# Two halves of "the model trains under torch.compile as in eager": the whole resnest14 through
# dynamo and AOTAutograd as ONE graph (fullgraph: no graph break anywhere in the model), and
# inductor's generated CPU kernels on the split-attention bottleneck. Inductor on the whole
# model compiled about 130 CPU-seconds of C++ on a cold cache; the bottleneck holds every op of
# ours that inductor sees in the model, the rest being the stem's and classifier's standard ops.
@pytest.mark.slow
@pytest.mark.parametrize("part, backend", [("model", "aot_eager"), ("split_attention_block", "inductor")])
def test_compiled_training_step_matches_eager(resnest14, part, backend):
    """One SGD step through torch.compile matches eager."""
    if backend == "inductor" and not _have_compiler():
        pytest.skip("torch.compile (inductor) needs a C/C++ compiler for CPU kernels")
    if part == "model":
        base, x = resnest14, _x(4, 3, 32, 32)
    else:
        base, x = _split_attention_block_net(resnest14), _x(4, 256, 8, 8)
    eager = copy.deepcopy(base).train()
    compiled_model = copy.deepcopy(base).train()
    target = torch.tensor([5, 7, 1, 2])
    losses, grads = [], []
    compiled = torch.compile(compiled_model, backend=backend, fullgraph=True)
    # compile in this process: a pool of compile workers would each import torch first
    with torch._inductor.config.patch(compile_threads=1):
        for model, fn in ((eager, eager), (compiled_model, compiled)):
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
            loss = F.cross_entropy(fn(x), target)
            loss.backward()
            grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
            opt.step()
            losses.append(loss.detach())

    # Inductor fuses and reorders: loss ~2.3, rtol 1e-4 = 840 eps32.
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-5)
    scale = max(g.abs().max() for g in grads[0].values())
    for name, g_eager in grads[0].items():
        g_comp = grads[1][name]
        if name.endswith("conv2.fc1.bias"):
            # A bias right before a train-mode BatchNorm has zero gradient; both are noise
            # (rounding of the largest gradients: 1e-5 * scale = 84 eps32 of it).
            assert g_comp.abs().max() < 1e-5 * scale and g_eager.abs().max() < 1e-5 * scale
            continue
        # 1e-3 of the tensor's largest gradient: 8400 eps32 (another forward rounding moves a
        # ReLU input near zero to the other side, which no ulp count bounds).
        err = (g_comp - g_eager).abs().max() / g_eager.abs().max()
        assert err < 1e-3, f"{name}: rel grad err {err:.2e}"
    # The optimizer step ran on the compiled model's gradients (first momentum step = plain SGD).
    # SGD may fuse the multiply into the add (<= 1.5 ulps apart): fp32 defaults, rtol 11 eps.
    initial = base.state_dict()
    for name, p in compiled_model.named_parameters():
        torch.testing.assert_close(p.detach(), initial[name] - 0.1 * grads[1][name])
