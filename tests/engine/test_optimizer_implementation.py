"""OPTIMIZER.FUSED: auto is faster on the CPU and bitwise torch's default; a resume keeps it."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from resnest_engine.config import ConfigError, load_config
from resnest_engine.engine import create_optimizer, param_groups
from resnest_engine.engine.optim import update_kernel_kwargs as implementation
from tests.support.floats import assert_close_ulps


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 6 * 6, 5))


def _train(model, optimizer, steps=6, start=0):
    g = torch.Generator().manual_seed(1)
    for step in range(start + steps):
        x, y = torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 5, (4,), generator=g)
        if step < start:
            continue
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("name", ["sgd", "nesterov", "adamw"])
def test_auto_is_bitwise_the_default_on_the_cpu(name):
    base = _model()
    results = {}
    for fused in (False, "auto"):
        model = copy.deepcopy(base)
        opt = create_optimizer(param_groups(model, 0.05), name, lr=0.1, weight_decay=0.05,
                               fused=fused)
        results[fused] = _train(model, opt)
        flags = {(g["foreach"], g["fused"]) for g in opt.param_groups}
        assert flags == ({(True, None)} if fused == "auto" else {(None, None)}), flags
    # Bitwise by construction: on the CPU torch's foreach ops loop over the tensors calling the
    # for-loop's own per-tensor kernels, in the same order.
    assert torch.equal(results[False], results["auto"])
    assert not torch.equal(results[False], torch.cat([p.detach().flatten()
                                                       for p in base.parameters()]))


def test_true_is_the_fused_kernel_and_adamw_differs_in_the_last_bits():
    base, lr = _model(), 0.01
    runs = {}
    for fused in (False, True):
        model = copy.deepcopy(base)
        opt = create_optimizer(param_groups(model, 0.05), "adamw", lr=lr, fused=fused)
        runs[fused] = _train(model, opt, steps=1)
    assert opt.param_groups[0]["fused"] is True
    # The fused kernel orders the update's operations its own way: some elements differ on any
    # CPU (92-112 of 1685 on the default, AVX2 and AVX512 paths).
    assert not torch.equal(runs[False], runs[True])
    # One step apart by rounding only (later steps amplify it: Adam divides gradients that are
    # nearly zero, e.g. a conv bias before BatchNorm, by their own tiny scale). fp32 weights up
    # to 1.01 and an update of size <= lr at step 1: each path rounds p twice (decay, update:
    # <= 1 ulp of |p|) and the update ~7 times (<= 3.5 eps * lr) -> 8 eps * (|p| + lr).
    # Measured: <= 1.1 eps * (|p| + lr); atol 1e-8 alone was below one ulp of p >= 0.125.
    assert_close_ulps(runs[True], runs[False], ulps=8, scale=lr)


def test_implementation_per_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert implementation("auto", cpu) == {"foreach": True}
    assert implementation("auto", cuda) == {}  # torch's own default there
    assert implementation(False, cpu) == {}
    assert implementation(True, cuda) == {"fused": True}


def test_a_loaded_state_keeps_the_chosen_implementation():
    """A checkpoint written by the for-loop brings foreach=None with its groups; the loaded
    optimizer keeps foreach and continues bitwise as the for-loop would have."""
    base = _model()
    old_model = copy.deepcopy(base)
    old = create_optimizer(param_groups(old_model, 0.05), "nesterov", lr=0.1, fused=False)
    _train(old_model, old, steps=3)
    state = copy.deepcopy(old.state_dict())
    assert state["param_groups"][0]["foreach"] is None

    new_model = copy.deepcopy(old_model)
    new = create_optimizer(param_groups(new_model, 0.05), "nesterov", lr=0.1, fused="auto")
    new.load_state_dict(state)
    assert all(g["foreach"] is True for g in new.param_groups)
    ref = _train(old_model, old, steps=3, start=3)
    # bitwise by construction: CPU foreach ops are loops of the for-loop's per-tensor kernels
    assert torch.equal(_train(new_model, new, steps=3, start=3), ref)


def test_fused_sgd_with_a_frozen_body_is_refused(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("FORMAT: resnest-engine/1\nTRAINING: {EPOCHS: 4}\n"
                   "OPTIMIZER: {FUSED: true, FREEZE_BODY_EPOCHS: 1}\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert str(info.value).startswith("OPTIMIZER.FUSED: true does not support "
                                      "OPTIMIZER.FREEZE_BODY_EPOCHS with nesterov")
    cfg.write_text("FORMAT: resnest-engine/1\nTRAINING: {EPOCHS: 4}\n"
                   "OPTIMIZER: {FUSED: auto, FREEZE_BODY_EPOCHS: 1}\n")
    assert load_config(cfg).OPTIMIZER.FUSED == "auto"
