"""--eval-only reads only the split it evaluates: a ROOT with only val/, a tiny train/ or a full
one give the same numbers, those of the weights on the val images (the train images look like
other classes, so reading them would change the numbers). In this process (run_main): an
evaluation of 12 images."""
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.support.cli import TINY, merge, run_main

from resnest_engine.models import get_model

CLASSES = ["ant", "bee", "cat"]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def images(rng, c, n):
    """``n`` 32x32 RGB images of class ``c``: noise around a brightness of its own."""
    return np.clip(rng.normal(60 + 70 * c, 20, (n, 32, 32, 3)), 0, 255).astype(np.uint8)


def write_split(root, split, per_class, seed, shift=0):
    """ROOT/split/<class>/<i>.png; ``shift``: each class drawn as the one ``shift`` after it."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        d = root / split / name
        d.mkdir(parents=True)
        for i, pixels in enumerate(images(rng, (c + shift) % len(CLASSES), per_class)):
            Image.fromarray(pixels).save(d / f"{i}.png")


def normalise(pixels):
    x = torch.from_numpy(np.array(pixels)).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random resnest14 whose classifier is a least-squares probe on 2 images a class (other
    draws than the val images): it tells the classes apart."""
    path = tmp_path_factory.mktemp("w") / "weights.pt"
    torch.manual_seed(0)
    model = get_model("resnest14", num_classes=3).eval()
    rng = np.random.default_rng(3)
    x = normalise(np.concatenate([images(rng, c, 2) for c in range(3)]))
    target = torch.nn.functional.one_hot(torch.arange(3).repeat_interleave(2), 3).float()
    with torch.no_grad():
        features = model.forward_head(model.forward_features(x), pre_logits=True)
        model.fc.weight.copy_(torch.linalg.lstsq(features, target).solution.T)
        model.fc.bias.zero_()
    torch.save(model.state_dict(), path)
    return path


def expected_top1(weights, val):
    """Top-1 of ``weights`` on the 32x32 val PNGs, computed here: at the crop size the eval
    transform is only the ImageNet normalisation."""
    model = get_model("resnest14", num_classes=3)
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    correct = total = 0
    for label, name in enumerate(CLASSES):
        pngs = sorted((val / name).glob("*.png"))
        with torch.no_grad():
            preds = model(normalise([Image.open(p).convert("RGB") for p in pngs])).argmax(1)
        correct += int((preds == label).sum())
        total += len(pngs)
    return 100.0 * correct / total


# no train/ at all; 3 images < the batch of 16; a train/ the size of a real one
@pytest.mark.parametrize("train_images", [0, 1, 20])
def test_eval_only_reads_only_the_val_split(tmp_path, weights, train_images):
    root = tmp_path / "data"
    write_split(root, "val", 4, seed=1)
    if train_images:
        write_split(root, "train", train_images, seed=2, shift=1)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(merge(TINY, {"DATA": {"DATASET": "imagefolder",
                                                         "ROOT": str(root)},
                                               "TRAINING": {"BATCH_SIZE": 1024}})))
    r = run_main("--config-file", cfg, "--outdir", tmp_path / "out", "--eval-only",
                 "--resume", weights)
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "out" / "eval_metrics.json").read_text())
    assert f"Validation: Top1: {result['top1']:.3f} | Top5: {result['top5']:.3f}" in r.stdout
    expected = expected_top1(weights, root / "val")
    assert expected == 100.0  # the probe separates the classes
    assert result["top1"] == pytest.approx(expected, abs=1e-6)
    assert result["top5"] == 100.0  # 3 classes: the top 5 hold every label
