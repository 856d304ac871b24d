"""A Python user and a YAML user get the same default for every key both can set; the deliberate
differences are exactly the ones docs/configuration.md lists."""
import dataclasses
import inspect
from pathlib import Path

import pytest

from resnest_engine.config import Config
from resnest_engine.config.options import option_keys
from resnest_engine.config.schema import ALL_KEYS, key_field
from resnest_engine.data import DataOptions, MixupCutmix
from resnest_engine.engine import create_evaluator, create_optimizer, create_trainer, param_groups
from resnest_engine.handlers import (NanGuard, StandardOptions, TrainLogger, Validation,
                                     create_best_checkpointer, create_lr_scheduler,
                                     create_progress_bar, create_resume_checkpointer)
from resnest_engine.models.resnet import ResNet

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

# (builder, keyword, key): the keyword sets what the key sets, in the same unit.
SAME = [
    (create_trainer, "amp", "TRAINING.AMP"),
    (create_trainer, "grad_accum", "TRAINING.GRAD_ACCUM"),
    (create_trainer, "clip_grad", "TRAINING.CLIP_GRAD"),
    (create_trainer, "channels_last", "MODEL.CHANNELS_LAST"),
    (create_trainer, "deterministic", "TRAINING.DETERMINISTIC"),
    (create_evaluator, "amp", "TRAINING.AMP"),
    (create_evaluator, "channels_last", "MODEL.CHANNELS_LAST"),
    (create_optimizer, "momentum", "OPTIMIZER.MOMENTUM"),
    (create_optimizer, "betas", "OPTIMIZER.BETAS"),
    (param_groups, "no_bn_wd", "OPTIMIZER.DISABLE_BN_WD"),
    (param_groups, "body_lr_scale", "OPTIMIZER.BODY_LR_SCALE"),
    (create_lr_scheduler, "warmup_start_factor", "OPTIMIZER.WARMUP_START_FACTOR"),
    (create_lr_scheduler, "min_lr", "OPTIMIZER.MIN_LR"),
    (create_lr_scheduler, "milestones", "OPTIMIZER.STEPS"),
    (create_lr_scheduler, "gamma", "OPTIMIZER.GAMMA"),
    (create_lr_scheduler, "power", "OPTIMIZER.POLY_POWER"),
    (MixupCutmix, "mixup_alpha", "DATA.MIXUP"),
    (MixupCutmix, "cutmix_alpha", "DATA.CUTMIX"),
    (MixupCutmix, "prob", "DATA.MIXUP_PROB"),
    (MixupCutmix, "switch_prob", "DATA.MIXUP_SWITCH_PROB"),
    (MixupCutmix, "label_smoothing", "DATA.LABEL_SMOOTHING"),
    (MixupCutmix.attach, "off_epoch", "DATA.MIXUP_OFF_EPOCH"),
    (Validation, "every", "TRAINING.VAL_EVERY"),
    (Validation, "start", "TRAINING.VAL_START"),
    (TrainLogger, "every", "LOGGING.LOG_EVERY"),
    (NanGuard, "every", "TRAINING.NAN_CHECK_EVERY"),
    (create_progress_bar, "mode", "LOGGING.PROGRESS_BAR"),
    (create_resume_checkpointer, "n_saved", "TRAINING.KEEP_CHECKPOINTS"),
    (create_best_checkpointer, "n_saved", "TRAINING.KEEP_BEST"),
    (ResNet, "in_chans", "MODEL.IN_CHANS"),
    (ResNet, "dropblock_prob", "MODEL.DROPBLOCK_PROB"),
    (ResNet, "final_drop", "MODEL.FINAL_DROP"),
]
# On purpose; each is a row of the docs table.
DIFFERENT = [
    (create_optimizer, "weight_decay", "OPTIMIZER.WEIGHT_DECAY"),
    (create_lr_scheduler, "warmup_steps", "OPTIMIZER.WARMUP_EPOCHS"),
    (ResNet, "zero_init_last", "MODEL.ZERO_INIT_LAST"),
    (create_trainer, "seed", "SEED"),
]


def _default(fn, name):
    return inspect.signature(fn).parameters[name].default


def _schema_default(key):
    f = key_field(key)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _same(a, b):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


@pytest.mark.parametrize("fn,name,key", SAME, ids=[f"{f.__qualname__}.{n}" for f, n, _ in SAME])
def test_builder_default_is_the_schema_default(fn, name, key):
    assert _same(_default(fn, name), _schema_default(key)), (fn, name, key)


@pytest.mark.parametrize("fn,name,key", DIFFERENT,
                         ids=[f"{f.__qualname__}.{n}" for f, n, _ in DIFFERENT])
def test_deliberate_differences_are_real_and_documented(fn, name, key):
    assert not _same(_default(fn, name), _schema_default(key))
    rows = [line for line in DOC.read_text().splitlines()
            if line.startswith("| `") and f"{name}=" in line and f"`{key}`" in line]
    assert len(rows) == 1, f"docs/configuration.md lacks the row for {name} / {key}"


def test_docs_table_lists_nothing_else():
    text = DOC.read_text().split("<!-- library defaults that differ")[1].split("\n\n")[0]
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == len(DIFFERENT)


@pytest.mark.parametrize("options_cls", [DataOptions, StandardOptions])
def test_option_objects_take_the_schema_defaults(options_cls):
    keys = option_keys(options_cls)
    made = options_cls()
    cfg = Config()
    for name, key in keys.items():
        section, _, leaf = key.rpartition(".")
        yaml_default = getattr(getattr(cfg, section) if section else cfg, leaf)
        value = getattr(made, name)
        if name == "rand_aug" or yaml_default is None and name in (
                "crop_size", "eval_crop_fraction", "interpolation"):
            continue  # held in the library's form / the default variant's value (docs)
        assert value == yaml_default, (name, key)
    # Own fields are not config keys restated. DataOptions.channels_last is the layout of the
    # fast JPEG path's batch, not MODEL.CHANNELS_LAST (the model's memory format).
    own = {f.name for f in dataclasses.fields(options_cls)} - set(keys)
    leaves = {k.rsplit(".", 1)[-1].lower() for k in ALL_KEYS}
    assert own & leaves <= {"channels_last"}


def test_data_options_null_geometry_is_the_default_variants():
    from resnest_engine.models.registry import get_variant
    v, opts = get_variant("resnest50"), DataOptions()
    assert (opts.crop_size, opts.eval_crop_fraction, opts.interpolation) == (
        v.crop_size, v.eval_crop_fraction, v.interpolation)


def test_option_objects_check_values_with_the_key_rule():
    from resnest_engine.data import DataError
    with pytest.raises(DataError, match=r"^data\.workers: expected an integer >= 0, got -1"):
        DataOptions(workers=-1)
    with pytest.raises(ValueError, match=r"^training\.keep_checkpoints: expected an integer >= 1"):
        StandardOptions(keep_checkpoints=0)
    with pytest.raises(ValueError, match=r"^logging\.progress_bar: expected one of"):
        StandardOptions(progress_bar="sometimes")
    assert DataOptions(rand_aug="2, 9").rand_aug == (2, 9)
    assert StandardOptions(progress_bar=False).progress_bar == "off"  # YAML's off, as the key
