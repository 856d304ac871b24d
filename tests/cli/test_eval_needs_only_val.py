"""--eval-only reads only the split it evaluates: a ROOT with only val/, or a tiny train/."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.cli.cli_helpers import TINY, merge, run_cli

from resnest_engine.models import get_model

CLASSES = ["ant", "bee", "cat"]


def write_split(root, split, per_class, seed):
    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        d = root / split / name
        d.mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(60 + 70 * c, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(d / f"{i}.png")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "weights.pt"
    torch.manual_seed(0)
    torch.save(get_model("resnest14", num_classes=3).state_dict(), path)
    return path


@pytest.mark.parametrize("train_images", [0, 1])  # no train/ at all; 3 images < the batch of 16
def test_eval_only_with_only_the_val_split(tmp_path, weights, train_images):
    import yaml
    root = tmp_path / "data"
    write_split(root, "val", 4, seed=1)
    if train_images:
        write_split(root, "train", train_images, seed=2)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(merge(TINY, {"DATA": {"DATASET": "imagefolder",
                                                         "ROOT": str(root)},
                                               "TRAINING": {"BATCH_SIZE": 1024}})))
    r = run_cli("--config-file", cfg, "--outdir", tmp_path / "out", "--eval-only",
                "--resume", weights)
    assert r.returncode == 0, r.stderr
    assert "Validation: Top1:" in r.stdout
    result = json.loads((tmp_path / "out" / "eval_metrics.json").read_text())
    assert 0 <= result["top1"] <= 100 and result["top5"] == 100.0  # 3 classes: top-5 is all
