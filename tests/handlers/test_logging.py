"""log.txt in the official script's format, TensorBoard event files, metrics.json."""
from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events

from tests.support.standard_setup import standard_handlers
from resnest_engine.engine import create_trainer
from resnest_engine.handlers import attach_standard_handlers

BATCH_RE = re.compile(r"Batch: (\d+)\| Loss: (\d+\.\d{3}) \| Top1: (\d+\.\d{3}) \| "
                      r"epoch (\d+)/2 \| LR: (\d+\.\d{6}) \| (\d+\.\d) img/s$")
SOFT_BATCH_RE = re.compile(r"Batch: (\d+)\| Loss: (\d+\.\d{3}) \| epoch (\d+)/2 \| "
                           r"LR: (\d+\.\d{6}) \| (\d+\.\d) img/s$")
EPOCH_RE = re.compile(r"Epoch: (\d+), Time cost: (\d+\.\d) \| epoch (\d+)/2 \| (\d+\.\d) img/s$")
VAL_RE = re.compile(r"Validation: Top1: (\d+\.\d{3}) \| Top5: (\d+\.\d{3}) \| Loss: (\d+\.\d{4})$")



def test_log_lines_tensorboard_and_metrics(tmp_path, log_file, tiny_model, loader):
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_trainer(model, opt, F.cross_entropy)
    val = loader(n=10, batch_size=4, seed=1)
    opts = dict(epochs=2, epoch_length=4, lr=0.1, output_dir=str(tmp_path), log_every=2,
                           progress_bar="off")
    handlers = standard_handlers(trainer, model, opt, val, **opts)
    attach_standard_handlers(trainer, handlers)
    outputs = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(
        (float(e.state.output["loss"]), int((e.state.output["y_pred"].argmax(1) == e.state.output["y"]).sum()),
         e.state.output["batch_size"])))
    trainer.run(loader(n=16, batch_size=4), max_epochs=2)

    lines = log_file.read_text().splitlines()
    assert all(re.match(r"\[\d\d/\d\d \d\d:\d\d:\d\d\] ", ln) for ln in lines)
    messages = [ln.split("] ", 1)[1] for ln in lines]
    batch = [m for m in (BATCH_RE.match(x) for x in messages) if m]
    assert [(int(m[4]), int(m[1])) for m in batch] == [(1, 2), (1, 4), (2, 2), (2, 4)]
    # Loss and Top1 are running averages over the epoch so far (the official AverageMeter.avg).
    # Printed to 3 decimals: abs 6e-4 is the print's rounding (<= 5e-4) plus slack.
    for i, m in enumerate(batch):
        epoch, step = int(m[4]), int(m[1])
        seen = outputs[4 * (epoch - 1): 4 * (epoch - 1) + step]
        n = sum(b for _, _, b in seen)
        assert float(m[2]) == pytest.approx(sum(l * b for l, _, b in seen) / n, abs=6e-4)
        assert float(m[3]) == pytest.approx(100 * sum(c for _, c, _ in seen) / n, abs=6e-4)
    # TrainLogger.window (for TensorBoard) holds the last window (steps 3-4 of epoch 2), not the running mean.
    window = outputs[-2:]
    n = sum(b for _, _, b in window)
    # fp32 window mean against float64 of the same losses: a few eps32; rel 1e-5 = 84 eps32
    assert handlers.train_logger.window["loss"] == pytest.approx(sum(l * b for l, _, b in window) / n, rel=1e-5)
    assert handlers.train_logger.window["top1"] == pytest.approx(100 * sum(c for _, c, _ in window) / n)
    vals = [m for m in (VAL_RE.match(x) for x in messages) if m]
    assert len(vals) == 2
    assert float(vals[-1][1]) == pytest.approx(handlers.validation.results["raw"]["top1"], abs=6e-4)
    assert float(vals[-1][2]) == pytest.approx(handlers.validation.results["raw"]["top5"], abs=6e-4)
    epochs = [m for m in (EPOCH_RE.match(x) for x in messages) if m]
    assert [(int(m[1]), int(m[3])) for m in epochs] == [(0, 1), (1, 2)]  # official: 0-based

    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    blob = b"".join(p.read_bytes() for p in events)
    for tag in (b"train/loss", b"train/top1", b"train/lr", b"train/images_per_sec",
                b"val/top1", b"val/top5", b"val/loss"):
        assert tag in blob, tag
    assert handlers.tensorboard.logger is not None

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"weights", "epoch", "top1", "top5", "loss", "best_top1", "best_top5",
                            "best_epoch", "history"}
    assert metrics["weights"] == "raw" and metrics["epoch"] == 2
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert set(metrics["history"][0]) == {"epoch", "iteration", "top1", "top5", "loss", "lr"}
    assert [h["iteration"] for h in metrics["history"]] == [4, 8]  # 16 samples at batch 4
    assert metrics["top1"] == pytest.approx(handlers.validation.results["raw"]["top1"])
    assert (tmp_path / "model_weights.pt").exists()


def test_no_output_dir_writes_nothing(tmp_path, tiny_model, loader, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_trainer(model, opt, F.cross_entropy)
    opts = dict(epochs=1, epoch_length=2, lr=0.1, progress_bar="off")
    h = standard_handlers(trainer, model, opt, loader(n=4, batch_size=4), **opts)
    attach_standard_handlers(trainer, h)
    trainer.run(loader(n=8, batch_size=4), max_epochs=1)
    assert list(tmp_path.iterdir()) == []
    assert h.resume_checkpointer is None and h.tensorboard is None
    # Validated all the same: 4 samples, so top-1 is a multiple of 25, equal to the evaluator's.
    assert h.validation.epoch == 1
    assert h.validation.results["raw"]["top1"] in (0.0, 25.0, 50.0, 75.0, 100.0)
    assert h.validation.results["raw"]["top1"] == pytest.approx(h.evaluators["raw"].state.metrics["top1"])


def test_soft_targets_leave_out_top1(log_file, tiny_model, loader):
    """With mixup active the batch line has no Top1 field (as the official script); once mixing
    is switched off (MIXUP_OFF_EPOCH) Top1 is back."""
    from resnest_engine.data import MixupCutmix
    from resnest_engine.engine import SoftTargetCrossEntropy

    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mix = MixupCutmix(10, mixup_alpha=0.2)
    trainer = create_trainer(model, opt, SoftTargetCrossEntropy(), batch_transform=mix)
    mix.attach(trainer, off_epoch=1)
    opts = dict(epochs=2, epoch_length=4, lr=0.1, log_every=2, progress_bar="off")
    handlers = standard_handlers(trainer, model, opt, None, **opts)
    attach_standard_handlers(trainer, handlers)
    logs = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=2),
                              lambda e: logs.append(dict(handlers.train_logger.window)))
    trainer.run(loader(n=16, batch_size=4), max_epochs=2)

    messages = [ln.split("] ", 1)[1] for ln in log_file.read_text().splitlines()]
    soft = [m for m in (SOFT_BATCH_RE.match(x) for x in messages) if m]
    hard = [m for m in (BATCH_RE.match(x) for x in messages) if m]
    assert [(int(m[3]), int(m[1])) for m in soft] == [(1, 2), (1, 4)]
    assert [(int(m[4]), int(m[1])) for m in hard] == [(2, 2), (2, 4)]
    assert ["top1" in x for x in logs] == [False, False, True, True]
    assert all(x["loss"] > 0 for x in logs)
