"""``resnest-train --export NAME.onnx`` and ``resnest-predict --weights MODEL.onnx``: ONNX Runtime
against eager PyTorch (resnest14, a _fast and a _splat variant, batch 1 and 3), the metadata the
file carries (class names and preprocessing, read back with ``onnx.load``), predictions from the
file equal to those from the run directory, and the one-line errors (missing extra, full disk).

One tiny run directory is built for the module (random resnest14 weights with non-trivial BN
statistics, 3 named classes; nothing is trained) and exported once through the CLI."""
import contextlib
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import yaml
from PIL import Image

from resnest_engine.storage.checksum import file_checksum, sidecar_path
from resnest_engine.config import config_from_dict, load_config
from resnest_engine.data import build_eval_transform
from resnest_engine.data.options import IMAGENET_MEAN, IMAGENET_STD
from resnest_engine.errors import InputError
from resnest_engine.workflows.export import ONNX_EXTRA, OnnxMetadata
from resnest_engine.workflows.from_config import data_options
from resnest_engine.handlers.checkpoint import FORMAT_VERSION, save_weights
from resnest_engine.models import get_model

from tests.support.fault_injection import FILLER, fill_disk
from tests.support.real_files import Tmpfs
from tests.support.cli import run_main
from tests.support.markdown import python_blocks
from tests.workflows.test_predict import assert_one_error_line, predict, read_csv

REPO = Path(__file__).resolve().parents[2]
CLASSES = ["cat", "dog", "fish"]
RUN_FC_SCALE = 20.0
RUN_CONFIG = {
    "SEED": 0,
    "MODEL": {"NAME": "resnest14"},
    # Not the small-image preset: eval resizes the short side to ceil(32 / 0.875) = 37 and
    # crops 32, so predictions go through a real resize of the odd-sized test images.
    "DATA": {"DATASET": "synthetic", "IMAGE_SIZE": 32, "CROP_SIZE": 32, "SYNTHETIC_CLASSES": 3,
             "WORKERS": 0},
    "LOGGING": {"TENSORBOARD": False},
}


def _random_model(name, num_classes, fc_scale=1.0, seed=0, **overrides):
    """``name`` (``overrides``: ``get_model``'s) with seeded random weights and BN statistics
    (eval mode exercises them), the classifier scaled by ``fc_scale`` (up: the classes'
    probabilities far apart, no near ties)."""
    torch.manual_seed(seed)
    model = get_model(name, num_classes=num_classes, **overrides)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        model.fc.weight.mul_(fc_scale)
    return model.eval()


def _write_config(path, cfg):
    path.write_text("FORMAT: resnest-engine/1\n" + yaml.safe_dump(cfg, sort_keys=False))
    return path


def _ort(path, threads=1):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _op_types(model_proto):
    return {node.op_type for node in model_proto.graph.node} | {
        node.op_type for f in model_proto.functions for node in f.node}


def _props(path):
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory as training leaves it for predict and export: config.yaml,
    classes.json and model_weights.pt (with its checksum sidecar)."""
    out = tmp_path_factory.mktemp("onnx") / "run"
    out.mkdir()
    _write_config(out / "config.yaml", RUN_CONFIG)
    (out / "classes.json").write_text(json.dumps(CLASSES) + "\n")
    save_weights(_random_model("resnest14", len(CLASSES), fc_scale=RUN_FC_SCALE).state_dict(),
                 out / "model_weights.pt")
    return out


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    """``resnest-train --config-file RUN/config.yaml --outdir RUN --export model.onnx`` (in
    this process): (the file, the command's result)."""
    out = tmp_path_factory.mktemp("onnx_export") / "model.onnx"
    r = run_main("--config-file", run / "config.yaml", "--outdir", run, "--export", out)
    assert r.returncode == 0, r.stderr
    return out, r


@pytest.fixture
def images(tmp_path):
    """Five PNGs of odd sizes (one grey) with smooth content: a folder for resnest-predict."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(40, 30), (64, 64), (50, 70), (33, 90), (37, 37)]):
        yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
        channels = [np.sin(xx * rng.uniform(2, 9) + yy * rng.uniform(2, 9) + rng.uniform(0, 6))
                    for _ in range(3)]
        pixels = ((np.stack(channels, -1) + 1) * 127.5).astype(np.uint8)
        image = Image.fromarray(pixels, "RGB")
        (image.convert("L") if i == 4 else image).save(folder / f"img{i}.png")
    return folder


# --------------------------------------------------------------------------- the export
@pytest.mark.slow
def test_cli_export_writes_the_file_and_its_checksum(run, exported):
    out, r = exported
    assert f"exported {run / 'model_weights.pt'} to {out}" in r.stdout
    assert r.stderr.strip() == f"exporting final weights {run / 'model_weights.pt'}", r.stderr
    sidecar = json.loads(sidecar_path(out).read_text())
    assert sidecar["file"] == file_checksum(out)
    onnx.checker.check_model(str(out))


@pytest.mark.slow
def test_metadata_round_trips(run, exported):
    out, _ = exported
    props = _props(out)
    assert json.loads(props["class_names"]) == CLASSES
    assert props["model_name"] == "resnest14"
    assert (props["resize"], props["resize_size"], props["crop_size"]) == ("short_side", "37", "32")
    assert props["interpolation"] == "bilinear" and props["image_mode"] == "RGB"
    assert tuple(json.loads(props["mean"])) == IMAGENET_MEAN
    assert tuple(json.loads(props["std"])) == IMAGENET_STD
    meta = OnnxMetadata.from_props(props)
    assert meta == OnnxMetadata.from_config(load_config(run / "config.yaml"), CLASSES)
    assert meta.to_props() == {k: v for k, v in props.items() if k in meta.to_props()}


@pytest.mark.slow
def test_graph_has_no_python_op_and_a_free_batch_axis(exported):
    out, _ = exported
    proto = onnx.load(str(out))
    assert "PythonOp" not in _op_types(proto)
    (image,) = proto.graph.input
    dims = image.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 32, 32]


@pytest.mark.slow
def test_predict_onnx_equals_predict_run_dir(run, exported, images, tmp_path):
    out, _ = exported
    csvs = {}
    for name, weights in (("run", run), ("onnx", out)):
        csvs[name] = tmp_path / f"{name}.csv"
        code, _, err = predict("--weights", weights, images, "--topk", 3, "--batch-size", 2,
                               "--output", csvs[name], "--device", "cpu")
        assert code == 0, err
    assert "ONNX Runtime" in err
    cols_run, rows_run = read_csv(csvs["run"])
    cols_onnx, rows_onnx = read_csv(csvs["onnx"])
    assert cols_run == cols_onnx and len(rows_run) == len(rows_onnx) == 5
    for a, b in zip(rows_run, rows_onnx):
        assert a["path"] == b["path"]
        assert [a[f"label_{i}"] for i in (1, 2, 3)] == [b[f"label_{i}"] for i in (1, 2, 3)]
        for i in (1, 2, 3):  # ORT vs torch moves them by ~1e-6 (logits: see below)
            assert abs(float(a[f"prob_{i}"]) - float(b[f"prob_{i}"])) <= 1e-4
    # Each image has its own probabilities: a preprocessing off by one pixel of resize moves
    # them by about 5e-4 here (measured), so the comparison checks the preprocessing too.
    assert len({r["prob_1"] for r in rows_run}) == 5


def _docs_snippet():
    """The Python block of docs/running.md's ONNX section."""
    text = (REPO / "docs" / "running.md").read_text()
    section = text.split("\n### ONNX\n", 1)[1].split("\n### ", 1)[0]
    (block,) = python_blocks(section)
    return block


@pytest.mark.slow
def test_the_docs_snippet_gives_resnest_predicts_numbers(exported, images, tmp_path):
    """ONNX Runtime, NumPy and Pillow only, as docs/running.md shows: the same top-1 and
    probability as ``resnest-predict`` on every image (odd sizes, wide and tall, one grey)."""
    out, _ = exported
    code, _, err = predict("--weights", out, images, "--topk", 1, "--output", tmp_path / "p.csv")
    assert code == 0, err
    _, rows = read_csv(tmp_path / "p.csv")
    snippet = _docs_snippet()
    assert '"model.onnx"' in snippet and '"photo.jpg"' in snippet
    for row in rows:
        source = snippet.replace('"model.onnx"', repr(str(out))).replace('"photo.jpg"',
                                                                         repr(row["path"]))
        ns = {}
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(source, "docs/running.md", "exec"), ns)
        assert ns["names"][int(ns["probs"].argmax())] == row["label_1"]
        # NumPy and Pillow preprocessing against torchvision: rounding ~1e-6; a pixel off: ~5e-4
        assert abs(float(ns["probs"].max()) - float(row["prob_1"])) <= 1e-4


@pytest.mark.slow
def test_export_of_a_checkpoint_with_resume_takes_its_class_names(run, tmp_path):
    """``--resume FILE`` outside the run directory: the checkpoint's own class names."""
    state = torch.load(run / "model_weights.pt", weights_only=True)
    ckpt = tmp_path / "elsewhere" / "ckpt.pt"
    ckpt.parent.mkdir()
    names = ["a", "b", "c"]
    torch.save({"format_version": FORMAT_VERSION, "meta": {"class_names": names},
                "model": state}, ckpt)
    out = tmp_path / "from_ckpt.onnx"
    r = run_main("--config-file", run / "config.yaml", "--outdir", run, "--export", out,
                 "--resume", ckpt)
    assert r.returncode == 0, r.stderr
    assert json.loads(_props(out)["class_names"]) == names
    _assert_runtime_matches_eager(_ort(out), _random_model("resnest14", 3, RUN_FC_SCALE), 32)


def _assert_runtime_matches_eager(session, model, size, label=""):
    """Batch 1 and 3: max abs difference of the logits <= 1e-4, the same top-1."""
    for batch in (1, 3):
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = model(x).numpy()
        (logits,) = session.run(None, {"image": x.numpy()})
        diff = float(np.abs(logits - expected).max())
        if label:
            print(f"{label} batch {batch}: max abs diff {diff:.3g} (max |logit| "
                  f"{np.abs(expected).max():.3g})")
        # ORT's kernels vs torch's: measured <= 3e-6 (<= 6 eps32 * max|logit|, max|logit|
        # 2.7-4.8 for these seeded models); 1e-4 is >= 170 eps32 * max|logit|
        assert logits.shape == expected.shape and diff <= 1e-4
        assert (logits.argmax(1) == expected.argmax(1)).all()


@pytest.mark.slow
def test_resnest14_runtime_matches_eager(exported):
    out, _ = exported
    _assert_runtime_matches_eager(_ort(out), _random_model("resnest14", 3, RUN_FC_SCALE), 32,
                                  "resnest14 32px")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnest50_fast_4s2x40d", "resnet50_splat"])
def test_onnx_runtime_matches_eager(name, tmp_path):
    """Beside resnest14's radix 2: radix 4 with cardinality 2 (the fast variant's radix-major
    reordering, avd first) and radix 1 (the splat variant's sigmoid gate); 64 px, batch 1 and 3.
    The variants' own blocks, one per stage (``layers=[1, 1, 1, 1]``): the 50-layer networks
    repeat the same blocks and cost 3x the export time. ``export_weights`` itself is tested on
    resnest14 above; this is the exporter's coverage of the blocks."""
    from resnest_engine.workflows.export import _onnx_bytes
    model = _random_model(name, 5, fc_scale=RUN_FC_SCALE, layers=[1, 1, 1, 1])
    cfg = config_from_dict({"MODEL": {"NAME": name},
                            "DATA": {"DATASET": "synthetic", "IMAGE_SIZE": 64, "CROP_SIZE": 64}})
    out = tmp_path / f"{name}.onnx"
    out.write_bytes(_onnx_bytes(cfg, model, [str(i) for i in range(5)]))
    assert "PythonOp" not in _op_types(onnx.load(str(out)))
    _assert_runtime_matches_eager(_ort(out), model, 64, f"{name} 64px")


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI is)")
def test_full_disk_is_one_cannot_write_line(run, tmp_path):
    """A real full file system (a tmpfs filled until the kernel says ENOSPC)."""
    disk = Tmpfs(tmp_path / "disk", "1m")
    try:
        fill_disk(disk.path)
        out = disk.path / "model.onnx"
        r = run_main("--config-file", run / "config.yaml", "--outdir", run, "--export", out)
        assert r.returncode == 1, r.stderr
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
        assert errors == [ln for ln in r.stderr.splitlines() if ln.strip()
                          and not ln.startswith("exporting ")], r.stderr
        assert len(errors) == 1 and f"cannot write {out}: No space left on device" in errors[0]
        assert [p.name for p in disk.path.iterdir()] == [FILLER]  # no partial file, no sidecar
    finally:
        disk.unmount()


# --------------------------------------------------------------------------- without the extra
@pytest.mark.parametrize("module", ["onnx", "onnxscript"])
def test_export_without_the_onnx_extra_is_one_line(run, tmp_path, monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    out = tmp_path / "model.onnx"
    r = run_main("--config-file", run / "config.yaml", "--outdir", run, "--export", out)
    assert_one_error_line(r.returncode, r.stderr, ONNX_EXTRA, ".onnx")
    assert not out.exists() and r.stdout == ""


def test_predict_without_onnxruntime_is_one_line(tmp_path, images, monkeypatch):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not read: the import fails first")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    code, out, err = predict("--weights", model, images)
    assert_one_error_line(code, err, ONNX_EXTRA, "onnxruntime")
    assert out == ""


def test_predict_refuses_an_onnx_file_without_our_metadata(tmp_path, images):
    """A foreign ONNX model, and a file that is not ONNX at all: one line each."""
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["image"], ["logits"])], "foreign",
        [onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1, 3])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 3])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)]),
              str(foreign))
    code, _, err = predict("--weights", foreign, images)
    assert_one_error_line(code, err, str(foreign), "no resnest-engine metadata")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage")
    code, _, err = predict("--weights", junk, images)
    assert_one_error_line(code, err, f"cannot load {junk} with ONNX Runtime")


# --------------------------------------------------------------------------- the preprocessing
@pytest.mark.parametrize("data, in_chans", [
    ({"CROP_SIZE": 32}, 3),  # resize the short side to 37, centre crop 32
    ({"CROP_SIZE": 32, "SMALL_IMAGE": True}, 3),  # resize to the crop
    ({"CROP_SIZE": 40, "CROP_STYLE": "ecrop"}, 3),  # ECenterCrop (bicubic), as from 320 px up
    ({"CROP_SIZE": 24, "INTERPOLATION": "bicubic", "EVAL_CROP_FRACTION": 0.8,
      "PCA_LIGHTING": 0.0, "COLOR_JITTER": 0.0}, 1),  # one channel: averaged stats
])
def test_metadata_preprocessing_is_the_runs_eval_transform(data, in_chans):
    """What a deployer (and resnest-predict on .onnx) rebuilds from the metadata gives the
    same tensors as the run's own evaluation transform, on odd-sized images."""
    cfg = config_from_dict({"MODEL": {"NAME": "resnest14", "IN_CHANS": in_chans},
                            "DATA": dict(data, DATASET="synthetic")})
    meta = OnnxMetadata.from_config(cfg, CLASSES)
    assert OnnxMetadata.from_props(meta.to_props()) == meta
    ours, runs = meta.eval_transform(), build_eval_transform(data_options(cfg))
    rng = np.random.default_rng(0)
    for w, h in [(50, 31), (29, 77), (64, 64)]:
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
        image = image.convert(meta.image_mode)
        a, b = ours(image), runs(image)
        assert a.shape == b.shape == (in_chans, meta.crop_size, meta.crop_size)
        assert torch.equal(a, b)  # the same torchvision transforms, same parameters: bitwise


def test_metadata_of_another_file_is_refused():
    with pytest.raises(InputError, match="no resnest-engine metadata"):
        OnnxMetadata.from_props({"model_name": "x"})
    props = OnnxMetadata.from_config(config_from_dict({"MODEL": {"NAME": "resnest14"}}),
                                     CLASSES).to_props()
    with pytest.raises(InputError, match="bad resnest-engine metadata"):
        OnnxMetadata.from_props(dict(props, mean="[0.5]"))
    with pytest.raises(InputError, match="bad resnest-engine metadata"):
        OnnxMetadata.from_props({k: v for k, v in props.items() if k != "crop_size"})
