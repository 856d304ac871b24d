"""Official ResNeSt configs (no FORMAT line) are read with the official meaning, and logged."""
import glob
import json
import pathlib

import pytest
import torch
import yaml

from resnest_engine.config import config_to_dict, dump_config, effective_lr
from resnest_engine.engine import param_groups
from resnest_engine.workflows.from_config import build_model, data_options
from resnest_engine.official import OFFICIAL_DEFAULTS, load_config, read_config
from tests.support.config import error

REPO = pathlib.Path(__file__).resolve().parents[2]

# configs/Base-ResNet50.yaml of the official repository, exactly.
BASE_RESNET50 = """\
MODEL:
  NAME: 'resnet50'
TRAINING:
  EPOCHS: 120
  BATCH_SIZE: 32
OPTIMIZER:
  LR: 0.0125
"""


def write(tmp_path, text, name="official.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("world, batch, lr", [(1, 32, 0.0125), (8, 256, 0.1)])
def test_base_resnet50_resolves_with_the_official_meaning(tmp_path, world, batch, lr):
    loaded = read_config(write(tmp_path, BASE_RESNET50), world_size=world)
    cfg = loaded.config
    assert loaded.format == "official"
    assert cfg.TRAINING.BATCH_SIZE == batch and cfg.TRAINING.TEST_BATCH_SIZE == 256 * world
    assert effective_lr(cfg) == pytest.approx(lr, rel=1e-12)
    o = cfg.OPTIMIZER
    assert (o.NAME, o.MOMENTUM, o.WEIGHT_DECAY, o.DISABLE_BN_WD) == ("sgd", 0.9, 1e-4, False)
    assert (o.LR_SCHEDULER, o.WARMUP_EPOCHS, o.MIN_LR) == ("cos", 0, 0.0)
    assert cfg.TRAINING.EPOCHS == 120 and cfg.SEED == 1
    assert cfg.MODEL.NAME == "resnet50_splat" and cfg.MODEL.ZERO_INIT_LAST is False
    assert cfg.MODEL.FINAL_DROP == 0.0 and cfg.MODEL.DROPBLOCK_PROB == 0.0
    assert cfg.DATA.DATASET == "imagenet" and cfg.DATA.CROP_STYLE == "ecrop"
    assert cfg.DATA.ROOT == str(pathlib.Path("~/.encoding/data/ILSVRC2012").expanduser())
    assert cfg.DATA.RAND_AUG is None and cfg.DATA.WORKERS == 4 and cfg.DATA.MIXUP == 0.0
    # validation after 1-based epochs 1, 11, 21, ... (official 0-based epoch % 10 == 0) + the last
    assert (cfg.TRAINING.VAL_EVERY, cfg.TRAINING.VAL_START) == (10, 1)
    # the translation names the conversions
    text = "\n".join(loaded.translation)
    assert f"global batch {batch} = TRAINING.BATCH_SIZE 32 x {world} process" in text
    assert f"LR {lr:g} = OPTIMIZER.LR 0.0125 x {world} process" in text
    assert "resnet50 -> resnet50_splat" in text and "no Nesterov" in text


def test_base_resnet50_builds_the_official_network_and_decays_bn(tmp_path):
    cfg = load_config(write(tmp_path, BASE_RESNET50), world_size=8)
    with torch.device("meta"):
        model = build_model(cfg, 1000)
    assert sum(p.numel() for p in model.parameters()) == 26_198_664  # 26.20M, not 25.56M
    assert "layer1.0.conv2.fc1.weight" in model.state_dict()
    # weight decay on every parameter, BN included (DISABLE_BN_WD false), no zero-init
    groups = param_groups(model, cfg.OPTIMIZER.WEIGHT_DECAY, no_bn_wd=cfg.OPTIMIZER.DISABLE_BN_WD)
    decayed = sum(p.numel() for g in groups if g["weight_decay"] > 0 for p in g["params"])
    assert decayed == sum(p.numel() for p in model.parameters())
    real = build_model(cfg, 10)
    assert all(bool((b.bn3.weight == 1).all()) for b in real.modules() if hasattr(b, "bn3"))


def test_every_official_key_lands_where_the_notes_say(tmp_path):
    """All official keys set to non-default values."""
    text = """\
SEED: 7
DATA:
  DATASET: CIFAR10
  ROOT: ~/cifar
  BASE_SIZE: 40
  CROP_SIZE: 32
  LABEL_SMOOTHING: 0.1
  MIXUP: 0.2
  RAND_AUG: true
MODEL:
  NAME: resnest101
  FINAL_DROP: 0.2
TRAINING:
  BATCH_SIZE: 16
  TEST_BATCH_SIZE: 50
  LAST_GAMMA: true
  EPOCHS: 30
  START_EPOCHS: 0
  WORKERS: 2
OPTIMIZER:
  LR: 0.01
  LR_SCHEDULER: poly
  MOMENTUM: 0.8
  WEIGHT_DECAY: 5.0e-5
  DISABLE_BN_WD: true
  WARMUP_EPOCHS: 3
"""
    loaded = read_config(write(tmp_path, text), world_size=4)
    cfg = loaded.config
    assert set(OFFICIAL_DEFAULTS) >= {f"{s}.{k}" for s, v in yaml.safe_load(text).items()
                                      if isinstance(v, dict) for k in v}
    assert cfg.SEED == 7
    assert cfg.DATA.DATASET == "cifar10" and cfg.DATA.ROOT == str(pathlib.Path("~/cifar").expanduser())
    assert cfg.DATA.CROP_SIZE == 32 and cfg.DATA.LABEL_SMOOTHING == 0.1 and cfg.DATA.MIXUP == 0.2
    assert cfg.DATA.RAND_AUG == "2,12"
    assert cfg.MODEL.NAME == "resnest101" and cfg.MODEL.FINAL_DROP == 0.2
    assert cfg.TRAINING.BATCH_SIZE == 64 and cfg.TRAINING.TEST_BATCH_SIZE == 200
    assert cfg.MODEL.ZERO_INIT_LAST is True
    assert cfg.TRAINING.EPOCHS == 30 and cfg.DATA.WORKERS == 2
    assert effective_lr(cfg) == pytest.approx(0.04)  # 0.01 per GPU x 4
    o = cfg.OPTIMIZER
    assert (o.LR_SCHEDULER, o.MOMENTUM, o.WEIGHT_DECAY, o.DISABLE_BN_WD, o.WARMUP_EPOCHS) == \
        ("poly", 0.8, 5e-5, True, 3)
    text = "\n".join(loaded.translation)
    for approx in ("RAND_AUG", "DISABLE_BN_WD", "LAST_GAMMA", "warmup", "DATA.BASE_SIZE 40 ignored"):
        assert f"approximated: {approx}" in text, approx
    opts = data_options(cfg)
    assert opts.ecrop_min_size == 0 and opts.rand_aug == (2, 12)


@pytest.mark.parametrize("text, starts, contains", [
    ("MODEL:\n  FINAL_DROP: true\n", "MODEL.FINAL_DROP", "p=1.0"),
    ("OPTIMIZER:\n  LR_SCHEDULER: step\n", "OPTIMIZER.LR_SCHEDULER", "lr_step"),
    ("OPTIMIZER:\n  LR_SCHEDULER: exp\n", "OPTIMIZER.LR_SCHEDULER", "'cosine'"),
    ("TRAINING:\n  START_EPOCHS: 5\n", "TRAINING.START_EPOCHS", "--resume"),
    ("TRAINING:\n  BATCH_SIZE: 0\n", "TRAINING.BATCH_SIZE", ">= 1"),
    ("OPTIMIZER:\n  LR: -1\n", "OPTIMIZER.LR", "> 0"),
    ("DATA:\n  RAND_AUG: '2,9'\n", "DATA.RAND_AUG", "true or false"),
    ("MODEL:\n  NAME: resnet51\n", "MODEL.NAME", "resnet50"),
    ("TRAINING:\n  EPOHCS: 5\n", "TRAINING.EPOHCS", "did you mean TRAINING.EPOCHS"),
])
def test_official_values_without_a_faithful_translation_are_refused(tmp_path, text, starts,
                                                                     contains):
    path = write(tmp_path, text)
    msg = error(load_config, path)
    assert msg.startswith(str(path)) and starts in msg and contains in msg, msg


def test_a_file_mixing_the_formats_names_the_keys(tmp_path):
    mixed = write(tmp_path, BASE_RESNET50 + "DATA:\n  SMALL_IMAGE: true\n  CUTMIX: 1.0\n")
    msg = error(load_config, mixed)
    assert "mixes the two config formats" in msg
    assert "DATA.SMALL_IMAGE" in msg and "DATA.CUTMIX" in msg and "FORMAT: resnest-engine/1" in msg
    ours = write(tmp_path, "FORMAT: resnest-engine/1\nTRAINING:\n  LAST_GAMMA: true\n"
                 "  WORKERS: 2\n", "ours.yaml")
    msg = error(load_config, ours)
    assert "TRAINING.LAST_GAMMA" in msg and "TRAINING.WORKERS" in msg and "official" in msg
    # a _BASE_ chain must not mix formats either
    write(tmp_path, BASE_RESNET50, "base.yaml")
    child = write(tmp_path, "FORMAT: resnest-engine/1\n_BASE_: base.yaml\n", "child.yaml")
    msg = error(load_config, child)
    assert "mixes the two config formats" in msg and "base.yaml" in msg
    bad = write(tmp_path, "FORMAT: resnest-engine/2\n", "v2.yaml")
    assert "resnest-engine/1" in error(load_config, bad)


def test_overrides_of_an_official_file_keep_the_official_meaning(tmp_path):
    path = write(tmp_path, BASE_RESNET50)
    loaded = read_config(path, ["TRAINING.BATCH_SIZE=16", "TRAINING.EPOCHS=1",
                                "LOGGING.TENSORBOARD=false"], world_size=8)
    cfg = loaded.config
    assert cfg.TRAINING.BATCH_SIZE == 128 and effective_lr(cfg) == pytest.approx(0.1)
    assert cfg.TRAINING.EPOCHS == 1 and cfg.LOGGING.TENSORBOARD is False
    text = "\n".join(loaded.translation)
    assert "official meaning: TRAINING.BATCH_SIZE=16 TRAINING.EPOCHS=1" in text
    assert "resnest-engine keys: LOGGING.TENSORBOARD=false" in text


def test_the_written_config_means_the_same_run(tmp_path):
    cfg = load_config(write(tmp_path, BASE_RESNET50), world_size=8)
    dump_config(cfg, tmp_path / "config.yaml")
    again = read_config(tmp_path / "config.yaml", world_size=1)  # our format: no per-GPU scaling
    assert again.format == "resnest-engine" and again.config == cfg


def test_empty_file_is_the_official_default_config(tmp_path):
    cfg = load_config(write(tmp_path, ""), world_size=1)
    assert cfg.MODEL.NAME == "resnet50_splat" and cfg.TRAINING.BATCH_SIZE == 64
    assert effective_lr(cfg) == pytest.approx(0.025)


def test_cosine_and_timm_schedule_names(tmp_path):
    cfg = load_config(write(tmp_path, BASE_RESNET50 + "  LR_SCHEDULER: 'cosine'\n"
                            "  WARMUP_EPOCHS: 5\n"))
    assert cfg.OPTIMIZER.LR_SCHEDULER == "cos" and cfg.OPTIMIZER.WARMUP_EPOCHS == 5
    ours = tmp_path / "ours.yaml"
    ours.write_text("FORMAT: resnest-engine/1\nOPTIMIZER:\n  LR_SCHEDULER: cosine\n")
    assert load_config(ours).OPTIMIZER.LR_SCHEDULER == "cos"
    multi = load_config(ours, ["OPTIMIZER.LR_SCHEDULER=multistep", "OPTIMIZER.STEPS=[30]"])
    assert multi.OPTIMIZER.LR_SCHEDULER == "step"


def test_warmup_at_least_the_run_is_a_warning_not_an_error():
    loaded = read_config(REPO / "recipes" / "imagenet_resnest50.yaml", ["TRAINING.EPOCHS=1"])
    assert loaded.config.TRAINING.EPOCHS == 1 and loaded.config.OPTIMIZER.WARMUP_EPOCHS == 5
    assert len(loaded.warnings) == 1 and "cut to the run" in loaded.warnings[0]


QUICK_START_CHANGES = {"TRAINING.EPOCHS": (8, 6), "OPTIMIZER.LR": (0.004, 0.012),
                       "TRAINING.VAL_EVERY": (1, 2), "TRAINING.CKPT_EVERY": (1, 2)}


def test_every_shipped_recipe_resolves_as_before(tmp_path):
    """The resolved configs recorded before the two-format change, key for key."""
    before = json.loads((REPO / "tests" / "fixtures" / "recipes_resolved_v0.json").read_text())
    recipes = sorted(glob.glob(str(REPO / "recipes" / "*.yaml")))
    assert set(before) <= {pathlib.Path(p).name for p in recipes}
    for path in recipes:  # recipes added since then: our format too
        if pathlib.Path(path).name not in before:
            assert read_config(path).format == "resnest-engine", path
    recipes = [p for p in recipes if pathlib.Path(p).name in before]
    new_keys = {"DATA.CROP_STYLE": "auto", "TRAINING.VAL_START": None, "DATA.VAL_FRACTION": None,
                "OPTIMIZER.BODY_LR_SCALE": 1.0, "OPTIMIZER.FREEZE_BODY_EPOCHS": 0,
                "TRAINING.ASYNC_CHECKPOINT": True,
                "LOGGING.MLFLOW": False, "LOGGING.MLFLOW_LOG_MODEL": False,
                # issue 21: keys whose defaults keep every recipe's batches and updates bitwise
                "DATA.CACHE": "auto", "DATA.CACHE_MB": 1024, "DATA.SPLIT_SEED": None,
                "OPTIMIZER.FUSED": "auto",
                # Parquet's column names: read only with DATA.DATASET parquet
                "DATA.PARQUET_IMAGE_COLUMN": "image", "DATA.PARQUET_LABEL_COLUMN": "label",
                # the device prefetcher (on CUDA) yields the loader's batches bitwise
                "DATA.PREFETCH": "auto",
                # remote shard sets' local cache (unused by local data)
                "DATA.CACHE_DIR": None, "DATA.SHARD_CACHE_GB": 100.0,
                # the train order of shards/Parquet; auto is global (the old order) for local data
                "DATA.SHUFFLE": "auto", "DATA.SHUFFLE_WINDOW": 4,
                # issue 27: JPEGs decoded in the workers unless a recipe asks for the device
                "DATA.DECODE": "cpu"}
    for path in recipes:
        text = pathlib.Path(path).read_text()
        assert "\nFORMAT: resnest-engine/1" in text, path
        loaded = read_config(path, world_size=8)  # our format: the world size changes nothing
        assert loaded.format == "resnest-engine" and loaded.translation == []
        now = config_to_dict(loaded.config)
        old = before[pathlib.Path(path).name]
        for section, values in now.items():
            if not isinstance(values, dict):
                assert values == old[section], (path, section)
                continue
            for key, value in values.items():
                dotted = f"{section}.{key}"
                if dotted == "OPTIMIZER.FUSED" and path.endswith("digits.yaml"):
                    assert value is True  # issue 21: the quick start takes the fused AdamW
                elif dotted in new_keys:
                    assert value == new_keys[dotted], (path, dotted)
                elif dotted in ("TRAINING.AMP", "MODEL.CHANNELS_LAST") and (
                        "imagenet" in path or "cifar" in path):
                    assert value == "auto", (path, dotted)  # changed on purpose (issue 12)
                elif dotted == "TRAINING.NAN_CHECK_EVERY" and old[section][key] == 1:
                    # issue 27: the default went from 1 (a host sync per step) to 50; the
                    # trajectory is the same (the guard reads, never changes, the loss)
                    assert value == 50, path
                elif dotted in QUICK_START_CHANGES and path.endswith("digits.yaml"):
                    # the faster quick start (issue 12): 6 epochs at a higher LR instead of 8,
                    # validation and resume points every 2 epochs
                    assert (old[section][key], value) == QUICK_START_CHANGES[dotted], dotted
                else:
                    assert value == old[section][key], (path, dotted)


def test_official_crops_at_every_size(tmp_path):
    from resnest_engine.data import build_eval_transform, build_train_transform
    from resnest_engine.data.transforms import ECenterCrop, ERandomCrop
    cfg = load_config(write(tmp_path, BASE_RESNET50))
    opts = data_options(cfg)
    assert opts.crop_size == 224 and opts.ecrop_min_size == 0
    assert any(isinstance(t, ERandomCrop) for t in build_train_transform(opts).transforms)
    assert any(isinstance(t, ECenterCrop) for t in build_eval_transform(opts).transforms)
    ours = data_options(load_config(REPO / "recipes" / "imagenet_resnest50.yaml"))
    assert not any(isinstance(t, ERandomCrop) for t in build_train_transform(ours).transforms)
