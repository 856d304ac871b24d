"""TRAINING.AMP: auto and MODEL.CHANNELS_LAST: auto resolve for the device; slow AMP warns."""
import pytest
import torch

from resnest_engine.config import Config, ConfigError, apply_overrides, load_config
from resnest_engine.engine import precision


def test_auto_on_cpu():
    assert precision.resolve_amp("auto", "cpu")[0] == "off"
    assert precision.resolve_channels_last("auto", "cpu")[0] is True
    assert precision.resolve_amp("bf16", "cpu") == ("bf16", "as set")
    assert precision.resolve_channels_last(False, "cpu") == (False, "as set")


@pytest.mark.parametrize("bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_on_a_faked_cuda_device(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    amp, why = precision.resolve_amp("auto", "cuda")
    assert amp == expected and "CUDA" in why
    assert precision.resolve_amp("auto")[0] == expected  # no device given: CUDA is visible
    assert precision.resolve_channels_last("auto", "cuda")[0] is True
    assert precision.amp_warning(expected, "cuda") is None


def test_mixed_precision_on_a_cpu_without_native_support_warns(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    for amp in ("bf16", "fp16"):
        msg = precision.amp_warning(amp, "cpu")
        assert msg and "\n" not in msg and "slower" in msg and f"TRAINING.AMP {amp}" in msg
    assert precision.amp_warning("off", "cpu") is None
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.amp_warning("bf16", "cpu") is None


def test_config_values_and_recipes():
    cfg = apply_overrides(Config(), ["TRAINING.AMP=auto", "MODEL.CHANNELS_LAST=auto"])
    assert cfg.TRAINING.AMP == "auto" and cfg.MODEL.CHANNELS_LAST == "auto"
    assert apply_overrides(Config(), ["MODEL.CHANNELS_LAST=true"]).MODEL.CHANNELS_LAST is True
    with pytest.raises(ConfigError, match="MODEL.CHANNELS_LAST: expected true, false or 'auto'"):
        apply_overrides(Config(), ["MODEL.CHANNELS_LAST=maybe"])
    for name in ("imagenet_resnest50", "cifar10_resnest", "cifar100_resnest"):
        cfg = load_config(f"recipes/{name}.yaml")
        assert (cfg.TRAINING.AMP, cfg.MODEL.CHANNELS_LAST) == ("auto", "auto"), name
    digits = load_config("recipes/digits.yaml")
    assert (digits.TRAINING.AMP, digits.MODEL.CHANNELS_LAST) == ("off", False)
