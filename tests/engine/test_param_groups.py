"""No weight decay on norm weights and biases, found by module type (deep stem, downsample BN)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from resnest_engine.engine import create_optimizer, param_groups
from resnest_engine.models import get_model


@pytest.fixture(scope="module")
def resnest14():
    return get_model("resnest14", num_classes=10)


def _names(model, group):
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_norm_weights_and_biases_not_decayed(resnest14):
    model = resnest14
    decay, no_decay = param_groups(model, 1e-4)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    decayed, not_decayed = _names(model, decay), _names(model, no_decay)
    # The BNs that name-matching on "bn" misses, and the ones it finds.
    for name in ("conv1.1.weight", "conv1.1.bias", "conv1.4.weight", "conv1.4.bias",
                 "bn1.weight", "bn1.bias", "layer1.0.downsample.2.weight",
                 "layer4.0.downsample.2.weight", "layer1.0.bn1.weight", "layer2.0.conv2.bn0.weight",
                 "layer2.0.conv2.bn1.weight", "layer2.0.conv2.fc1.bias", "layer2.0.conv2.fc2.bias",
                 "fc.bias"):
        assert name in not_decayed, name
    norm_params, conv_linear_weights, biases = set(), set(), set()
    for mname, m in model.named_modules():
        for pname, _ in m.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                norm_params.add(full)
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and pname == "weight":
                conv_linear_weights.add(full)
            if pname == "bias":
                biases.add(full)
    assert norm_params and conv_linear_weights and biases
    assert not_decayed == norm_params | biases
    assert decayed == conv_linear_weights
    assert "fc.weight" in decayed and "conv1.0.weight" in decayed
    assert "layer1.0.downsample.1.weight" in decayed and "layer3.0.conv2.conv.weight" in decayed
    all_params = dict(model.named_parameters())
    assert len(decayed) + len(no_decay["params"]) == len(all_params)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert not decayed & not_decayed


def test_other_norm_types_frozen_and_shared_parameters():
    lin = nn.Linear(4, 4)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.LayerNorm(4),
                          lin, lin)  # shared module: listed once
    model[0].bias.requires_grad_(False)
    decay, no_decay = param_groups(model, 0.05)
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(lin.weight)}
    assert {id(p) for p in no_decay["params"]} == {
        id(model[1].weight), id(model[1].bias), id(model[3].weight), id(model[3].bias), id(lin.bias)}


def test_no_bn_wd_false_is_one_group(resnest14):
    groups = param_groups(resnest14, 1e-4, no_bn_wd=False)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 1e-4
    assert len(groups[0]["params"]) == len(list(resnest14.parameters()))


def test_create_optimizer(resnest14):
    groups = param_groups(resnest14, 1e-4)
    opt = create_optimizer(groups, "nesterov", lr=0.1, weight_decay=5e-4)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"]
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]  # groups keep their own
    sgd = create_optimizer(resnest14.parameters(), "sgd", lr=0.1, momentum=0.8)
    assert not sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.8
    adamw = create_optimizer(groups, "adamw", lr=1e-3, betas=(0.9, 0.95))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.9, 0.95)
    with pytest.raises(ValueError, match="unknown optimizer"):
        create_optimizer(groups, "lamb", lr=0.1)
