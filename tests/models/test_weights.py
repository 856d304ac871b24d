"""load_pretrained / read_state_dict on local files: prefixes, classifier swap, bad files."""
from __future__ import annotations

import os
import pickle
import shlex

import pytest
import torch

from resnest_engine.models import WeightsError, get_model, load_pretrained
from resnest_engine.models.weights import read_state_dict

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def timm_resnest14():
    torch.manual_seed(0)
    return timm.create_model("resnest14d", pretrained=False).eval()


@pytest.fixture(scope="module")
def timm_state(timm_resnest14):
    return {k: v.clone() for k, v in timm_resnest14.state_dict().items()}


def _x():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_load_timm_file_with_module_prefix(tmp_path, timm_resnest14, timm_state):
    path = tmp_path / "ddp.pth"
    torch.save({f"module.{k}": v for k, v in timm_state.items()}, path)
    model = get_model("resnest14").eval()
    report = load_pretrained(model, path)
    assert report.skipped_classifier == [] and report.missing == [] and report.unexpected == []
    with torch.no_grad():
        # timm's ops in timm's order (models/split_attention.py): bitwise in fact; the
        # tolerance is slack (logits ~0.12: atol 1e-6 = 70 eps32 * max|logit|).
        torch.testing.assert_close(model(_x()), timm_resnest14(_x()), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("wrap", ["model", "state_dict"])
def test_load_wrapped_checkpoint_with_compile_prefix(tmp_path, timm_state, wrap):
    path = tmp_path / "ckpt.pth"
    torch.save({wrap: {f"module._orig_mod.{k}": v for k, v in timm_state.items()}, "epoch": 3},
               path)
    state = read_state_dict(path)
    assert state.keys() == timm_state.keys()
    model = get_model("resnest14")
    load_pretrained(model, path)
    assert torch.equal(model.state_dict()["layer1.0.conv2.fc2.weight"],
                       timm_state["layer1.0.conv2.fc2.weight"])


def test_1000_class_file_into_10_class_model(tmp_path, timm_state):
    path = tmp_path / "in1k.pth"
    torch.save(timm_state, path)
    torch.manual_seed(0)
    model = get_model("resnest14", num_classes=10)
    fresh_fc = model.fc.weight.detach().clone()
    report = load_pretrained(model, path)
    assert sorted(report.skipped_classifier) == ["fc.bias", "fc.weight"]
    assert report.missing == [] and report.unexpected == []
    assert model.fc.weight.shape == (10, 2048)
    assert torch.equal(model.fc.weight, fresh_fc)  # classifier kept as initialised
    assert torch.equal(model.state_dict()["conv1.0.weight"], timm_state["conv1.0.weight"])


def test_other_architecture_raises_naming_keys(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "resnet50d.pth"
    torch.save(get_model("resnet50d").state_dict(), path)
    model = get_model("resnest14")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError) as e:
        load_pretrained(model, path)
    msg = str(e.value)
    assert "missing" in msg and "unexpected" in msg
    file_keys = set(torch.load(path, weights_only=True))
    own_keys = set(model.state_dict())
    assert any(k in msg for k in own_keys - file_keys)  # a missing key is named
    assert any(k in msg for k in file_keys - own_keys)  # an unexpected key is named
    # Nothing was half-loaded.
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_shape_mismatch_raises(tmp_path):
    # Same keys, different widths (64d vs 40d bottlenecks).
    path = tmp_path / "resnest50.pth"
    with torch.device("meta"):
        model = get_model("resnest50_fast_1s2x40d")
    torch.manual_seed(0)
    torch.save(get_model("resnest50").state_dict(), path)
    with pytest.raises(WeightsError, match="shape mismatch.*layer1.0.conv1.weight"):
        load_pretrained(model, path)


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_pretrained(get_model("resnest14"), tmp_path / "nope.pth")


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(WeightsError):
        load_pretrained(get_model("resnest14"), path)


def test_truncated_file(tmp_path, timm_state):
    path = tmp_path / "truncated.pth"
    torch.save(timm_state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError):
        load_pretrained(get_model("resnest14"), path)


def test_non_state_dict_file(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(WeightsError, match="state_dict"):
        load_pretrained(get_model("resnest14"), path)


class _Exploit:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


@pytest.mark.parametrize("fmt", ["torch_zip", "raw_pickle"])
def test_code_executing_pickle_is_refused(tmp_path, fmt):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"conv1.0.weight": torch.zeros(1), "evil": _Exploit(marker)}
    if fmt == "torch_zip":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    assert not marker.exists()
    with pytest.raises(WeightsError):
        load_pretrained(get_model("resnest14"), path)
    assert not marker.exists(), "loading the weights file executed code"
    # The payload is real: an unsafe load does run it (only ``touch`` in tmp_path).
    if fmt == "torch_zip":
        torch.load(path, weights_only=False)
    else:
        with open(path, "rb") as f:
            pickle.load(f)
    assert marker.exists()
