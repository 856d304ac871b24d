"""What a resume may change: the config diff and the resume key sets."""
import pytest

from resnest_engine.config import (NONDETERMINISTIC_SAFE_KEYS, RESUME_SAFE_KEYS, TRAJECTORY_KEYS,
                                   Config, apply_overrides, check_resume_overrides, diff_configs)
from resnest_engine.config.schema import ALL_KEYS
from tests.support.config import error


def test_diff_configs():
    a = Config()
    b = apply_overrides(a, ["LOGGING.LOG_EVERY=10", "SEED=1", "OPTIMIZER.LR=0.2"])
    assert diff_configs(a, b) == [("SEED", 0, 1), ("OPTIMIZER.LR", 0.1, 0.2),
                                  ("LOGGING.LOG_EVERY", 50, 10)]
    assert diff_configs(a, Config()) == []


def test_resume_key_sets_name_real_keys():
    # a misspelt key would free nothing and protect nothing
    assert RESUME_SAFE_KEYS <= set(ALL_KEYS)
    assert NONDETERMINISTIC_SAFE_KEYS <= TRAJECTORY_KEYS


@pytest.mark.parametrize("change", [
    "SEED=1", "OPTIMIZER.LR=0.2", "TRAINING.EPOCHS=300", "TRAINING.BATCH_SIZE=512",
    "TRAINING.AMP=bf16", "DATA.FAST_JPEG=true", "MODEL.GRAD_CHECKPOINTING=true",
    "MODEL.SYNC_BN=true"])
def test_resume_refuses_each_trajectory_change(change):
    saved = Config()
    msg = error(check_resume_overrides, saved, apply_overrides(saved, [change]))
    assert msg.startswith(change.split("=")[0] + ":"), msg


def test_resume_with_harmless_changes_passes():
    saved = Config()
    new = apply_overrides(saved, ["DATA.ROOT=/new/place", "DATA.DOWNLOAD=true",
                                  "DATA.SKIP_CORRUPT=true", "TRAINING.DIST_TIMEOUT=60",
                                  "TRAINING.TEST_BATCH_SIZE=64", "TRAINING.KEEP_CHECKPOINTS=5",
                                  "LOGGING.LOG_EVERY=1", "LOGGING.PROGRESS_BAR=off",
                                  "LOGGING.TENSORBOARD=false",
                                  "DATA.WORKERS=16", "MODEL.COMPILE=true",
                                  "TRAINING.VAL_EVERY=5"])
    check_resume_overrides(saved, new)
    check_resume_overrides(saved, saved)


def test_resume_with_trajectory_changes_fails():
    saved = Config()
    new = apply_overrides(saved, ["OPTIMIZER.LR=0.2", "TRAINING.EPOCHS=300", "DATA.ROOT=/x"])
    msg = error(check_resume_overrides, saved, new)
    assert "OPTIMIZER.LR: 0.1 -> 0.2" in msg and "TRAINING.EPOCHS: 270 -> 300" in msg
    assert "DATA.ROOT" not in msg
    check_resume_overrides(saved, new, allow=["OPTIMIZER.LR", "TRAINING.EPOCHS"])
    check_resume_overrides(saved, new, allow=["OPTIMIZER.*", "TRAINING.*"])
    msg = error(check_resume_overrides, saved, new, ["OPTIMIZER.RL"])
    assert "did you mean OPTIMIZER.LR" in msg


def test_resume_of_deterministic_run_is_stricter():
    saved = apply_overrides(Config(), ["TRAINING.DETERMINISTIC=true"])
    for change in ["TRAINING.VAL_EVERY=5", "MODEL.CHANNELS_LAST=true", "MODEL.COMPILE=true",
                   "TRAINING.DETERMINISTIC=false"]:
        msg = error(check_resume_overrides, saved, apply_overrides(saved, [change]))
        assert msg.startswith(change.split("=")[0]), msg
    check_resume_overrides(saved, apply_overrides(saved, ["DATA.WORKERS=0", "DATA.ROOT=/y"]))
    # a non-deterministic run may switch determinism on
    check_resume_overrides(Config(), saved)
