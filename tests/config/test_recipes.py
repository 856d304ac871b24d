"""Every shipped recipe loads, and each ImageNet recipe builds its model, optimizer and
transforms as the published recipe says (no data needed)."""
from pathlib import Path

import pytest
import torch
from PIL import Image

from resnest_engine.config import effective_lr, load_config
from resnest_engine.data import build_eval_transform, build_train_transform
from resnest_engine.engine import create_optimizer, param_groups
from resnest_engine.workflows.from_config import build_model, data_options

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
IMAGENET = sorted(p for p in RECIPES.glob("imagenet_*.yaml") if p.name != "imagenet_base.yaml")
CROPS = {"resnest50": 224, "resnest101": 256, "resnest200": 320, "resnest269": 416}


def test_all_recipes_load():
    names = sorted(p.name for p in RECIPES.glob("*.yaml"))
    assert IMAGENET and "digits.yaml" in names and "cifar10_resnest.yaml" in names
    for p in RECIPES.glob("*.yaml"):
        load_config(p)


@pytest.mark.parametrize("path", IMAGENET, ids=[p.stem for p in IMAGENET])
def test_imagenet_recipe_builds(path):
    cfg = load_config(path)
    name = cfg.MODEL.NAME
    crop = CROPS.get(name, 224)
    # The published recipe.
    assert (cfg.TRAINING.EPOCHS, cfg.OPTIMIZER.LR_SCHEDULER, cfg.OPTIMIZER.WARMUP_EPOCHS) == (270, "cos", 5)
    assert cfg.OPTIMIZER.NAME == "nesterov" and cfg.OPTIMIZER.MOMENTUM == 0.9
    assert cfg.OPTIMIZER.WEIGHT_DECAY == 1e-4 and cfg.OPTIMIZER.DISABLE_BN_WD
    assert effective_lr(cfg) == pytest.approx(0.1 * cfg.TRAINING.BATCH_SIZE / 256)
    assert (cfg.DATA.LABEL_SMOOTHING, cfg.DATA.MIXUP, cfg.DATA.AUTO_AUG) == (0.1, 0.2, True)
    assert cfg.MODEL.ZERO_INIT_LAST
    deep = name in ("resnest200", "resnest269")
    assert (cfg.MODEL.DROPBLOCK_PROB, cfg.MODEL.FINAL_DROP) == ((0.1, 0.2) if deep else (0.0, 0.0))

    opts = data_options(cfg)
    assert opts.crop_size == crop
    img = Image.new("RGB", (500, 375), (120, 80, 40))
    x = build_train_transform(opts)(img)
    assert tuple(x.shape) == (3, crop, crop) and x.dtype == torch.float32
    assert tuple(build_eval_transform(opts)(img).shape) == (3, crop, crop)
    assert opts.interpolation == ("bicubic" if crop >= 320 else "bilinear")

    model = build_model(cfg, num_classes=1000)
    assert model.variant == name
    assert all(float(b.bn3.weight.detach().abs().sum()) == 0 for b in model.modules() if hasattr(b, "bn3"))
    opt = create_optimizer(param_groups(model, cfg.OPTIMIZER.WEIGHT_DECAY), cfg.OPTIMIZER.NAME,
                           effective_lr(cfg), cfg.OPTIMIZER.MOMENTUM)
    assert opt.defaults["nesterov"] and opt.param_groups[1]["weight_decay"] == 0.0
