"""KEY=VALUE overrides: typed as YAML, applied to a copy, malformed ones named."""
import pytest

from resnest_engine.config import Config, apply_overrides
from tests.support.config import error


def test_override_typing():
    cfg = apply_overrides(Config(), [
        "SEED=3", "TRAINING.EPOCHS=120", "OPTIMIZER.LR=1", "OPTIMIZER.WEIGHT_DECAY=4e-5",
        "OPTIMIZER.LR_SCHEDULER=step", "OPTIMIZER.STEPS=[30,60]", "TRAINING.DETERMINISTIC=true",
        "DATA.HFLIP=no", "MODEL.NUM_CLASSES=10", "MODEL.NUM_CLASSES=null", "DATA.ROOT=/data/x",
        "MODEL.STEM=cifar", "MODEL.STEM=None", "DATA.CROP_SIZE=", "DATA.INTERPOLATION=~",
        "DATA.RAND_AUG=2, 9", "TRAINING.AMP=bf16", "LOGGING.PROGRESS_BAR=off",
        "OPTIMIZER.BETAS=[0.8, 0.99]", " DATA.WORKERS = 8 ",
    ])
    assert cfg.SEED == 3 and cfg.TRAINING.EPOCHS == 120
    assert isinstance(cfg.OPTIMIZER.LR, float) and cfg.OPTIMIZER.LR == 1.0
    assert cfg.OPTIMIZER.WEIGHT_DECAY == 4e-5
    assert cfg.OPTIMIZER.STEPS == [30, 60] and cfg.OPTIMIZER.BETAS == [0.8, 0.99]
    assert cfg.TRAINING.DETERMINISTIC is True and cfg.DATA.HFLIP is False
    assert cfg.MODEL.NUM_CLASSES is None and cfg.MODEL.STEM is None
    assert cfg.DATA.CROP_SIZE is None and cfg.DATA.INTERPOLATION is None
    assert cfg.DATA.ROOT == "/data/x" and cfg.DATA.RAND_AUG == "2,9"
    assert cfg.TRAINING.AMP == "bf16" and cfg.LOGGING.PROGRESS_BAR == "off"
    assert cfg.DATA.WORKERS == 8


def test_apply_overrides_returns_new_config():
    base = Config()
    new = apply_overrides(base, ["TRAINING.EPOCHS=50", "MODEL={NAME: resnest101}"])
    assert base == Config() and new.TRAINING.EPOCHS == 50 and new.MODEL.NAME == "resnest101"
    assert new.MODEL.ZERO_INIT_LAST is True  # a section override merges into the section


@pytest.mark.parametrize("item", ["TRAINING.EPOCHS", "=3", " =3", "TRAINING.=3", ".EPOCHS=3",
                                  "TRAINING..EPOCHS=3", "OPTIMIZER.STEPS=[30,60"])
def test_malformed_overrides(item):
    assert repr(item) in error(apply_overrides, Config(), [item])


def test_too_deep_override_key():
    assert error(apply_overrides, Config(), ["TRAINING.EPOCHS.X=1"]).startswith(
        "TRAINING.EPOCHS.X:")
    assert error(apply_overrides, Config(), ["SEED.X=1"]).startswith("SEED.X:")
