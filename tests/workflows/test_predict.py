"""``resnest-predict`` and :func:`resnest_engine.workflows.predict.predict` against a real tiny run: the
sklearn digits written as PNG folders, trained for one epoch through the CLI once for the whole
module. The tests compare predictions with the run's own evaluation and files, not with the
labels, so the run need not have learnt much."""
import contextlib
import csv
import io
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from resnest_engine.cli.predict import main as predict_main
from tests.support.cli import run_cli
from tests.support.real_files import write_digits

REPO = Path(__file__).resolve().parents[2]
TOP1_LINE = re.compile(r"^Validation: Top1: ([0-9.]+) \| Top5: ([0-9.]+)$", re.M)

pytestmark = pytest.mark.slow


def predict(*args):
    """``resnest_engine.cli.predict.main`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = predict_main([str(a) for a in args])
        except SystemExit as e:  # argparse
            code = e.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished one-epoch resnest14 run on the digits folder: (run dir, data root)."""
    base = tmp_path_factory.mktemp("predict")
    data, out = base / "digits", base / "run"
    write_digits(data, train_per_class=30, val_per_class=10)
    cfg = {
        "FORMAT": "resnest-engine/1", "SEED": 0,
        "MODEL": {"NAME": "resnest14"},
        "DATA": {"DATASET": "imagefolder", "ROOT": str(data), "CROP_SIZE": 32,
                 "SMALL_IMAGE": True, "HFLIP": False, "COLOR_JITTER": 0.0, "PCA_LIGHTING": 0.0,
                 "WORKERS": 0},
        "TRAINING": {"EPOCHS": 1, "BATCH_SIZE": 32, "TEST_BATCH_SIZE": 100},
        "OPTIMIZER": {"NAME": "adamw", "LR": 0.004, "WARMUP_EPOCHS": 1},
        "LOGGING": {"TENSORBOARD": False},
    }
    cfg_file = base / "digits_folder.yaml"
    cfg_file.write_text("FORMAT: resnest-engine/1\n" + yaml.safe_dump(
        {k: v for k, v in cfg.items() if k != "FORMAT"}, sort_keys=False))
    r = run_cli("--config-file", cfg_file, "--outdir", out, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "model_weights.pt").is_file()
    return out, data


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # CPUs are shared: as the subprocesses (OMP_NUM_THREADS=1)
    yield
    torch.set_num_threads(before)


def read_csv(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def columns(k):
    return ["path"] + [c for i in range(1, k + 1) for c in (f"label_{i}", f"prob_{i}")]


def assert_one_error_line(code, err, *needles):
    assert code == 2, (code, err)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_run_stores_its_class_names(run):
    out, _ = run
    assert json.loads((out / "classes.json").read_text()) == [str(d) for d in range(10)]


def test_top1_on_val_folder_equals_eval_only(run, tmp_path):
    out, data = run
    r = run_cli("--eval-only", "--outdir", out,
                "--config-file", out / "config.yaml")
    assert r.returncode == 0, r.stderr[-3000:]
    printed = TOP1_LINE.search(r.stdout)
    assert printed, r.stdout
    eval_top1 = float(printed.group(1))
    # printed to 3 decimals: abs 1e-3 is the print's rounding (<= 5e-4) plus slack
    assert json.loads((out / "eval_metrics.json").read_text())["top1"] == pytest.approx(eval_top1,
                                                                                       abs=1e-3)
    preds = tmp_path / "val.csv"
    code, stdout, err = predict("--weights", out, data / "val", "--output", preds,
                                "--device", "cpu")
    assert code == 0, err
    assert stdout == ""
    _, rows = read_csv(preds)
    assert len(rows) == 100
    # integer counts: exact unless a top logit ties another within the batching's rounding
    correct = sum(row["label_1"] == Path(row["path"]).parent.name for row in rows)
    assert f"{100.0 * correct / len(rows):.3f}" == printed.group(1), (correct, r.stdout)


def test_csv_and_json_outputs(run, tmp_path):
    out, data = run
    as_csv, as_json = tmp_path / "p.csv", tmp_path / "p.json"
    for target in (as_csv, as_json):
        code, _, err = predict("--weights", out, data / "val" / "3", data / "val" / "7",
                               "--topk", 3, "--batch-size", 7, "--output", target)
        assert code == 0, err
        assert f"wrote 20 prediction(s) to {target}" in err
    fields, rows = read_csv(as_csv)
    assert fields == columns(3)
    records = json.loads(as_json.read_text())
    assert isinstance(records, list) and len(records) == len(rows) == 20
    assert [r["path"] for r in records] == [r["path"] for r in rows] == sorted(
        str(p) for d in ("3", "7") for p in (data / "val" / d).glob("*.png"))
    for rec, row in zip(records, rows):
        assert list(rec) == columns(3)
        probs = [rec[f"prob_{i}"] for i in (1, 2, 3)]
        assert all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in probs)
        assert probs == sorted(probs, reverse=True)
        assert sum(probs) <= 1.0 + 1e-5  # 3 roundings to 6 decimals (5e-7 each) + fp32 softmax
        assert len({rec[f"label_{i}"] for i in (1, 2, 3)}) == 3
        assert {row[c] for c in rec if c.startswith("label")} <= {str(d) for d in range(10)}
        assert [float(row[f"prob_{i}"]) for i in (1, 2, 3)] == probs
        assert [row[f"label_{i}"] for i in (1, 2, 3)] == [rec[f"label_{i}"] for i in (1, 2, 3)]


def test_topk_is_clamped_to_the_classes(run, tmp_path):
    out, data = run
    target = tmp_path / "all.json"
    code, _, err = predict("--weights", out, data / "val" / "5" / "030.png", "--topk", 50,
                           "--output", target)
    assert code == 0, err
    (rec,) = json.loads(target.read_text())
    assert list(rec) == columns(10)
    assert sorted(rec[f"label_{i}"] for i in range(1, 11)) == sorted(str(d) for d in range(10))
    # 10 roundings to 6 decimals (<= 5e-6 in all) + fp32 softmax (~1e-7)
    assert sum(rec[f"prob_{i}"] for i in range(1, 11)) == pytest.approx(1.0, abs=1e-4)


def test_stdout_table_from_the_module_command(run):
    """``python -m resnest_engine.cli.predict``: one line per image, ``path  label (p) ...``."""
    out, data = run
    r = run_cli("--weights", out, data / "val" / "1", "--topk", 2,
                module="resnest_engine.cli.predict")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 10
    for line, path in zip(lines, sorted((data / "val" / "1").glob("*.png"))):
        assert re.fullmatch(re.escape(str(path)) + r"  \d \(0\.\d{4}\) \d \(0\.\d{4}\)", line), line


def test_console_script_is_registered():
    from importlib.metadata import entry_points
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("resnest-predict") == "resnest_engine.cli.predict:main"


def test_the_former_module_command_still_runs():
    """``python -m resnest_engine.predict`` (the spelling before the command moved to cli/)."""
    r = run_cli("--help", module="resnest_engine.predict", timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: resnest-predict ")


def test_corrupt_image_is_skipped_and_the_rest_predicted(run, tmp_path):
    out, data = run
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("030.png", "031.png", "032.png"):
        shutil.copy(data / "val" / "4" / name, folder / name)
    (folder / "031b.png").write_bytes(b"this is not a PNG file" * 10)
    target = tmp_path / "mixed.csv"
    code, _, err = predict("--weights", out, folder, "--output", target, "--batch-size", 4)
    assert code == 1, err
    skipped = [ln for ln in err.splitlines() if ln.startswith("skipped ")]
    assert len(skipped) == 1 and skipped[0].startswith(f"skipped {folder / '031b.png'}: "), err
    assert "Traceback" not in err
    _, rows = read_csv(target)
    assert [Path(r["path"]).name for r in rows] == ["030.png", "031.png", "032.png"]


def test_missing_weights_is_a_one_line_error(run, tmp_path):
    out, data = run
    image = data / "val" / "0" / "030.png"
    code, stdout, err = predict("--weights", tmp_path / "nowhere", image)
    assert_one_error_line(code, err, "--weights", "not found", "nowhere")
    assert stdout == ""
    empty_run = tmp_path / "untrained"
    empty_run.mkdir()
    shutil.copy(out / "config.yaml", empty_run / "config.yaml")
    code, _, err = predict("--weights", empty_run, image)
    assert_one_error_line(code, err, "no trained weights", str(empty_run))
    bare = tmp_path / "elsewhere" / "model_weights.pt"
    bare.parent.mkdir()
    shutil.copy(out / "model_weights.pt", bare)
    code, _, err = predict("--weights", bare, image)
    assert_one_error_line(code, err, "config.yaml", str(bare))


def test_user_errors_exit_2(run, tmp_path):
    out, data = run
    (tmp_path / "empty").mkdir()
    code, _, err = predict("--weights", out, tmp_path / "empty")
    assert_one_error_line(code, err, "no images found")
    code, _, err = predict("--weights", out, data / "val", "--output", tmp_path / "p.txt")
    assert_one_error_line(code, err, "--output", ".csv or .json")
    code, _, err = predict("--weights", out, data / "val", "--topk", 0)
    assert_one_error_line(code, err, "--topk")
    code, _, _ = predict("--weights", out)  # no images at all: argparse
    assert code == 2


def test_checkpoint_file_predicts_as_the_run_dir(run, tmp_path):
    """The last resume point holds the final weights, its config and class names: the same
    predictions as the run directory (its model_weights.pt); so does model_weights.pt itself."""
    out, data = run
    last = sorted((out / "checkpoints").glob("resume-*.pt"))[-1]
    outputs = {}
    for name, weights in (("dir", out), ("checkpoint", last), ("file", out / "model_weights.pt")):
        target = tmp_path / f"{name}.json"
        code, _, err = predict("--weights", weights, data / "val" / "8", data / "val" / "9",
                               "--output", target)
        assert code == 0, err
        outputs[name] = json.loads(target.read_text())
    assert len(outputs["dir"]) == 20
    assert outputs["checkpoint"] == outputs["dir"] == outputs["file"]


def test_predict_from_python_gives_the_models_own_top1(run, tmp_path):
    """The library function on a few images: the same top-1 (and probability) as the trained
    network's argmax on the run's evaluation transform; the records are in the images' order."""
    import torch
    from PIL import Image

    from resnest_engine.config import load_config
    from resnest_engine.data import build_eval_transform
    from resnest_engine.workflows.from_config import data_options, model_kwargs
    from resnest_engine.models import get_model
    from resnest_engine.workflows.predict import predict as predict_images

    out, data = run
    images = [data / "val" / d / "031.png" for d in ("2", "6", "9")]
    images.append(data / "val" / "0" / "032.png")
    batches = []
    result = predict_images(out, images, topk=3, batch_size=3, device="cpu",
                            on_batch=lambda recs, skipped: batches.append((len(recs), skipped)))
    assert batches == [(3, []), (1, [])]
    assert result.skipped == [] and result.class_names == [str(d) for d in range(10)]
    assert [r["path"] for r in result.records] == [str(p) for p in images]

    cfg = load_config(out / "config.yaml")
    model = get_model(cfg.MODEL.NAME, num_classes=10, **model_kwargs(cfg))
    model.load_state_dict(torch.load(out / "model_weights.pt", weights_only=True))
    transform = build_eval_transform(data_options(cfg))
    mode = "L" if cfg.MODEL.IN_CHANS == 1 else "RGB"
    x = torch.stack([transform(Image.open(p).convert(mode)) for p in images])
    with torch.inference_mode():
        probs = torch.softmax(model.eval()(x).float(), dim=1)
    top_p, top_i = probs.max(dim=1)
    assert [r["label_1"] for r in result.records] == [str(int(i)) for i in top_i]
    # rounded to 6 decimals (5e-7) and batched otherwise (a few eps32): abs 1e-5
    assert [r["prob_1"] for r in result.records] == pytest.approx(top_p.tolist(), abs=1e-5)
    assert all(list(r) == columns(3) for r in result.records)


def test_predict_never_writes_over_a_file_of_the_run(run, tmp_path):
    from resnest_engine.errors import InputError
    from resnest_engine.workflows.predict import predict as predict_images

    out, data = run
    before = (out / "metrics.json").read_bytes()
    image = data / "val" / "0" / "030.png"
    with pytest.raises(InputError, match="is a file of the run directory"):
        predict_images(out, image, output=out / "metrics.json")
    assert (out / "metrics.json").read_bytes() == before
    code, _, err = predict("--weights", out, image, "--output", out / "classes.json")
    assert_one_error_line(code, err, "--output", "classes.json", "somewhere else")
