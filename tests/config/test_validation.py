"""Tests of the typed config: YAML + _BASE_, overrides, strict validation, resume rules."""
import dataclasses
import pathlib

import pytest
import yaml

from resnest_engine.config import (NONDETERMINISTIC_SAFE_KEYS, RESUME_SAFE_KEYS, TRAJECTORY_KEYS,
                                   Config, ConfigError, apply_overrides, check_resume_overrides,
                                   config_from_dict, config_to_dict, diff_configs, dump_config,
                                   effective_lr, eval_batch_per_process, load_config,
                                   train_micro_batch, validate_config)


MARKER = "FORMAT: resnest-engine/1\n"


def write(path: pathlib.Path, text: str, official: bool = False) -> pathlib.Path:
    """A config file in our format (the FORMAT line first), or as written when ``official``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if official else MARKER + text)
    return path


def error(fn, *args) -> str:
    with pytest.raises(ConfigError) as info:
        fn(*args)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def all_keys():
    out = []
    for k, v in config_to_dict(Config()).items():
        out += [f"{k}.{kk}" for kk in v] if isinstance(v, dict) else [k]
    return out


# ---------------------------------------------------------------------------------- defaults

def test_defaults_are_valid_and_documented_values():
    cfg = load_config()
    assert cfg == Config() == config_from_dict({}) == validate_config(Config())
    assert cfg.SEED == 0 and cfg.MODEL.NAME == "resnest50" and cfg.MODEL.NUM_CLASSES is None
    assert cfg.TRAINING.EPOCHS == 270 and cfg.TRAINING.BATCH_SIZE == 256
    assert cfg.TRAINING.AMP == "off" and cfg.LOGGING.PROGRESS_BAR == "auto"
    assert cfg.OPTIMIZER.NAME == "nesterov" and cfg.OPTIMIZER.LR == 0.1
    assert cfg.OPTIMIZER.STEPS == [] and cfg.OPTIMIZER.BETAS == [0.9, 0.999]
    assert effective_lr(cfg) == pytest.approx(0.1)
    assert len(all_keys()) == 1 + 12 + 29 + 16 + 15 + 3


def test_list_defaults_are_not_shared():
    a, b = Config(), Config()
    a.OPTIMIZER.BETAS.append(1.0)
    assert b.OPTIMIZER.BETAS == [0.9, 0.999]


def test_config_error_is_value_error_with_key():
    with pytest.raises(ValueError) as info:
        apply_overrides(Config(), ["TRAINING.EPOCHS=0"])
    assert info.value.key == "TRAINING.EPOCHS"


def test_effective_lr_and_batch_helpers():
    cfg = apply_overrides(Config(), ["TRAINING.BATCH_SIZE=1024", "TRAINING.GRAD_ACCUM=2",
                                     "TRAINING.TEST_BATCH_SIZE=100"])
    assert effective_lr(cfg) == pytest.approx(0.4)
    assert train_micro_batch(cfg, 4) == 128
    assert eval_batch_per_process(cfg, 4) == 25
    assert error(train_micro_batch, cfg, 3).startswith("TRAINING.BATCH_SIZE:")
    assert error(eval_batch_per_process, cfg, 3).startswith("TRAINING.TEST_BATCH_SIZE:")


# ---------------------------------------------------------------------------------- YAML files

def test_base_inheritance_two_levels_relative_to_including_file(tmp_path, monkeypatch):
    write(tmp_path / "grand.yaml", "SEED: 1\nTRAINING:\n  EPOCHS: 10\n  BATCH_SIZE: 128\n"
                                   "MODEL:\n  NAME: resnest101\n")
    write(tmp_path / "sub" / "base.yaml", "_BASE_: ../grand.yaml\nTRAINING:\n  EPOCHS: 20\n"
                                          "OPTIMIZER:\n  STEPS: [5, 8]\n")
    child = write(tmp_path / "sub" / "deeper" / "child.yaml",
                  "_BASE_: ../base.yaml\nMODEL:\nTRAINING:\n  BATCH_SIZE: 64\n"
                  "OPTIMIZER:\n  STEPS: [3]\n")
    monkeypatch.chdir(tmp_path / "sub" / "deeper")  # relative to the file, not to the cwd
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    cfg = load_config(str(child))
    assert cfg.SEED == 1  # from grand
    assert cfg.MODEL.NAME == "resnest101"  # an empty child section keeps the base's
    assert cfg.TRAINING.EPOCHS == 20  # base beats grand
    assert cfg.TRAINING.BATCH_SIZE == 64  # child beats both
    assert cfg.OPTIMIZER.STEPS == [3]  # lists are replaced, not merged
    assert load_config(child, ["TRAINING.EPOCHS=7"]).TRAINING.EPOCHS == 7  # PathLike too


def test_base_list_and_error_origin(tmp_path):
    write(tmp_path / "a.yaml", "TRAINING:\n  EPOCHS: 0\n")
    write(tmp_path / "b.yaml", "SEED: 5\n")
    child = write(tmp_path / "c.yaml", "_BASE_: [a.yaml, b.yaml]\n")
    msg = error(load_config, str(child))
    assert msg.startswith("TRAINING.EPOCHS: expected an integer >= 1, got 0")
    assert "a.yaml" in msg  # where the bad value came from
    assert load_config(str(child), ["TRAINING.EPOCHS=30"]).SEED == 5


def test_base_cycles(tmp_path):
    a = write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")
    write(tmp_path / "b.yaml", "_BASE_: a.yaml\n")
    msg = error(load_config, str(a))
    assert "cycle" in msg and "a.yaml" in msg and "b.yaml" in msg
    selfref = write(tmp_path / "self.yaml", "_BASE_: ./self.yaml\n")
    assert "cycle" in error(load_config, str(selfref))


def test_diamond_is_not_a_cycle(tmp_path):
    write(tmp_path / "root.yaml", "SEED: 2\n")
    write(tmp_path / "l.yaml", "_BASE_: root.yaml\n")
    write(tmp_path / "r.yaml", "_BASE_: root.yaml\n")
    top = write(tmp_path / "top.yaml", "_BASE_: [l.yaml, r.yaml]\n")
    assert load_config(str(top)).SEED == 2


def test_missing_base(tmp_path):
    child = write(tmp_path / "child.yaml", "_BASE_: nothere.yaml\n")
    msg = error(load_config, str(child))
    assert msg.startswith(str(child)) and "nothere.yaml" in msg and "not found" in msg


@pytest.mark.parametrize("text, expect", [
    ("TRAINING:\n  EPOCHS: [5\n", ":4:"),  # syntax error at the line it is found (after FORMAT)
    ("TRAINING:\n  EPOCHS: 5\n  EPOCHS: 6\n", ":4:"),  # duplicate key, line of the repeat
    ("- 1\n- 2\n", "mapping"),  # not a mapping (written without the FORMAT line)
    ("_BASE_: 3\n", "_BASE_"),
    ("MODEL: resnest50\n", "MODEL: expected a mapping"),
])
def test_file_errors_name_the_path(tmp_path, text, expect):
    path = write(tmp_path / "bad.yaml", text, official=text.startswith("- "))
    msg = error(load_config, str(path))
    assert expect in msg
    if expect != "MODEL: expected a mapping":
        assert msg.startswith(str(path))


def test_missing_and_unreadable_files(tmp_path):
    missing = tmp_path / "missing.yaml"
    msg = error(load_config, str(missing))
    assert msg.startswith(str(missing)) and "not found" in msg
    assert error(load_config, str(tmp_path)).startswith(str(tmp_path))  # a directory
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    assert error(load_config, str(binary)).startswith(str(binary))


def test_empty_file_gives_defaults_and_yaml_quirks(tmp_path):
    assert load_config(str(write(tmp_path / "empty.yaml", ""))) == Config()
    cfg = load_config(str(write(tmp_path / "q.yaml",
                                "TRAINING:\n  AMP: off\nLOGGING:\n  PROGRESS_BAR: on\n"
                                "OPTIMIZER:\n  WEIGHT_DECAY: 5e-5\n  MIN_LR: 1.0e-6\n"
                                "DATA:\n  RAND_AUG: 2,9\n")))
    assert cfg.TRAINING.AMP == "off" and cfg.LOGGING.PROGRESS_BAR == "on"
    assert cfg.OPTIMIZER.WEIGHT_DECAY == 5e-5 and cfg.OPTIMIZER.MIN_LR == 1e-6
    assert cfg.DATA.RAND_AUG == "2,9"


# ---------------------------------------------------------------------------------- overrides

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


# ---------------------------------------------------------------------------------- validation

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


# ---------------------------------------------------------------------------------- dump / diff

def test_dump_round_trip(tmp_path):
    cfg = apply_overrides(Config(), [
        "SEED=7", "MODEL.NAME=resnest101", "MODEL.NUM_CLASSES=100", "MODEL.STEM=deep",
        "MODEL.PRETRAINED=/w/x.pth", "DATA.ROOT='1e-4'", "DATA.RAND_AUG=2,9",
        "DATA.EVAL_CROP_FRACTION=0.9", "TRAINING.AMP=off", "TRAINING.EPOCHS=100",
        "OPTIMIZER.LR_SCHEDULER=step", "OPTIMIZER.STEPS=[30,60]", "OPTIMIZER.MIN_LR=1e-10",
        "OPTIMIZER.WEIGHT_DECAY=3e-5", "OPTIMIZER.BETAS=[0.8, 0.95]", "LOGGING.PROGRESS_BAR=on",
        "TRAINING.EMA_DECAY=0.9999",
    ])
    path = tmp_path / "run" / "config.yaml"
    path.parent.mkdir()
    dump_config(cfg, path)
    assert load_config(str(path)) == cfg
    assert diff_configs(load_config(str(path)), cfg) == []
    plain = yaml.safe_load(path.read_text())  # readable by any YAML loader
    assert plain["TRAINING"]["AMP"] == "off" and plain["DATA"]["ROOT"] == "1e-4"
    assert plain["OPTIMIZER"]["MIN_LR"] == 1e-10
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.yaml"]  # no temp left
    dump_config(Config(), str(path))  # overwrite
    assert load_config(str(path)) == Config()


def test_config_to_dict_is_plain():
    d = config_to_dict(Config())
    assert list(d) == ["SEED", "MODEL", "DATA", "TRAINING", "OPTIMIZER", "LOGGING"]
    assert yaml.safe_load(yaml.safe_dump(d)) == d
    assert config_from_dict(d) == Config()


def test_diff_configs():
    a = Config()
    b = apply_overrides(a, ["LOGGING.LOG_EVERY=10", "SEED=1", "OPTIMIZER.LR=0.2"])
    assert diff_configs(a, b) == [("SEED", 0, 1), ("OPTIMIZER.LR", 0.1, 0.2),
                                  ("LOGGING.LOG_EVERY", 50, 10)]
    assert diff_configs(a, Config()) == []


# ---------------------------------------------------------------------------------- resume rules

def test_resume_key_sets_partition_all_keys():
    keys = set(all_keys())
    assert TRAJECTORY_KEYS | RESUME_SAFE_KEYS == keys
    assert not TRAJECTORY_KEYS & RESUME_SAFE_KEYS
    assert NONDETERMINISTIC_SAFE_KEYS <= TRAJECTORY_KEYS
    for k in ["DATA.ROOT", "DATA.DOWNLOAD", "DATA.WORKERS", "TRAINING.DIST_TIMEOUT",
              "TRAINING.TEST_BATCH_SIZE",
              "LOGGING.LOG_EVERY", "LOGGING.TENSORBOARD", "LOGGING.PROGRESS_BAR"]:
        assert k in RESUME_SAFE_KEYS
    for k in ["SEED", "OPTIMIZER.LR", "TRAINING.EPOCHS", "TRAINING.BATCH_SIZE", "TRAINING.AMP",
              "DATA.FAST_JPEG", "MODEL.GRAD_CHECKPOINTING", "MODEL.SYNC_BN"]:
        assert k in TRAJECTORY_KEYS


def test_resume_with_harmless_changes_passes():
    saved = Config()
    new = apply_overrides(saved, ["DATA.ROOT=/new/place", "DATA.DOWNLOAD=true",
                                  "DATA.SKIP_CORRUPT=true", "TRAINING.DIST_TIMEOUT=60",
                                  "TRAINING.TEST_BATCH_SIZE=64", "TRAINING.KEEP_CHECKPOINTS=5",
                                  "LOGGING.LOG_EVERY=1", "LOGGING.PROGRESS_BAR=off",
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


def test_every_field_has_documentation():
    for sec in dataclasses.fields(Config):
        cls = sec.default_factory if sec.name != "SEED" else None
        fields = dataclasses.fields(cls) if cls else [sec]
        for f in fields:
            assert f.metadata.get("doc"), f.name
