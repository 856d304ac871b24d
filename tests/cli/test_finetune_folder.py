"""Fine-tuning end to end: "published" weights served locally, a single folder of real digit
PNGs split by fraction, against the same recipe from scratch."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tests.support.cli import run_main

from resnest_engine.models import get_model, published
from tests.support.weights_server import WeightsServer, publish

pytestmark = pytest.mark.slow
SHAPE = ["MODEL.NAME=resnest14", "DATA.CROP_SIZE=32", "DATA.SMALL_IMAGE=true", "DATA.HFLIP=false",
         "DATA.COLOR_JITTER=0", "DATA.PCA_LIGHTING=0", "DATA.WORKERS=0", "DATA.VAL_FRACTION=0.25",
         "TRAINING.EPOCHS=2", "TRAINING.BATCH_SIZE=32", "TRAINING.TEST_BATCH_SIZE=200",
         "TRAINING.DETERMINISTIC=true", "LOGGING.TENSORBOARD=false", "LOGGING.LOG_EVERY=50"]


def digits_folder(root):
    """Every fourth scikit-learn digit (i = 1, 5, 9, ...: 450 images, none of the source task's
    even-indexed ones) as ROOT/<digit>/<i>.png (32x32 greyscale). Few images a class, where
    fine-tuning matters: 91% against 23% from scratch here."""
    from sklearn.datasets import load_digits
    d = load_digits()
    for i in range(1, len(d.images), 4):
        img = Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).resize((32, 32))
        (root / str(d.target[i])).mkdir(parents=True, exist_ok=True)
        img.convert("RGB").save(root / str(d.target[i]) / f"{i}.png")


def pretrained_resnest14():
    """A 1000-class resnest14 trained for one epoch on the even-indexed digits (the source task,
    disjoint from the fine-tuning folder), with the folder pipeline's normalisation."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images[0::2], dtype=torch.float32).div(16).unsqueeze(1)
    x = nn.functional.interpolate(x, size=32, mode="bilinear").repeat(1, 3, 1, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x, y = (x - mean) / std, torch.tensor(d.target[0::2])
    torch.manual_seed(0)
    model = get_model("resnest14", num_classes=1000).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for idx in torch.randperm(len(y)).split(64):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.state_dict()


def test_finetune_beats_scratch_and_stores_class_names(tmp_path, monkeypatch):
    root = tmp_path / "digits"
    digits_folder(root)
    srv = tmp_path / "srv"
    prefix = publish(srv, "resnest14", pretrained_resnest14())
    monkeypatch.setitem(published.PUBLISHED_WEIGHTS, "resnest14", prefix)
    old_hub = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    server = WeightsServer(srv)
    monkeypatch.setenv(published.WEIGHTS_URL_ENV, server.url)
    try:
        runs = {}
        for name, extra in (("finetune", []), ("scratch", ["MODEL.PRETRAINED=null",
                                                             "OPTIMIZER.BODY_LR_SCALE=1.0",
                                                             "OPTIMIZER.FREEZE_BODY_EPOCHS=0"])):
            out = tmp_path / name
            r = run_main("--config-file", "recipes/finetune_folder.yaml", "--outdir", out,
                         f"DATA.ROOT={root}", *SHAPE, *extra)
            assert r.returncode == 0, r.stderr
            runs[name] = json.loads((out / "metrics.json").read_text())
        assert len(server.requests) == 1  # downloaded once, then cached
    finally:
        server.close()
        torch.hub.set_dir(old_hub)
    log = (tmp_path / "finetune" / "log.txt").read_text()
    assert f"Pretrained weights from {server.url}/resnest14-{prefix}.pth; classifier " \
           "re-initialised" in log
    assert "body LR 0.0005 = x0.1" in log and "body frozen in epochs 1-1" in log
    assert "Epoch 2: the body is unfrozen" in log
    assert json.loads((tmp_path / "finetune" / "classes.json").read_text()) == \
        [str(d) for d in range(10)]
    ft, sc = runs["finetune"]["top1"], runs["scratch"]["top1"]
    print(f"digits folder (450 images, 25% val), 2 epochs: fine-tuned {ft:.2f}% vs scratch "
          f"{sc:.2f}%")
    assert ft > sc + 5, (ft, sc)
