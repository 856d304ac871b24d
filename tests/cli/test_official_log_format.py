"""log.txt and the console can be read by the official ResNeSt train.py's log parsers: their
regular expressions find the same quantities in our lines (our extra fields come after)."""
import json
import re

import pytest
import yaml

from tests.support.cli import TINY, merge, run_main

pytestmark = pytest.mark.slow  # resnest-train processes

# What a parser of the official script's log applies.
OFFICIAL_BATCH = re.compile(r"^\[\d\d/\d\d \d\d:\d\d:\d\d\] Batch: (\d+)\| Loss: ([\d.]+) \| Top1: ([\d.]+)",
                            re.M)
OFFICIAL_VAL = re.compile(r"Validation: Top1: ([\d.]+) \| Top5: ([\d.]+)")
OFFICIAL_EPOCH = re.compile(r"Epoch: (\d+), Time cost: ([\d.]+)")
EPOCH_THROUGHPUT = re.compile(r"Epoch: \d+, Time cost: ([\d.]+) \| epoch \d+/\d+ \| ([\d.]+) img/s")
BATCH_LINE = re.compile(r"^\[\d\d/\d\d \d\d:\d\d:\d\d\] Batch: \d+\|.*$", re.M)


def _train(tmp_path, name, *overrides):
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(merge(TINY, {})))
    out = tmp_path / name
    r = run_main("--config-file", cfg, "--outdir", out, *overrides)  # stdout captured in-process
    assert r.returncode == 0, r.stderr
    return out, (out / "log.txt").read_text(), r.stdout


def _official_lines(text):
    return [ln for ln in text.splitlines()
            if BATCH_LINE.match(ln) or OFFICIAL_VAL.search(ln) or OFFICIAL_EPOCH.search(ln)]


def test_official_parsers_read_log_and_console(tmp_path):
    out, log, stdout = _train(tmp_path, "run")
    steps = -(-TINY["DATA"]["SYNTHETIC_SIZE"] // TINY["TRAINING"]["BATCH_SIZE"])

    batches = OFFICIAL_BATCH.findall(log)
    assert len(batches) == 2 * steps  # LOG_EVERY=1: every step of both epochs
    assert [int(b) for b, _, _ in batches] == list(range(1, steps + 1)) * 2
    batch = TINY["TRAINING"]["BATCH_SIZE"]
    for epoch in range(2):
        # Top1 is the epoch's running accuracy: a whole number of the images seen so far, one
        # batch at a time.
        correct = [float(top1) * batch * int(b) / 100
                   for b, _, top1 in batches[epoch * steps:(epoch + 1) * steps]]
        assert all(abs(c - round(c)) < 0.01 for c in correct), correct
        gained = [round(b) - round(a) for a, b in zip([0.0] + correct, correct)]
        assert all(0 <= g <= batch for g in gained), correct
    assert all(float(loss) > 0 for _, loss, _ in batches)

    epochs = OFFICIAL_EPOCH.findall(log)
    assert [int(e) for e, _ in epochs] == [0, 1]  # 0-based, as the official script
    # The time cost is the epoch's: its images over the throughput on the same line.
    images = TINY["DATA"]["SYNTHETIC_SIZE"]
    for seconds, img_s in EPOCH_THROUGHPUT.findall(log):
        assert float(seconds) > 0 and abs(images / float(img_s) - float(seconds)) <= 0.06, (
            seconds, img_s)
    assert len(EPOCH_THROUGHPUT.findall(log)) == 2

    metrics = json.loads((out / "metrics.json").read_text())
    vals = OFFICIAL_VAL.findall(log)
    assert [(float(a), float(b)) for a, b in vals] == [
        (round(h["top1"], 3), round(h["top5"], 3)) for h in metrics["history"]]
    assert vals[-1] == (f"{metrics['top1']:.3f}", f"{metrics['top5']:.3f}")

    # The console shows the same lines.
    assert _official_lines(stdout) == _official_lines(log) != []

    # Mixup: no Top1 field at all on the batch lines, so the official batch regex skips them.
    out, log, stdout = _train(tmp_path, "mixup", "DATA.MIXUP=0.2")
    assert yaml.safe_load((out / "config.yaml").read_text())["DATA"]["MIXUP"] == 0.2
    lines = BATCH_LINE.findall(log)
    assert len(lines) == 2 * steps
    assert all("Loss: " in ln and "Top1:" not in ln for ln in lines), lines
    assert OFFICIAL_BATCH.findall(log) == []
    assert [int(e) for e, _ in OFFICIAL_EPOCH.findall(log)] == [0, 1]
    assert len(OFFICIAL_VAL.findall(log)) == 2
    assert _official_lines(stdout) == _official_lines(log)
