"""The quick start against timm, same machine, same run: top-1 and wall time on a digits PNG folder.

Writes scikit-learn's digits (the digits recipe's own 1437/360 split, 32x32) as
ROOT/train/<digit>/*.png and ROOT/val/<digit>/*.png, then, each in its own process and timed
from process start to exit:

* ours: ``resnest-train --config-file recipes/digits.yaml`` on that folder (DATA.DATASET
  imagefolder), the recipe unchanged otherwise;
* timm, ``train.py`` defaults: a loop from timm's own components (``create_dataset`` /
  ``create_loader`` with its default augmentation, ``resnest14d``, ``create_optimizer_v2``,
  ``create_scheduler_v2``, ``LabelSmoothingCrossEntropy``) set as timm's ``train.py`` sets them
  when run with ``--model resnest14d --epochs 15 --input-size 3 32 32`` and nothing else: batch
  128, SGD momentum 0.9 at LR 0.05 (0.1 per 256), weight decay 2e-5, cosine with 5 warmup epochs
  from 1e-5, label smoothing 0.1, RandomResizedCrop scale 0.08-1, flip 0.5, colour jitter 0.4.
  This is what a timm user runs, and the issue's goal (0.5x) is against it;
* timm, our recipe's hyperparameters: the same components set like ``recipes/digits.yaml``
  (AdamW at the recipe's LR and decay, its warmup, epochs and batch, read from the recipe;
  RandomResizedCrop at scale 0.5-1 standing in for our pad-crop, no flip, no colour jitter,
  validating at the recipe's VAL_EVERY epochs as our run does): the like-for-like comparison of
  the two engines, the same epochs and the same number of validations.

Prints a line per seed and the median ratios (the goal is a median ``ratio_vs_timm_recipe`` <=
0.95, see benchmarks/goals.py) and writes the rows and the medians with the machine to
``benchmarks/results/quickstart.json`` (``--json PATH``: elsewhere). Usage:
``python benchmarks/quickstart.py [--seeds 0 1 2]``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.record import write_result  # noqa: E402

TIMM_LOOP = r'''
import json, sys, time, torch
from timm import create_model
from timm.data import create_dataset, create_loader
from timm.loss import LabelSmoothingCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
root, seed, setting, recipe = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
torch.manual_seed(seed)
train = create_dataset("", root=f"{root}/train")
val = create_dataset("", root=f"{root}/val")
kw = dict(input_size=(3, 32, 32), use_prefetcher=False, num_workers=0, device=torch.device("cpu"))
if setting == "train.py":  # timm train.py's defaults for --epochs 15 --input-size 3 32 32
    epochs, batch = 15, 128
    aug = dict(scale=(0.08, 1.0), hflip=0.5, color_jitter=0.4)
    opt_kw = dict(opt="sgd", lr=0.1 * batch / 256, momentum=0.9, weight_decay=2e-5)
    sched_kw = dict(warmup_epochs=5, warmup_lr=1e-5)
else:  # recipes/digits.yaml's hyperparameters, read from the recipe by the parent
    epochs, batch = recipe["epochs"], recipe["batch"]
    aug = dict(scale=(0.5, 1.0), hflip=0.0, color_jitter=0.0)
    opt_kw = dict(opt="adamw", lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    sched_kw = dict(warmup_epochs=recipe["warmup_epochs"], warmup_lr=1e-6)
train_loader = create_loader(train, batch_size=batch, is_training=True, persistent_workers=False,
                             **aug, **kw)
val_loader = create_loader(val, batch_size=360, is_training=False, crop_pct=1.0,
                           persistent_workers=False, **kw)
model = create_model("resnest14d", num_classes=10)
opt = create_optimizer_v2(model, **opt_kw)
sched, _ = create_scheduler_v2(opt, sched="cosine", num_epochs=epochs,
                               updates_per_epoch=len(train_loader), step_on_epochs=False,
                               **sched_kw)
loss_fn = LabelSmoothingCrossEntropy(0.1 if setting == "train.py" else recipe["label_smoothing"])
step = 0
for epoch in range(epochs):
    model.train()
    for x, y in train_loader:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        step += 1
        sched.step_update(step)
    if setting != "train.py" and (epoch + 1) % recipe["val_every"] and epoch + 1 < epochs:
        continue  # at our hyperparameters, validate when our run does (TRAINING.VAL_EVERY)
    model.eval()
    correct = n = 0
    with torch.no_grad():
        for x, y in val_loader:
            correct += (model(x).argmax(1) == y).sum().item()
            n += len(y)
    print(f"epoch {epoch + 1} top1 {100.0 * correct / n:.3f}", flush=True)
'''


def write_digits_folder(root: Path) -> None:
    sys.path.insert(0, str(REPO))
    from resnest_engine.data import DataOptions, build_dataset
    for split in ("train", "val"):
        ds = build_dataset(DataOptions(dataset="digits", image_size=32), split)
        for i in range(len(ds)):
            img, label = ds[i]
            d = root / split / str(label)
            d.mkdir(parents=True, exist_ok=True)
            img.convert("RGB").save(d / f"{i}.png")


def recipe_hyperparameters() -> dict:
    """The digits recipe's schedule as timm's factories take it (LR at the recipe's batch)."""
    sys.path.insert(0, str(REPO))
    from resnest_engine.config import read_config
    c = read_config(REPO / "recipes" / "digits.yaml").config
    assert c.OPTIMIZER.NAME == "adamw" and c.OPTIMIZER.LR_SCHEDULER == "cos", "recipe changed"
    return dict(epochs=c.TRAINING.EPOCHS, batch=c.TRAINING.BATCH_SIZE,
                lr=c.OPTIMIZER.LR * c.TRAINING.BATCH_SIZE / 256,
                weight_decay=c.OPTIMIZER.WEIGHT_DECAY, warmup_epochs=c.OPTIMIZER.WARMUP_EPOCHS,
                label_smoothing=c.DATA.LABEL_SMOOTHING, val_every=c.TRAINING.VAL_EVERY)


def timed(cmd, env) -> tuple:
    start = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{r.stderr[-2000:]}")
    return wall, r.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--json", help="results file (default benchmarks/results/quickstart.json)")
    a = p.parse_args()
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    rows = []
    recipe = recipe_hyperparameters()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "digits"
        write_digits_folder(root)
        for seed in a.seeds:
            wall, out = timed([sys.executable, "-m", "resnest_engine.cli", "--config-file",
                               "recipes/digits.yaml", "--outdir", Path(tmp) / f"ours{seed}",
                               "DATA.DATASET=imagefolder", f"DATA.ROOT={root}", f"SEED={seed}"],
                              env)
            ours = float(re.findall(r"Validation: Top1: ([\d.]+)", out)[-1])
            row = dict(seed=seed, ours_top1=ours, ours_s=round(wall, 1))
            line = f"seed {seed}: ours {ours:.2f}% in {wall:.1f} s"
            for setting, key in (("train.py", "timm_trainpy"), ("recipe", "timm_recipe")):
                t_wall, t_out = timed([sys.executable, "-c", TIMM_LOOP, str(root), str(seed),
                                       setting, json.dumps(recipe)], env)
                theirs = float(re.findall(r"top1 ([\d.]+)", t_out)[-1])
                row.update({f"{key}_top1": theirs, f"{key}_s": round(t_wall, 1),
                            f"ratio_vs_{key}": round(wall / t_wall, 3)})
                line += (f" | timm ({setting}) {theirs:.2f}% in {t_wall:.1f} s, ratio "
                         f"{wall / t_wall:.3f}")
            rows.append(row)
            print(line, flush=True)
    medians = {key: statistics.median(r[key] for r in rows)
               for key in ("ratio_vs_timm_trainpy", "ratio_vs_timm_recipe")}
    print("median ratio: " + ", ".join(f"{k} {v:.3f}" for k, v in medians.items()))
    write_result("quickstart", (
        f"top-1 (%) and wall time (s, process start to exit) of the digits recipe on a PNG folder: "
        f"resnest-train vs timm train.py defaults and timm at the recipe's hyperparameters, seeds "
        f"{a.seeds}, OMP_NUM_THREADS {env['OMP_NUM_THREADS']}"),
        dict(threads=env["OMP_NUM_THREADS"], runs=rows,
             **{f"median_{k}": v for k, v in medians.items()}), a.json)


if __name__ == "__main__":
    main()
