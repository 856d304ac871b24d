"""The official ResNeSt repository's resnet50/101/152: radix-1 split attention, official keys."""
import pytest
import torch

from resnest_engine.models import get_model
from resnest_engine.models.registry import get_variant
from resnest_engine.official import OFFICIAL_RESNET_NAMES

LAYERS = {"resnet50_splat": [3, 4, 6, 3], "resnet101_splat": [3, 4, 23, 3],
          "resnet152_splat": [3, 8, 36, 3]}
PARAMS = {"resnet50_splat": 26_198_664, "resnet101_splat": 45_755_464,
          "resnet152_splat": 61_864_584}
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def official_keys(layers):
    """The state_dict keys of the official ResNet(Bottleneck, layers), written from its layout."""
    keys = ["conv1.weight"] + [f"bn1.{s}" for s in BN]
    for stage, blocks in enumerate(layers, 1):
        for b in range(blocks):
            p = f"layer{stage}.{b}."
            keys += [p + "conv1.weight"] + [p + f"bn1.{s}" for s in BN]
            keys += [p + "conv2.conv.weight"] + [p + f"conv2.bn0.{s}" for s in BN]
            keys += [p + "conv2.fc1.weight", p + "conv2.fc1.bias"]
            keys += [p + f"conv2.bn1.{s}" for s in BN]
            keys += [p + "conv2.fc2.weight", p + "conv2.fc2.bias"]
            keys += [p + "conv3.weight"] + [p + f"bn3.{s}" for s in BN]
            if b == 0:
                keys += [p + "downsample.0.weight"] + [p + f"downsample.1.{s}" for s in BN]
    return sorted(keys + ["fc.weight", "fc.bias"])


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_official_resnet_layout_and_parameter_count(name):
    with torch.device("meta"):
        model = get_model(name)
    state = model.state_dict()
    assert sorted(state) == official_keys(LAYERS[name])
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    assert round(PARAMS[name] / 1e6, 2) == get_variant(name).params_m
    # radix 1: conv -> bn0 at the block width, fc1 width max(width // 4, 32), fc2 back to width
    assert tuple(state["layer1.0.conv2.conv.weight"].shape) == (64, 64, 3, 3)
    assert tuple(state["layer1.0.conv2.fc1.weight"].shape) == (32, 64, 1, 1)
    assert tuple(state["layer4.0.conv2.fc1.weight"].shape) == (128, 512, 1, 1)
    assert tuple(state["layer4.0.conv2.fc2.weight"].shape) == (512, 128, 1, 1)
    assert tuple(state["conv1.weight"].shape) == (64, 3, 7, 7)  # plain 7x7 stem, no deep stem


def test_official_names_map_to_these_and_torchvision_resnet50_stays():
    assert OFFICIAL_RESNET_NAMES == {"resnet50": "resnet50_splat", "resnet101": "resnet101_splat",
                                     "resnet152": "resnet152_splat"}
    with torch.device("meta"):
        tv = get_model("resnet50")
    assert "layer1.0.conv2.weight" in tv.state_dict()  # a plain 3x3 conv
    assert sum(p.numel() for p in tv.parameters()) == 25_557_032


def test_radix1_gate_is_a_sigmoid():
    """With radix 1, the attention is sigmoid(fc2(...)) times the conv output (no softmax)."""
    torch.manual_seed(0)
    model = get_model("resnet50_splat", num_classes=5).eval()
    sa = model.layer1[0].conv2
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        y = torch.relu(sa.bn0(sa.conv(x)))
        gap = y.mean((2, 3), keepdim=True)
        att = torch.sigmoid(sa.fc2(torch.relu(sa.bn1(sa.fc1(gap)))))
        # SplitAttention.forward's own ops in its order (radix 1, no autograd): bitwise by
        # construction; the atol is slack.
        torch.testing.assert_close(sa(x), y * att, rtol=0, atol=1e-6)
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)
