"""``resnest-report`` and :func:`resnest_engine.workflows.report.write_report` against a real tiny run: 10
classes of scikit-learn's digits written as PNG folders (class folders named by word, so the
labels are words), a resnest14 trained for 2 epochs in this process once for the module. The
report's numbers are checked against ``--eval-only`` and ``resnest-predict`` on the same images."""
import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml

from resnest_engine.cli.report import main as report_main
from resnest_engine.cli.predict import main as predict_main
from resnest_engine.workflows.report import MISTAKES, _training_records, write_report
from tests.support.cli import TINY, assert_user_error, run_main
from tests.support.fault_injection import fill_disk
from tests.support.real_files import Tmpfs, write_digits

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VAL_PER_CLASS = 6


def call(main, *args):
    """A console ``main`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse
            code = e.code
    return code, out.getvalue(), err.getvalue()


class Page(HTMLParser):
    """What a test needs of report.html: every src/href, the tables by id (cell texts), the
    mistake figures (their data-* attributes and caption text)."""

    def __init__(self, text):
        super().__init__()
        self.links, self.tables, self.mistakes, self.images = [], {}, [], []
        self._table = self._row = self._cell = self._figure = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if key in a:
                self.links.append(a[key])
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "figure" and "mistake" in a.get("class", ""):
            self._figure = dict(a, caption="", img=None)
            self.mistakes.append(self._figure)
        elif tag == "img":
            self.images.append(a)
            if self._figure is not None:
                self._figure["img"] = a.get("src")

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag == "tr":
            self._row = None
        elif tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "figure":
            self._figure = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._figure is not None:
            self._figure["caption"] += data


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished 2-epoch run (EMA on) on the digit-word folders, then ``--eval-only --report``:
    (run dir, data root, config file, eval-only result, time the training took)."""
    base = tmp_path_factory.mktemp("report")
    data, out = base / "digits", base / "run"
    write_digits(data, train_per_class=12, val_per_class=VAL_PER_CLASS, names=WORDS)
    cfg = {
        "SEED": 0,
        "MODEL": {"NAME": "resnest14"},
        "DATA": {"DATASET": "imagefolder", "ROOT": str(data), "CROP_SIZE": 32,
                 "SMALL_IMAGE": True, "HFLIP": False, "COLOR_JITTER": 0.0, "PCA_LIGHTING": 0.0,
                 "WORKERS": 0},
        "TRAINING": {"EPOCHS": 2, "BATCH_SIZE": 24, "TEST_BATCH_SIZE": 25, "EMA_DECAY": 0.5},
        "OPTIMIZER": {"NAME": "adamw", "LR": 0.004, "WARMUP_EPOCHS": 1},
        "LOGGING": {"LOG_EVERY": 1},  # TensorBoard on: the report's per-step training curves
    }
    cfg_file = base / "digits_words.yaml"
    cfg_file.write_text("FORMAT: resnest-engine/1\n" + yaml.safe_dump(cfg, sort_keys=False))
    r = run_main("--config-file", cfg_file, "--outdir", out)
    assert r.returncode == 0, r.stderr[-3000:]
    # --eval-only --report: eval_metrics.json and report.html from the same weights
    r = run_main("--config-file", cfg_file, "--outdir", out, "--eval-only", "--report")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"wrote {out / 'report.html'}" in r.stdout
    return out, data, cfg_file


def read_report(path):
    text = Path(path).read_text(encoding="utf-8")
    return text, Page(text)


def confusion_of(page):
    rows = page.tables["confusion-matrix"]
    header, body = rows[0], rows[1:]
    names = header[1:]
    assert [r[0] for r in body] == names  # rows and columns name the same classes
    return names, np.array([[int(c) for c in r[1:]] for r in body])


@pytest.mark.slow
def test_report_numbers_agree_with_eval_only_and_predict(run, tmp_path):
    out, data, _ = run
    eval_only_page = read_report(out / "report.html")[1]
    # resnest-report on the finished run, with the train split gone: it reads only val
    shutil.move(str(data / "train"), str(tmp_path / "train-moved"))
    try:
        code, stdout, stderr = call(report_main, out)
    finally:
        shutil.move(str(tmp_path / "train-moved"), str(data / "train"))
    assert code == 0, stderr
    assert stdout.strip() == f"wrote {out / 'report.html'}"
    assert "evaluating the final weights" in stderr
    text, page = read_report(out / "report.html")

    names, cm = confusion_of(page)
    assert names == sorted(WORDS)  # the run's class names (classes.json), in its order
    assert names == json.loads((out / "classes.json").read_text())
    val_size = VAL_PER_CLASS * len(WORDS)
    assert cm.sum() == val_size
    assert (cm.sum(axis=1) == VAL_PER_CLASS).all()
    top1 = json.loads((out / "eval_metrics.json").read_text())["top1"]
    assert np.trace(cm) == round(top1 / 100 * val_size)
    # the --eval-only report and the command's are the same evaluation
    assert (confusion_of(eval_only_page)[1] == cm).all()

    # per-class precision / recall / support against resnest-predict on the same val images
    preds = tmp_path / "val.csv"
    code, _, stderr = call(predict_main, "--weights", out, data / "val", "--topk", "1",
                           "--output", preds)
    assert code == 0, stderr
    with open(preds, newline="") as f:
        records = list(csv.DictReader(f))
    assert len(records) == val_size
    pairs = [(Path(r["path"]).parent.name, r["label_1"]) for r in records]
    assert sum(t == p for t, p in pairs) == np.trace(cm)
    rows = page.tables["per-class"]
    assert rows[0] == ["#", "class", "precision", "recall", "support"]
    assert [r[:2] for r in rows[1:]] == [[str(i), n] for i, n in enumerate(names)]
    for _, name, precision, recall, support in rows[1:]:
        tp = sum(t == name and p == name for t, p in pairs)
        predicted = sum(p == name for _, p in pairs)
        present = sum(t == name for t, _ in pairs)
        assert int(support) == present
        assert recall == f"{tp / present:.4f}"
        assert precision == (f"{tp / predicted:.4f}" if predicted else "–")
    # and the confusion matrix cell by cell
    index = {n: i for i, n in enumerate(names)}
    direct = np.zeros_like(cm)
    for t, p in pairs:
        direct[index[t], index[p]] += 1
    assert (direct == cm).all()


@pytest.mark.slow
def test_report_is_self_contained_and_shows_curves_and_mistakes(run):
    out, data, _ = run
    text, page = read_report(out / "report.html")
    assert page.links and all(link.startswith("data:image/png;base64,") for link in page.links)
    for needle in ("<link", "<script", "url(", "@import", "http://", "https://", "file:"):
        assert needle not in text, needle
    ids = {img.get("id") for img in page.images}
    assert {"curves-figure", "confusion-figure"} <= ids  # the curves and the matrix as figures

    names, cm = confusion_of(page)
    wrong = int(cm.sum() - np.trace(cm))
    assert len(page.mistakes) == min(MISTAKES, wrong)
    assert wrong > 0  # 2 epochs leave mistakes to show
    probs = [float(m["data-prob"]) for m in page.mistakes]
    assert probs == sorted(probs, reverse=True)  # the most confident first
    for m in page.mistakes:
        assert m["data-true"] in WORDS and m["data-pred"] in WORDS
        assert m["data-true"] != m["data-pred"]
        assert f"true: {m['data-true']}" in m["caption"]
        assert f"predicted: {m['data-pred']} ({float(m['data-prob']):.3f})" in m["caption"]
        assert m["img"].startswith("data:image/png;base64,")
        # the thumbnail's file is of the true class's folder
        assert m["caption"].strip().endswith(".png") and f"{m['data-true']}/" in m["caption"]
    # curves from metrics.json: the run validated twice, with EMA
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2] and "ema_top1" in history[0]
    assert "the learning rate at every logged step, from the run" in text  # the per-step records


@pytest.mark.slow
def test_training_curves_hold_every_logged_step(run):
    """120 training images at batch 24: 5 steps an epoch, logged at every step (LOG_EVERY 1)."""
    out = run[0]
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["iteration"] for h in history] == [5, 10]
    training = _training_records(out, history)
    assert set(training) == {"loss", "top1", "lr"}
    for points in training.values():
        assert [x for x, _ in points] == pytest.approx([s / 5 for s in range(1, 11)], rel=1e-12)
    # the LR at a validation is the LR of the epoch's last step; TensorBoard keeps float32, so
    # the two agree to float32's precision (eps 1.19e-7)
    lr = dict(training["lr"])
    for h in history:
        assert lr[float(h["epoch"])] == pytest.approx(h["lr"], rel=2.4e-7)
    # the first step of each epoch: its window loss is that step's loss, the log line's running
    # average after one step (printed to 3 decimals)
    batch_one = [float(line.split("Loss: ")[1].split()[0]) for line in
                 (out / "log.txt").read_text().splitlines() if "Batch: 1|" in line]
    loss = dict(training["loss"])
    # one unit of the 3rd decimal apart at most (the two round different float widths)
    assert [round(loss[x], 3) for x in (0.2, 1.2)] == pytest.approx(batch_one[-2:], abs=1.1e-3)


@pytest.mark.slow
def test_write_report_from_python_to_another_file(run, tmp_path):
    out, _, _ = run
    target = write_report(out, output=tmp_path / "mine.html",
                          weights=sorted((out / "checkpoints").glob("resume-*.pt"))[-1])
    assert target == tmp_path / "mine.html"
    page = Page(target.read_text(encoding="utf-8"))
    assert confusion_of(page)[1].sum() == VAL_PER_CLASS * len(WORDS)


def _completed(result):
    code, stdout, stderr = result
    return subprocess.CompletedProcess([], code, stdout, stderr)


def test_without_matplotlib_one_line_naming_the_extra(tmp_path, monkeypatch, write_tiny):
    """Checked first: before the run directory is read or anything evaluated."""
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # its import fails
    extra = "pip install 'resnest-engine[report]'"
    assert_user_error(_completed(call(report_main, tmp_path / "nowhere")), extra)
    r = run_main("--config-file", write_tiny, "--outdir", tmp_path / "none", "--eval-only",
                 "--report")
    assert_user_error(r, extra)
    assert not (tmp_path / "none").exists()


def test_user_errors_are_one_line(tmp_path, write_tiny):
    assert_user_error(_completed(call(report_main, tmp_path / "nowhere")),
                      "run directory not found")
    (tmp_path / "empty").mkdir()
    assert_user_error(_completed(call(report_main, tmp_path / "empty")), "no config.yaml")
    for flags in (["--export", tmp_path / "x.pt", "--eval-only"], []):
        r = run_main("--config-file", write_tiny, "--outdir", tmp_path / "o", "--report", *flags)
        assert_user_error(r, "--report goes with --eval-only")


@pytest.fixture
def write_tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.mark.slow
def test_user_errors_about_a_run_are_one_line(run, tmp_path):
    out, _, _ = run
    assert_user_error(_completed(call(report_main, out, "--output", tmp_path / "r.json")),
                      "--output", "must end in .html")
    in_run = out / "checkpoints" / "r.html"
    assert_user_error(_completed(call(report_main, out, "--output", in_run)),
                      "--output", "is a file of the run directory")
    assert_user_error(_completed(call(report_main, out, "--weights", tmp_path / "none.pt")),
                      "--weights: not found")
    assert_user_error(_completed(call(report_main, out, "--weights", out / "config.yaml")),
                      "config.yaml")
    assert not list(tmp_path.glob("*.html")) and not in_run.exists()


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI is)")
def test_a_full_disk_is_one_cannot_write_line(run, tmp_path):
    """A real full file system (a tmpfs filled until the kernel says ENOSPC)."""
    out, _, _ = run
    disk = Tmpfs(tmp_path / "disk", "1m")
    try:
        fill_disk(disk.path)
        target = disk.path / "r.html"
        code, stdout, stderr = call(report_main, out, "--output", target)
        assert code == 1, stderr
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        assert lines[0].startswith("evaluating the final weights") and len(lines) == 2, stderr
        assert lines[1].startswith(f"error: cannot write {target}: No space left")
        assert not target.exists() and stdout == ""
    finally:
        disk.unmount()
