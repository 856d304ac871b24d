"""Variant table, constructor options and the timm-like model surface (CPU, small inputs)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from resnest_engine.models import UnknownModelError, get_model, list_models, set_dropblock_prob
from resnest_engine.models.dropblock import DropBlock
from resnest_engine.models.registry import get_variant
from resnest_engine.models.resnet import Bottleneck

# Variants that neither timm nor torchvision implement: no reference to compare against.
FAST_WITHOUT_REFERENCE = [
    "resnest50_fast_1s1x64d", "resnest50_fast_2s1x64d", "resnest50_fast_4s1x64d",
    "resnest50_fast_1s2x40d", "resnest50_fast_2s2x40d",
]


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def resnest14():
    torch.manual_seed(0)
    return get_model("resnest14")


# -- variant table ---------------------------------------------------------------------------
def test_list_models_contents():
    names = list_models()
    assert names == sorted(names)
    for n in ["resnest14", "resnest26", "resnest50", "resnest101", "resnest200", "resnest269",
              "resnet50", "resnet50d", *FAST_WITHOUT_REFERENCE,
              "resnest50_fast_4s2x40d", "resnest50_fast_1s4x24d"]:
        assert n in names


@pytest.mark.parametrize("name", list_models())
def test_param_count_matches_published(name):
    variant = get_variant(name)
    with torch.device("meta"):  # no memory, no init cost
        model = get_model(name, num_classes=1000)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(n - variant.params_m) < 0.01, f"{name}: {n:.4f}M vs published {variant.params_m}M"


def test_model_metadata():
    with torch.device("meta"):
        model = get_model("resnest101", num_classes=10, final_drop=0.2)
    assert model.variant == "resnest101"
    assert model.model_args["num_classes"] == 10 and model.model_args["final_drop"] == 0.2
    assert model.data_config["crop_size"] == 256
    rebuilt_args = dict(model.model_args)
    with torch.device("meta"):
        from resnest_engine.models import ResNet
        rebuilt = ResNet(**rebuilt_args)
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


def test_unknown_model_suggests_close_name():
    with pytest.raises(UnknownModelError) as e:
        get_model("resnest5O")
    assert "resnest50" in str(e.value)
    assert isinstance(e.value, KeyError)
    with pytest.raises(KeyError, match="list_models"):
        get_model("efficientnet_b0")


# -- variants without a reference -------------------------------------------------------------
@pytest.mark.parametrize("name", FAST_WITHOUT_REFERENCE)
def test_fast_variant_forward_backward(name):
    torch.manual_seed(0)
    model = get_model(name, num_classes=7).train()
    out = model(_x(2, 3, 64, 64))
    assert out.shape == (2, 7)
    F.cross_entropy(out, torch.tensor([0, 6])).backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    assert model.layer1[0].conv2.radix == get_variant(name).kwargs["radix"]
    model.eval()
    with torch.no_grad():
        assert model(_x(1, 3, 64, 64)).shape == (1, 7)


# -- zero_init_last -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnest14", "resnet50"])
@pytest.mark.parametrize("zero", [True, False])
def test_zero_init_last(name, zero):
    model = get_model(name, zero_init_last=zero)
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == sum(get_variant(name).kwargs["layers"])
    for b in blocks:
        expected = torch.zeros_like(b.bn3.weight) if zero else torch.ones_like(b.bn3.weight)
        assert torch.equal(b.bn3.weight, expected)
    # Other BN gammas are untouched by the option.
    assert torch.equal(blocks[0].bn1.weight, torch.ones_like(blocks[0].bn1.weight))


# -- DropBlock ------------------------------------------------------------------------------------
def test_dropblock_prob_changes_train_output_only():
    torch.manual_seed(0)
    model = get_model("resnest14", dropblock_prob=0.1)
    n = set_dropblock_prob(model, 0.0)
    # stages 3 and 4, one block each: bn1, split-attention bn0, bn3
    assert n == 6
    x = _x(2, 3, 64, 64)
    model.train()
    with torch.no_grad():
        base = model(x)
        assert torch.equal(model(x), base)  # p=0 is deterministic: the same ops run twice
        set_dropblock_prob(model, 0.5)
        assert all(m.p == 0.5 for m in model.modules() if isinstance(m, DropBlock))
        torch.manual_seed(1)
        dropped = model(x)
    assert not torch.allclose(dropped, base)
    model.eval()
    with torch.no_grad():
        eval_drop = model(x)
        set_dropblock_prob(model, 0.0)
        eval_plain = model(x)
    assert torch.equal(eval_drop, eval_plain)  # DropBlock in eval returns its input: same ops


def test_dropblock_p0_model_equals_model_without_dropblock():
    torch.manual_seed(0)
    plain = get_model("resnest14").train()
    with_db = get_model("resnest14", dropblock_prob=0.1).train()
    assert plain.state_dict().keys() == with_db.state_dict().keys()
    with_db.load_state_dict(plain.state_dict())
    x = _x(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(plain(x), with_db(x))  # DropBlock(p=0) returns its input: same ops


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_dropblock_module_small_maps(size):
    x = _x(4, 8, size, size) + 3.0
    block = DropBlock(0.0).train()
    assert block(x) is x  # p=0: identity
    block.p = 0.5
    torch.manual_seed(0)
    y = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert block.eval()(x) is x


def test_dropblock_model_on_1x1_layer4():
    torch.manual_seed(0)
    model = get_model("resnest14", num_classes=10, dropblock_prob=0.1,
                      features_only=True, out_indices=(3, 4))
    set_dropblock_prob(model, 0.5)
    f3, f4 = model.train()(_x(2, 3, 32, 32))
    assert f3.shape[-2:] == (2, 2) and f4.shape[-2:] == (1, 1)
    model = get_model("resnest14", num_classes=10, dropblock_prob=0.1)
    set_dropblock_prob(model, 0.5)
    out = model.train()(_x(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()


# -- stems and input channels -----------------------------------------------------------------
def test_cifar_stem_shapes():
    torch.manual_seed(0)
    model = get_model("resnest14", num_classes=10, stem="cifar")
    x = _x(2, 3, 32, 32)
    assert model(x).shape == (2, 10)
    assert model.forward_features(x).shape == (2, 2048, 4, 4)
    assert [f["reduction"] for f in model.feature_info] == [1, 1, 2, 4, 8]
    assert isinstance(model.maxpool, torch.nn.Identity)


def test_in_chans_1():
    torch.manual_seed(0)
    for name in ("resnest14", "resnet50"):
        model = get_model(name, num_classes=5, in_chans=1)
        assert model(_x(2, 1, 32, 32)).shape == (2, 5)
    model = get_model("resnest14", num_classes=5, in_chans=1, stem="cifar")
    assert model.conv1[0].weight.shape[1] == 1
    assert model(_x(2, 1, 32, 32)).shape == (2, 5)


def test_bad_stem_rejected():
    with pytest.raises(ValueError, match="stem"):
        get_model("resnest14", stem="wide")


# -- features_only ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnest14", "resnet50"])
def test_features_only_all_indices(name):
    torch.manual_seed(0)
    model = get_model(name, features_only=True, out_indices=(0, 1, 2, 3, 4)).eval()
    assert model.fc is None
    with torch.no_grad():
        feats = model(_x(2, 3, 64, 64))
    assert len(feats) == 5
    expected_chs = [64, 256, 512, 1024, 2048]
    expected_red = [2, 4, 8, 16, 32]
    for f, info, c, r in zip(feats, model.feature_info, expected_chs, expected_red):
        assert info["num_chs"] == c and info["reduction"] == r
        assert f.shape == (2, c, 64 // r, 64 // r)


def test_features_only_subset_and_match_backbone():
    torch.manual_seed(0)
    model = get_model("resnest14").eval()
    feats_model = get_model("resnest14", features_only=True, out_indices=(1, 3)).eval()
    missing, unexpected = feats_model.load_state_dict(model.state_dict(), strict=False)
    assert not missing and set(unexpected) == {"fc.weight", "fc.bias"}
    x = _x(1, 3, 64, 64)
    with torch.no_grad():
        f1, f3 = feats_model(x)
        # Index 4 = last stage = forward_features.
        feats_all = get_model("resnest14", features_only=True, out_indices=(4,))
        feats_all.load_state_dict(model.state_dict(), strict=False)
        (f4,) = feats_all.eval()(x)
        # the same modules in the same order: bitwise by construction (allclose is slack)
        assert torch.allclose(f4, model.forward_features(x))
    assert f1.shape == (1, 256, 16, 16) and f3.shape == (1, 1024, 4, 4)


# -- head surface -----------------------------------------------------------------------------
def test_forward_head_and_reset_classifier(resnest14):
    model = copy.deepcopy(resnest14).eval()
    x = _x(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 2048, 2, 2)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, 2048)
        # forward = forward_head(forward_features), the head = fc(pool): the same ops on the
        # same values, bitwise by construction (the tolerances are slack)
        assert torch.allclose(model.forward_head(feats), model.fc(pre))
        assert torch.allclose(model(x), model.fc(pre), atol=1e-6)
    assert model.get_classifier() is model.fc
    model.reset_classifier(10)
    assert model.fc.out_features == 10 and model.num_classes == 10
    with torch.no_grad():
        assert model(x).shape == (2, 10)
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(x).shape == (2, 2048)


def test_grad_checkpointing_same_grads(resnest14):
    x = _x(2, 3, 64, 64)
    target = torch.tensor([1, 2])
    grads = []
    for enable in (False, True):
        model = copy.deepcopy(resnest14).train()
        model.set_grad_checkpointing(enable)
        assert model.grad_checkpointing is enable
        F.cross_entropy(model(x), target).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    # The checkpointed blocks recompute the same forward ops on the same inputs before the same
    # backward: bitwise by construction (0 measured); the tolerance is slack.
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-6, atol=1e-8, msg=name)
