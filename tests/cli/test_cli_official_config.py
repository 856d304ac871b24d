"""The official workflow through the CLI: --print-config, translation in the log, smoke runs of
a recipe with EPOCHS=1, and resuming an official checkpoint_N.pth."""
import json

import pytest
import torch
import yaml
from torch import nn

from tests.support.cli import TINY, merge, run_cli, run_main

from resnest_engine.models import get_model

BASE_RESNET50 = "MODEL:\n  NAME: 'resnet50'\nTRAINING:\n  EPOCHS: 120\n  BATCH_SIZE: 32\n" \
                "OPTIMIZER:\n  LR: 0.0125\n"

# An official config (no FORMAT line) for a tiny run: official keys in the file, our
# synthetic-data keys on the command line.
OFFICIAL_TINY = """\
SEED: 0
DATA:
  DATASET: synthetic
  CROP_SIZE: 32
MODEL:
  NAME: resnest14
TRAINING:
  BATCH_SIZE: 16
  TEST_BATCH_SIZE: 16
  EPOCHS: 3
  WORKERS: 0
OPTIMIZER:
  LR: 0.05
"""
OURS_ON_TOP = ["DATA.SYNTHETIC_SIZE=48", "DATA.SYNTHETIC_CLASSES=4", "DATA.IMAGE_SIZE=32",
               "DATA.SMALL_IMAGE=true", "LOGGING.TENSORBOARD=false", "LOGGING.LOG_EVERY=1",
               "TRAINING.DETERMINISTIC=true"]


def test_print_config_resolves_base_resnet50_for_8_processes(tmp_path, monkeypatch):
    cfg = tmp_path / "Base-ResNet50.yaml"
    cfg.write_text(BASE_RESNET50)
    monkeypatch.chdir(tmp_path)
    r = run_main("--config-file", cfg, "--nproc-per-node", "8", "--print-config")
    assert r.returncode == 0, r.stderr
    printed = yaml.safe_load(r.stdout)
    assert printed["FORMAT"] == "resnest-engine/1"
    assert printed["TRAINING"]["BATCH_SIZE"] == 256 and printed["MODEL"]["NAME"] == "resnet50_splat"
    assert printed["OPTIMIZER"]["NAME"] == "sgd" and printed["OPTIMIZER"]["WARMUP_EPOCHS"] == 0
    assert "global batch 256 = TRAINING.BATCH_SIZE 32 x 8 processes" in r.stderr
    assert "LR 0.1 = OPTIMIZER.LR 0.0125 x 8 processes" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Base-ResNet50.yaml"]  # wrote nothing
    # the printed config is a config of ours that means the same run on any world size
    again = tmp_path / "printed.yaml"
    again.write_text(r.stdout)
    r2 = run_main("--config-file", again, "--print-config")
    assert r2.returncode == 0 and yaml.safe_load(r2.stdout) == printed and r2.stderr == ""


def test_print_config_errors_as_usual(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(BASE_RESNET50 + "  LR_SCHEDULER: step\n")
    r = run_main("--config-file", cfg, "--print-config")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "OPTIMIZER.LR_SCHEDULER" in r.stderr


def test_recipe_with_one_epoch_is_allowed_with_a_warning():
    r = run_main("--config-file", "recipes/imagenet_resnest50.yaml", "--print-config",
                 "TRAINING.EPOCHS=1")
    assert r.returncode == 0, r.stderr
    assert "warning: OPTIMIZER.WARMUP_EPOCHS 5 >= TRAINING.EPOCHS 1" in r.stderr


@pytest.mark.slow  # a whole run
def test_smoke_run_with_one_epoch_cuts_the_warmup_to_the_run(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(merge(TINY, {"TRAINING": {"EPOCHS": 1}})))  # warmup 1 epoch
    r = run_main("--config-file", cfg, "--outdir", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    assert "cut to the run" in (tmp_path / "run" / "log.txt").read_text()


def _official_checkpoint(path, epoch):
    """checkpoint_{epoch}.pth in the official train.py layout, after a few official-style steps
    (SGD over model.parameters(): one param group, as without DISABLE_BN_WD)."""
    torch.manual_seed(0)
    model = get_model("resnest14", num_classes=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)),
                                    torch.randint(0, 4, (4,))).backward()
        opt.step()
    torch.save({"epoch": epoch, "state_dict": model.state_dict(), "optimizer": opt.state_dict(),
                "best_pred": 25.0, "acclist_train": [30.0], "acclist_val": [25.0]}, path)


@pytest.mark.slow
def test_official_config_and_checkpoint_resume_at_the_next_epoch(tmp_path):
    cfg = tmp_path / "official.yaml"
    cfg.write_text(OFFICIAL_TINY)
    ckpt = tmp_path / "checkpoint_0.pth"
    _official_checkpoint(ckpt, epoch=0)  # official epoch 0 done -> continue at epoch 2 of 3
    run = tmp_path / "run"
    r = run_cli("--config-file", cfg, "--outdir", run, "--resume", ckpt, *OURS_ON_TOP)
    assert r.returncode == 0, r.stderr
    log = (run / "log.txt").read_text()
    assert "official config" in log and "global batch 16 = TRAINING.BATCH_SIZE 16 x 1 process" in log
    assert "resnest-train arguments: --config-file" in log and "Model resnest14: " in log
    assert "continuing at epoch 2 of 3" in log and "fresh RNG" in log
    assert "Epoch: 0," not in log and "Epoch: 1, Time cost" in log and "Epoch: 2, Time cost" in log
    metrics = json.loads((run / "metrics.json").read_text())
    # the official cadence validates after epochs 1, 11, ... and the last: here only epoch 3
    assert [h["epoch"] for h in metrics["history"]] == [3]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["FORMAT"] == "resnest-engine/1" and saved["OPTIMIZER"]["NAME"] == "sgd"
    # the same command resumes the run from its config.yaml; an official override keeps the
    # official (per-GPU) meaning, so changing the batch is refused as a trajectory change
    r = run_main("--config-file", cfg, "--outdir", run, "--resume", "auto", *OURS_ON_TOP)
    assert r.returncode == 0 and "already finished" in r.stdout, r.stderr
    r = run_main("--config-file", cfg, "--outdir", run, "--resume", "auto", *OURS_ON_TOP,
                 "TRAINING.BATCH_SIZE=8")
    assert r.returncode == 2 and "TRAINING.BATCH_SIZE: 16 -> 8" in r.stderr, r.stderr
    # the same official checkpoint of a finished run: nothing to train, said in one line
    done = tmp_path / "checkpoint_2.pth"
    _official_checkpoint(done, epoch=2)
    r = run_main("--config-file", cfg, "--outdir", tmp_path / "run2", "--resume", done,
                *OURS_ON_TOP)
    assert r.returncode == 2 and "nothing left to train" in r.stderr
