"""Strict validation: unknown keys with suggestions, types, ranges, choices, cross-field rules,
official and renamed keys."""
import pathlib

import pytest

from resnest_engine.config import (Config, apply_overrides, config_from_dict, effective_lr,
                                   load_config, validate_config)
from tests.support.config import error, write


@pytest.mark.parametrize("override, starts, contains", [
    # unknown names, with a suggestion
    ("TRAINING.EPOHCS=3", "TRAINING.EPOHCS:", "did you mean TRAINING.EPOCHS?"),
    ("TRAINNG.EPOCHS=3", "TRAINNG:", "did you mean TRAINING?"),
    ("model.NAME=resnest50", "model:", "did you mean MODEL?"),
    ("EPOCHS=3", "EPOCHS:", "did you mean TRAINING.EPOCHS?"),
    ("TRAINING.MOMENTUM=0.9", "TRAINING.MOMENTUM:", "did you mean OPTIMIZER.MOMENTUM?"),
    ("DATA.epochs=1", "DATA.epochs:", "did you mean TRAINING.EPOCHS?"),
    ("LOGGING.LOG_EVRY=1", "LOGGING.LOG_EVRY:", "did you mean LOGGING.LOG_EVERY?"),
    ("LOGGING.ZZZZ=1", "LOGGING.ZZZZ:", "LOG_EVERY, TENSORBOARD, PROGRESS_BAR"),
    # types: bool is not an int, None only for Optional, strings are not numbers
    ("TRAINING.EPOCHS=true", "TRAINING.EPOCHS:", "expected an integer >= 1, got True (bool)"),
    ("TRAINING.EPOCHS=null", "TRAINING.EPOCHS:", "got None"),
    ("TRAINING.EPOCHS=ten", "TRAINING.EPOCHS:", "got 'ten' (str)"),
    ("TRAINING.EPOCHS=2.5", "TRAINING.EPOCHS:", "got 2.5 (float)"),
    ("OPTIMIZER.LR=yes", "OPTIMIZER.LR:", "expected a number > 0, got True (bool)"),
    ("DATA.HFLIP=1", "DATA.HFLIP:", "expected a boolean, got 1 (int)"),
    ("MODEL.NAME=3", "MODEL.NAME:", "expected a non-empty string"),
    ("OPTIMIZER.STEPS=30", "OPTIMIZER.STEPS:", "expected a list of integers"),
    ("OPTIMIZER.STEPS=[30, true]", "OPTIMIZER.STEPS:", "expected a list of integers"),
    ("MODEL.NUM_CLASSES=ten", "MODEL.NUM_CLASSES:", "expected null or an integer >= 1"),
    ("MODEL=3", "MODEL:", "expected a mapping"),
    # ranges
    ("TRAINING.EPOCHS=0", "TRAINING.EPOCHS: expected an integer >= 1, got 0", ""),
    ("SEED=-1", "SEED:", "in [0, 4294967296)"),
    ("OPTIMIZER.LR=0", "OPTIMIZER.LR:", "> 0"),
    ("OPTIMIZER.LR=.nan", "OPTIMIZER.LR:", "not finite"),
    ("MODEL.FINAL_DROP=1.0", "MODEL.FINAL_DROP:", "in [0, 1)"),
    ("MODEL.DROPBLOCK_PROB=-0.1", "MODEL.DROPBLOCK_PROB:", "in [0, 1)"),
    ("MODEL.IN_CHANS=0", "MODEL.IN_CHANS:", ">= 1"),
    ("DATA.EVAL_CROP_FRACTION=0", "DATA.EVAL_CROP_FRACTION:", "in (0, 1]"),
    ("DATA.LABEL_SMOOTHING=1", "DATA.LABEL_SMOOTHING:", "in [0, 1)"),
    ("DATA.RANDOM_ERASE=1.5", "DATA.RANDOM_ERASE:", "in [0, 1]"),
    ("DATA.MIXUP=-1", "DATA.MIXUP:", ">= 0"),
    ("DATA.WORKERS=-1", "DATA.WORKERS:", ">= 0"),
    ("TRAINING.EMA_DECAY=1", "TRAINING.EMA_DECAY:", "0 (off) or in (0, 1)"),
    ("TRAINING.KEEP_CHECKPOINTS=0", "TRAINING.KEEP_CHECKPOINTS:", ">= 1"),
    ("TRAINING.DIST_TIMEOUT=0", "TRAINING.DIST_TIMEOUT:", ">= 1"),
    ("OPTIMIZER.MOMENTUM=1", "OPTIMIZER.MOMENTUM:", "in [0, 1)"),
    ("OPTIMIZER.WARMUP_START_FACTOR=1.5", "OPTIMIZER.WARMUP_START_FACTOR:", "in [0, 1]"),
    ("OPTIMIZER.BETAS=[0.9]", "OPTIMIZER.BETAS:", "two values"),
    ("OPTIMIZER.BETAS=[0.9, 1.0]", "OPTIMIZER.BETAS:", "two values"),
    # enums, with a suggestion
    ("TRAINING.AMP=fp61", "TRAINING.AMP:", "did you mean 'fp16'?"),
    ("TRAINING.AMP=true", "TRAINING.AMP:", "one of 'off', 'fp16', 'bf16'"),
    ("OPTIMIZER.NAME=adam", "OPTIMIZER.NAME:", "did you mean 'adamw'?"),
    ("OPTIMIZER.LR_SCHEDULER=cosin", "OPTIMIZER.LR_SCHEDULER:", "did you mean 'cos'?"),
    ("DATA.INTERPOLATION=bicubik", "DATA.INTERPOLATION:", "did you mean 'bicubic'?"),
    ("MODEL.STEM=Deep", "MODEL.STEM:", "did you mean 'deep'?"),
    ("LOGGING.PROGRESS_BAR=autom", "LOGGING.PROGRESS_BAR:", "did you mean 'auto'?"),
    ("MODEL.NAME=resnest5", "MODEL.NAME:", "did you mean 'resnest50'?"),
    # RandAugment format
    ("DATA.RAND_AUG=true", "DATA.RAND_AUG:", '"2,12"'),
    ("DATA.RAND_AUG=2", "DATA.RAND_AUG:", '"N,M"'),
    ("DATA.RAND_AUG=0,9", "DATA.RAND_AUG:", '"N,M"'),
    ("DATA.RAND_AUG=2,31", "DATA.RAND_AUG:", '"N,M"'),
    ("DATA.RAND_AUG=a,b", "DATA.RAND_AUG:", '"N,M"'),
])
def test_validation_errors(override, starts, contains):
    msg = error(apply_overrides, Config(), [override])
    assert msg.startswith(starts), msg
    assert contains in msg, msg


def test_dataset_name_checked_against_the_data_registry():
    pytest.importorskip("resnest_engine.data")
    msg = error(apply_overrides, Config(), ["DATA.DATASET=ImageNet"])
    assert msg.startswith("DATA.DATASET:") and "did you mean 'imagenet'?" in msg
    assert apply_overrides(Config(), ["DATA.DATASET=cifar10"]).DATA.DATASET == "cifar10"


@pytest.mark.parametrize("overrides, starts, contains", [
    (["TRAINING.GRAD_ACCUM=3"], "TRAINING.GRAD_ACCUM:", "must divide TRAINING.BATCH_SIZE"),
    (["OPTIMIZER.LR_SCHEDULER=step"], "OPTIMIZER.STEPS:", "non-empty"),
    (["OPTIMIZER.LR_SCHEDULER=step", "OPTIMIZER.STEPS=[60, 30]"], "OPTIMIZER.STEPS:",
     "increasing"),
    (["OPTIMIZER.LR_SCHEDULER=step", "OPTIMIZER.STEPS=[30, 30]"], "OPTIMIZER.STEPS:",
     "increasing"),
    (["OPTIMIZER.LR_SCHEDULER=step", "OPTIMIZER.STEPS=[30, 270]"], "OPTIMIZER.STEPS:",
     "TRAINING.EPOCHS"),
    (["OPTIMIZER.LR_SCHEDULER=step", "OPTIMIZER.STEPS=[0, 30]"], "OPTIMIZER.STEPS:", "[1,"),
    (["OPTIMIZER.MIN_LR=0.1", "TRAINING.BATCH_SIZE=128"], "OPTIMIZER.MIN_LR:", "0.05"),
    (["DATA.MIXUP_OFF_EPOCH=270"], "DATA.MIXUP_OFF_EPOCH:", "< TRAINING.EPOCHS"),
    (["DATA.RAND_AUG=2,9", "DATA.TRIVIAL_AUG=true"], "DATA.TRIVIAL_AUG:", "only one of"),
])
def test_cross_field_errors(overrides, starts, contains):
    msg = error(apply_overrides, Config(), overrides)
    assert msg.startswith(starts), msg
    assert contains in msg, msg


def test_cross_field_ok():
    cfg = apply_overrides(Config(), ["OPTIMIZER.LR_SCHEDULER=step", "OPTIMIZER.STEPS=[30,60,90]",
                                     "TRAINING.EPOCHS=100", "TRAINING.GRAD_ACCUM=4",
                                     "OPTIMIZER.WARMUP_EPOCHS=0", "DATA.MIXUP_OFF_EPOCH=10"])
    assert cfg.OPTIMIZER.STEPS == [30, 60, 90]
    # STEPS only matter for the step scheduler
    assert apply_overrides(cfg, ["OPTIMIZER.LR_SCHEDULER=cos", "TRAINING.EPOCHS=20"])


def test_config_from_dict_errors():
    assert error(config_from_dict, [1, 2]).startswith("config:")
    assert error(config_from_dict, {"_BASE_": "x.yaml"}).startswith("_BASE_:")
    assert error(config_from_dict, {"TRAINING": {1: 2}}).startswith("TRAINING:")
    cfg = config_from_dict({"DATA": {"ROOT": pathlib.Path("/data"), "RAND_AUG": [2, 9]},
                            "OPTIMIZER": {"BETAS": (0.9, 0.95)}})
    assert cfg.DATA.ROOT == "/data" and cfg.DATA.RAND_AUG == "2,9"
    assert cfg.OPTIMIZER.BETAS == [0.9, 0.95]


def test_validate_config_after_mutation():
    cfg = Config()
    cfg.TRAINING.EPOCHS = 0
    assert error(validate_config, cfg).startswith("TRAINING.EPOCHS:")
    cfg.TRAINING.EPOCHS = 10
    assert validate_config(cfg).TRAINING.EPOCHS == 10


# ---------------------------------------------------------------------------------- official keys

OFFICIAL_RESNEST50 = """\
DATA:
  DATASET: ImageNet
  BASE_SIZE: 256
  CROP_SIZE: 224
  LABEL_SMOOTHING: 0.1
  MIXUP: 0.2
  RAND_AUG: True
MODEL:
  NAME: resnest50
  FINAL_DROP: 0.2
TRAINING:
  BATCH_SIZE: 64
  EPOCHS: 270
  LAST_GAMMA: True
OPTIMIZER:
  DISABLE_BN_WD: True
  LR: 0.025
  WARMUP_EPOCHS: 5
"""


def test_translated_official_yaml_loads(tmp_path):
    translated = (OFFICIAL_RESNEST50.replace("  BASE_SIZE: 256\n", "  EVAL_CROP_FRACTION: 0.875\n")
                  .replace("DATASET: ImageNet", "DATASET: imagenet")
                  .replace("RAND_AUG: True", "RAND_AUG: '2,12'")
                  .replace("  LAST_GAMMA: True\n", "")
                  .replace("BATCH_SIZE: 64", "BATCH_SIZE: 4096")  # 64 per GPU x 64 GPUs
                  .replace("LR: 0.025", "LR: 0.1"))  # 0.025 per GPU x 256 / 64
    cfg = load_config(str(write(tmp_path / "ours.yaml", translated)))
    assert cfg.DATA.RAND_AUG == "2,12" and cfg.MODEL.FINAL_DROP == 0.2
    assert effective_lr(cfg) == pytest.approx(0.025 * 64)  # the official per-GPU LR x 64 GPUs


@pytest.mark.parametrize("section, key, value, equivalent", [
    ("TRAINING", "LAST_GAMMA", True, "MODEL.ZERO_INIT_LAST"),
    ("DATA", "BASE_SIZE", 256, "DATA.CROP_SIZE and DATA.EVAL_CROP_FRACTION"),
    ("TRAINING", "WORKERS", 4, "DATA.WORKERS"),
    ("TRAINING", "START_EPOCHS", 0, "checkpoint"),
    ("TRAINING", "LR", 0.1, "OPTIMIZER.LR"),
    ("TRAINING", "NO_BN_WD", True, "OPTIMIZER.DISABLE_BN_WD"),
    ("OPTIMIZER", "NO_BN_WD", True, "OPTIMIZER.DISABLE_BN_WD"),
    ("TRAINING", "DISABLE_BN_WD", True, "OPTIMIZER.DISABLE_BN_WD"),
    ("TRAINING", "LR_SCHEDULER", "cos", "OPTIMIZER.LR_SCHEDULER"),
    ("TRAINING", "WARMUP_EPOCHS", 5, "OPTIMIZER.WARMUP_EPOCHS"),
    ("MODEL", "DROP_BLOCK", 0.1, "MODEL.DROPBLOCK_PROB"),
    ("DATA", "MIXUP_ALPHA", 0.2, "DATA.MIXUP"),
    ("TRAINING", "LABEL_SMOOTHING", 0.1, "DATA.LABEL_SMOOTHING"),
    ("DATA", "TEST_BATCH_SIZE", 256, "TRAINING.TEST_BATCH_SIZE"),
    ("TRAINING", "SEED", 1, "SEED"),
])
def test_official_and_renamed_keys_name_our_equivalent(section, key, value, equivalent):
    msg = error(config_from_dict, {section: {key: value}})
    assert msg.startswith(f"{section}.{key}:") and equivalent in msg, msg


@pytest.mark.parametrize("section, key, value, contains", [
    ("DATA", "MIXUP", True, "alpha"),
    ("DATA", "CUTMIX", True, "alpha"),
    ("MODEL", "FINAL_DROP", False, "probability"),
    ("DATA", "RAND_AUG", True, '"2,12"'),
    ("DATA", "RAND_AUG", False, '"N,M"'),
])
def test_official_bool_values_explain_our_meaning(section, key, value, contains):
    msg = error(config_from_dict, {section: {key: value}})
    assert msg.startswith(f"{section}.{key}:") and contains in msg, msg
