"""Bad input: each is one line on stderr, exit status 2, no traceback, nothing written."""
import os

import pytest
import torch
import yaml
from PIL import Image

from resnest_engine.storage.checksum import with_checksum
from tests.support.cli import TINY, assert_user_error, merge, run_cli, run_main


def write(path, data):
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


CONFIG_CASES = [
    ("missing", None, [], ["not found"]),
    ("syntax", "MODEL:\n  NAME: [resnest14\n", [], ["cfg.yaml:3", "syntax"]),
    ("not_mapping", "- 1\n- 2\n", [], ["mapping"]),
    ("missing_base", {"_BASE_": "nope.yaml"}, [], ["nope.yaml"]),
    ("unknown_key", merge(TINY, {"TRAINING": {"EPOHCS": 2}}), [], ["TRAINING.EPOHCS", "TRAINING.EPOCHS"]),
    ("zero_epochs", TINY, ["TRAINING.EPOCHS=0"], ["TRAINING.EPOCHS"]),
    ("zero_batch", TINY, ["TRAINING.BATCH_SIZE=0"], ["TRAINING.BATCH_SIZE"]),
    ("wrong_type", TINY, ["TRAINING.EPOCHS=abc"], ["TRAINING.EPOCHS"]),
    ("bad_amp", TINY, ["TRAINING.AMP=fp8"], ["TRAINING.AMP"]),
    ("bad_scheduler", TINY, ["OPTIMIZER.LR_SCHEDULER=cosin"], ["OPTIMIZER.LR_SCHEDULER", "cos"]),
    ("unknown_model", TINY, ["MODEL.NAME=resnest51"], ["resnest51", "resnest50"]),
    ("unknown_dataset", TINY, ["DATA.DATASET=imagefoldr"], ["imagefoldr", "imagefolder"]),
    ("malformed_override", TINY, ["TRAINING.EPOCHS"], ["TRAINING.EPOCHS"]),
    ("official_key", merge(TINY, {"TRAINING": {"LAST_GAMMA": True}}), [], ["MODEL.ZERO_INIT_LAST"]),
]


@pytest.mark.parametrize("name,content,overrides,needles", [
    pytest.param(*case, id=case[0], marks=[pytest.mark.slow] if case[0] == "syntax" else [])
    for case in CONFIG_CASES])
def test_config_errors(tmp_path, name, content, overrides, needles):
    cfg = tmp_path / "cfg.yaml"
    if content is not None:
        write(cfg, content)
    run = run_cli if name == "syntax" else run_main  # one real console run, the rest in-process
    r = run("--config-file", cfg, "--outdir", tmp_path / "out", *overrides)
    assert_user_error(r, *needles)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags,needle", [
    (["--nproc-per-node", "0"], "--nproc-per-node"),
    (["--nnodes", "2", "--node-rank", "2", "--nproc-per-node", "1", "--master-addr", "127.0.0.1",
      "--master-port", "29999"], "--node-rank"),
    (["--nnodes", "2", "--nproc-per-node", "1"], "--node-rank"),
    (["--nproc-per-node", "3"], "BATCH_SIZE"),  # 16 does not divide by 3
])
def test_inconsistent_distributed_flags(tmp_path, flags, needle):
    cfg = write(tmp_path / "cfg.yaml", TINY)
    assert_user_error(run_main("--config-file", cfg, "--outdir", tmp_path / "out", *flags), needle)


def _folder(root, classes, val_classes=None):
    for split, names in (("train", classes), ("val", val_classes or classes)):
        for c in names:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(2):
                Image.new("RGB", (16, 16), (i * 40, 10, 200)).save(d / f"{i}.png")


def _folder_cfg(tmp_path, root):
    return write(tmp_path / "cfg.yaml", merge(TINY, {
        "DATA": {"DATASET": "imagefolder", "ROOT": str(root)},
        "TRAINING": {"BATCH_SIZE": 2, "TEST_BATCH_SIZE": 2}}))


def test_missing_root(tmp_path):
    cfg = _folder_cfg(tmp_path, tmp_path / "nowhere")
    assert_user_error(run_main("--config-file", cfg, "--outdir", tmp_path / "out"), "nowhere")


def test_missing_split(tmp_path):
    root = tmp_path / "data"
    _folder(root, ["a", "b"])
    import shutil
    shutil.rmtree(root / "val")
    r = run_main("--config-file", _folder_cfg(tmp_path, root), "--outdir", tmp_path / "out")
    assert_user_error(r, "val")


def test_empty_class(tmp_path):
    root = tmp_path / "data"
    _folder(root, ["a", "b"])
    (root / "train" / "c").mkdir()
    r = run_main("--config-file", _folder_cfg(tmp_path, root), "--outdir", tmp_path / "out")
    assert_user_error(r, "c")


def test_val_class_missing_from_train(tmp_path):
    root = tmp_path / "data"
    _folder(root, ["a", "b"], val_classes=["a", "b", "zebra"])
    r = run_main("--config-file", _folder_cfg(tmp_path, root), "--outdir", tmp_path / "out")
    assert_user_error(r, "zebra")


def test_corrupt_image(tmp_path):
    root = tmp_path / "data"
    _folder(root, ["a", "b"])
    (root / "train" / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    r = run_main("--config-file", _folder_cfg(tmp_path, root), "--outdir", tmp_path / "out")
    assert_user_error(r, "broken.png")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 2-epoch run, one step an epoch, trained in this process (a few seconds)."""
    d = tmp_path_factory.mktemp("finished")
    cfg = write(d / "cfg.yaml", merge(TINY, {"DATA": {"SYNTHETIC_SIZE": 16},
                                             "OPTIMIZER": {"WARMUP_EPOCHS": 0}}))
    r = run_main("--config-file", cfg, "--outdir", d / "run")
    assert r.returncode == 0, r.stderr
    return cfg, d / "run"


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('EVIL_MARKER', '/tmp/evil-marker')}",))


@pytest.mark.parametrize("kind", ["missing", "garbage", "truncated",
                                  pytest.param("pickle", marks=pytest.mark.slow),  # run_cli
                                  "other_arch", "other_classes"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_bad_checkpoints(tmp_path, finished_run, kind, mode, monkeypatch):
    cfg, run = finished_run
    ckpt = sorted((run / "checkpoints").glob("resume-*.pt"))[0]  # epoch 1 of 2: not finished
    bad = tmp_path / "bad.pt"
    marker = tmp_path / "marker"
    needles = [str(bad.name)]
    if kind == "garbage":
        bad.write_bytes(os.urandom(2048))
    elif kind == "truncated":
        bad.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif kind == "pickle":
        monkeypatch.setenv("EVIL_MARKER", str(marker))
        torch.save({"format_version": 1, "model": Evil()}, bad)
    elif kind == "other_arch":
        if mode == "train":
            full = torch.load(ckpt, weights_only=True)
            full["meta"]["model"] = "resnest26"
            full["model"] = __import__("resnest_engine").get_model("resnest26", num_classes=4).state_dict()
            torch.save(with_checksum(full), bad)  # a sound file of another run
        else:
            torch.save(__import__("resnest_engine").get_model("resnest26", num_classes=4).state_dict(), bad)
        needles = ["resnest26"] if mode == "train" else ["layer"]
    elif kind == "other_classes":
        sd = __import__("resnest_engine").get_model("resnest14", num_classes=7).state_dict()
        if mode == "train":
            full = torch.load(ckpt, weights_only=True)
            full["model"] = sd
            torch.save(with_checksum(full), bad)
            needles = ["fc.weight"]
        else:
            torch.save(sd, bad)
            needles = ["fc.weight"]
    out = tmp_path / "out"
    args = ["--config-file", cfg, "--resume", bad]
    args += ["--outdir", out] if mode == "train" else ["--outdir", run, "--eval-only"]
    r = (run_cli if kind == "pickle" else run_main)(*args)  # the security case as a real console run
    assert_user_error(r, *needles)
    assert not marker.exists(), "the pickled code ran"
    assert not out.exists() or not any(out.glob("checkpoints/*.pt"))
