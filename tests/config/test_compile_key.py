"""MODEL.COMPILE: false, true (torch.compile's default mode) or a mode name; DATA.PREFETCH:
true, false or auto."""
import pytest
import torch

from resnest_engine.config import Config, apply_overrides
from resnest_engine.config.fields import compile_mode
from resnest_engine.data.prefetch import resolve_prefetch
from tests.support.config import error


@pytest.mark.parametrize("value, stored, mode", [
    ("false", False, None), ("true", True, "default"),  # a bool keeps its meaning
    ("default", "default", "default"), ("max-autotune", "max-autotune", "max-autotune"),
    ("reduce-overhead", "reduce-overhead", "reduce-overhead"),
])
def test_compile_values(value, stored, mode):
    cfg = apply_overrides(Config(), [f"MODEL.COMPILE={value}"])
    assert cfg.MODEL.COMPILE == stored
    assert compile_mode(cfg.MODEL.COMPILE) == mode


@pytest.mark.parametrize("value", ["fast", "1", "max_autotune"])
def test_compile_rejects_other_values(value):
    msg = error(apply_overrides, Config(), [f"MODEL.COMPILE={value}"])
    assert msg.startswith("MODEL.COMPILE:") and "max-autotune" in msg, msg


def test_build_trainer_passes_the_mode(monkeypatch):
    from resnest_engine.workflows import from_config
    seen = []
    monkeypatch.setattr(torch, "compile", lambda m, mode=None: seen.append(mode) or m)
    model = torch.nn.Linear(2, 2)
    for value, expected in ((False, []), (True, ["default"]), ("max-autotune", ["max-autotune"])):
        seen.clear()
        assert from_config._compiled(model, value) is model
        assert seen == expected


def test_prefetch_key():
    assert Config().DATA.PREFETCH == "auto"
    cfg = apply_overrides(Config(), ["DATA.PREFETCH=true"])
    assert cfg.DATA.PREFETCH is True
    assert error(apply_overrides, Config(), ["DATA.PREFETCH=yes please"]).startswith("DATA.PREFETCH:")
    assert resolve_prefetch("auto", torch.device("cpu"))[0] is False
    assert resolve_prefetch("auto", torch.device("cuda"))[0] is True
    assert resolve_prefetch(False, torch.device("cuda"))[0] is False
