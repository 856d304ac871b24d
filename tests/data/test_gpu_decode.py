"""DATA.DECODE gpu, run on the CPU device (the same code as on CUDA, where torchvision's nvjpeg
decodes): the crop boxes, flips and augmentation draws are the CPU path's, the batches match
it (bitwise where the CPU path decodes fully, within the reduced-size decoding's error where it
does not), the container datasets give the folder's batches, and what it cannot do is refused
in one line."""
import json
import os
import shutil
import warnings

import pytest
import torch

from resnest_engine.data import DataError, DataOptions, build_dataset, create_loaders
from resnest_engine.data.gpu_decode import (COLUMNS, DECODED, FLIP, HEIGHT, JPEG_BYTES, KIND,
                                            LEFT, TOP, WIDTH, DecodeBatchTransform,
                                            EncodedJpegSample, encoded_collate, resolve_decode)
from resnest_engine.data.jpeg import FastJpegSample, fast_collate, make_device_transform
from resnest_engine.data.loaders import close_loader
from resnest_engine.data.reproducible import SeededDataset, TransformedSample
from resnest_engine.data.transforms import build_eval_transform, build_train_transform
from resnest_engine.workflows.shards import write_shards
from tests.support.cli import REPO, run_main
from tests.support.data import write_image
from tests.support.parquet import folder_to_parquet
from tests.support.real_files import write_digits

STD = (0.229, 0.224, 0.225)
# (w, h): the first two are large enough that the CPU fast path decodes some boxes at reduced
# size (Pillow's DCT scaling, boxes shrunk >= 2x); the last two are always decoded fully.
SIZES = [(400, 300), (300, 400), (160, 120), (120, 90)]


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_decode_jpegs")
    for split, per_class in (("train", 4), ("val", 4)):
        for c in ("a", "b"):
            for k in range(per_class):
                write_image(str(root / split / c / f"{k}.jpg"), SIZES[k % 4],
                            seed=k + 10 * (c == "b"))
    yield str(root)
    shutil.rmtree(root, ignore_errors=True)


def _opts(root, **kw):
    base = dict(dataset="imagefolder", root=root, crop_size=64, workers=0, pca_lighting=0.1,
                color_jitter=0.4, random_erase=0.5)
    base.update(kw)
    return DataOptions(**base)


def _pair(root, train, seed=3, **kw):
    """The CPU fast path's and the GPU-decode path's samples of one split, same seed."""
    cpu, gpu = _opts(root, fast_jpeg=True, **kw), _opts(root, decode="gpu", **kw)
    ds = build_dataset(cpu, "train" if train else "val")
    return (cpu, gpu, ds, SeededDataset(FastJpegSample(ds, cpu, train), len(ds), seed),
            SeededDataset(EncodedJpegSample(ds, gpu, train), len(ds), seed))


def _levels(a, b):
    """|a - b| of two normalised batches in uint8 levels, per image (max over pixels)."""
    return ((a - b).abs() * torch.tensor(STD).view(1, 3, 1, 1) * 255).amax(dim=(1, 2, 3))


def test_the_crop_boxes_and_flips_are_the_cpu_paths(jpegs):
    _, _, ds, cpu, gpu = _pair(jpegs, train=True, hflip=True)
    boxes = []
    fast = cpu.sample_fn
    box_resize = fast._box_resize
    fast._box_resize = lambda data, im, box: boxes.append(box) or box_resize(data, im, box)
    flips = []
    draw_flip = fast._draw_flip
    fast._draw_flip = lambda: flips.append(draw_flip()) or flips[-1]
    keys = [(epoch, i) for epoch in (0, 5) for i in range(len(ds))]
    for key in keys:
        cpu[key]
    rows = torch.stack([gpu[key][2] for key in keys])
    assert rows.shape == (16, COLUMNS) and (rows[:, KIND] == JPEG_BYTES).all()
    assert [tuple(int(v) for v in r[[TOP, LEFT, HEIGHT, WIDTH]]) for r in rows] == boxes
    assert rows[:, FLIP].tolist() == [float(f) for f in flips]
    assert 0 < sum(flips) < len(flips)  # both kinds were drawn
    assert len(set(boxes)) == len(boxes)  # every (epoch, index) its own box


def test_batches_match_the_cpu_path(jpegs):
    """Against the fast path: full decodes (the small images) give its batch to float
    precision; the large ones differ by its reduced-size decoding (measured: at most 13 levels,
    see docs/data.md), not by the decoder (libjpeg-turbo on both sides on the CPU)."""
    for train in (True, False):
        cpu_opts, gpu_opts, ds, cpu, gpu = _pair(jpegs, train=train)
        keys = [(1, i) for i in range(len(ds))]
        x_cpu, y_cpu = make_device_transform(cpu_opts)(fast_collate([cpu[k] for k in keys]))
        batch = encoded_collate([gpu[k] for k in keys])
        x_gpu, y_gpu = DecodeBatchTransform(gpu_opts, train,
                                            make_device_transform(gpu_opts)).from_host(batch)
        assert torch.equal(y_cpu, y_gpu) and x_gpu.shape == x_cpu.shape == (len(ds), 3, 64, 64)
        assert x_gpu.is_contiguous(memory_format=torch.channels_last)
        levels = _levels(x_cpu, x_gpu)
        full = [i for i, (path, _) in enumerate(ds.samples)
                if os.path.basename(path) in ("2.jpg", "3.jpg")]
        assert full and levels[full].max() < 1e-3, levels  # float32 rounding only
        assert levels.max() <= 16, levels  # Pillow's reduced-size DCT decode vs a full one
        # the default float path (Pillow decodes fully, Pillow resizes): one level at most, the
        # rounding of Pillow's uint8 resize against torchvision's (measured: max 1, mean 0.02)
        plain = _opts(jpegs, color_jitter=0, pca_lighting=0, random_erase=0)
        transform = build_train_transform(plain) if train else build_eval_transform(plain)
        ref = SeededDataset(TransformedSample(ds, transform), len(ds), 3)
        x_ref = torch.stack([ref[k][0] for k in keys])
        gpu_plain = _opts(jpegs, decode="gpu", color_jitter=0, pca_lighting=0, random_erase=0)
        gpu = SeededDataset(EncodedJpegSample(ds, gpu_plain, train), len(ds), 3)
        x_gpu, _ = DecodeBatchTransform(gpu_plain, train, make_device_transform(gpu_plain)
                                        ).from_host(encoded_collate([gpu[k] for k in keys]))
        levels = _levels(x_ref, x_gpu)
        assert levels.max() < 1 + 1e-3 and levels.max() > 0, levels


def test_a_png_is_decoded_in_the_worker_and_a_truncated_jpeg_meets_the_corrupt_rule(jpegs,
                                                                                     tmp_path):
    root = str(tmp_path / "copy")
    shutil.copytree(jpegs, root)
    write_image(os.path.join(root, "train", "a", "9.png"), (90, 70), seed=99)
    broken = os.path.join(root, "train", "b", "0.jpg")
    data = open(broken, "rb").read()
    open(broken, "wb").write(data[: len(data) // 2])
    cpu_opts, gpu_opts, ds, cpu, gpu = _pair(root, train=True)
    png = [p for p, _ in ds.samples].index(os.path.join(root, "train", "a", "9.png"))
    payload, _, row = gpu[(0, png)]
    assert row[KIND] == DECODED and payload.shape == (3 * 64 * 64,)
    x_cpu, _ = make_device_transform(cpu_opts)(fast_collate([cpu[(0, png)]]))
    x_gpu, _ = DecodeBatchTransform(gpu_opts, True, make_device_transform(gpu_opts)).from_host(
        encoded_collate([gpu[(0, png)]]))
    assert _levels(x_cpu, x_gpu).max() < 1e-3
    index = [p for p, _ in ds.samples].index(broken)
    with pytest.raises(DataError, match=f"cannot read image file {broken}"):
        gpu[(0, index)]
    ds.skip_corrupt = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        payload, label, row = gpu[(0, index)]
    assert ds.skipped_at_load == 1 and any(broken in str(w.message) for w in caught)


def test_loaders_prepare_batch_and_workers(jpegs):
    """Through create_loaders: prepare_batch decodes the host batch (uint8 payloads never go
    to the device as such), and DataLoader workers give the in-process batches."""
    batches = []
    for workers in (0, 2):
        train, val, _ = create_loaders(_opts(jpegs, decode="gpu", workers=workers), 4, 4, seed=1)
        train.sampler.set_epoch(2)
        raw = next(iter(train))
        assert raw[0].dtype == torch.uint8 and raw[0].dim() == 1 and raw[1].shape == (4,)
        batches.append([train.prepare_batch(raw, device="cpu"),
                        val.prepare_batch(next(iter(val)), device="cpu")])
        for loader in (train, val):
            close_loader(loader)
    for (x0, y0), (x2, y2) in zip(*batches):
        assert x0.dtype == torch.float32 and x0.shape == (4, 3, 64, 64)
        assert torch.equal(x0, x2) and torch.equal(y0, y2)


def _jpeg_folder(tmp_path):
    root = tmp_path / "src"
    for split, per_class in (("train", 3), ("val", 2)):
        for c in ("cat", "dog"):
            for k in range(per_class):
                write_image(str(root / split / c / f"{k:03d}.jpg"), SIZES[(k + (c == "dog")) % 4],
                            seed=k + 7 * (c == "dog"))
    write_image(str(root / "train" / "cat" / "009.png"), (50, 40), seed=5)  # the CPU fallback
    return str(root)


@pytest.mark.parametrize("mode", ["fast_jpeg", "decode_gpu"])
def test_shards_and_parquet_give_the_folders_batches(tmp_path, mode):
    src = _jpeg_folder(tmp_path)
    write_shards(src, str(tmp_path / "shards"), shard_size=3, progress=False)
    pq = folder_to_parquet(src, tmp_path / "pq", layout="hub", files_per_split=2,
                           row_group_size=2)
    extra = dict(fast_jpeg=True) if mode == "fast_jpeg" else dict(decode="gpu")
    got = {}
    for name, root in (("imagefolder", src), ("shards", str(tmp_path / "shards")),
                       ("parquet", str(pq))):
        train, val, _ = create_loaders(_opts(root, dataset=name, **extra), 4, 2, seed=2)
        train.sampler.set_epoch(1)
        got[name] = [train.prepare_batch(b, device="cpu") for b in train] + \
                    [val.prepare_batch(b, device="cpu") for b in val]
        for loader in (train, val):
            close_loader(loader)
    assert len(got["imagefolder"]) == 1 + 2
    for name in ("shards", "parquet"):
        for (xa, ya), (xb, yb) in zip(got["imagefolder"], got[name]):
            assert torch.equal(xa, xb) and torch.equal(ya, yb), name


def test_refusals_are_one_line(jpegs):
    for key, value in (("rand_aug", "2,9"), ("auto_aug", True), ("trivial_aug", True)):
        with pytest.raises(DataError, match=rf"^DATA.DECODE gpu cannot run DATA.{key.upper()} "
                                            rf"on the device .*; set DATA.DECODE: cpu or turn "
                                            rf"DATA.{key.upper()} off$"):
            _opts(jpegs, decode="gpu", **{key: value})
    with pytest.raises(DataError, match="DATA.DECODE gpu cannot run DATA.SMALL_IMAGE"):
        DataOptions(dataset="digits", decode="gpu", small_image=True)
    with pytest.raises(DataError, match=r"^DATA.DECODE gpu needs an image-folder or container "
                                        r"dataset \(imagefolder, imagenet, shards, parquet\), "
                                        r"not data.dataset=digits$"):
        create_loaders(DataOptions(dataset="digits", decode="gpu", workers=0), 8, 8, seed=0)
    with pytest.raises(DataError, match="decode"):
        DataOptions(dataset="digits", decode="nvjpeg")


def test_auto_picks_gpu_only_on_cuda_with_nvjpeg(jpegs, caplog):
    opts, why = resolve_decode(_opts(jpegs, decode="auto"), "cpu")
    assert (opts.decode, why) == ("cpu", "auto: the device is CPU")
    opts, why = resolve_decode(DataOptions(dataset="digits", decode="auto"), "cuda")
    assert (opts.decode, why) == ("cpu", "auto: DATA.DATASET digits has no encoded image files")
    opts, why = resolve_decode(_opts(jpegs, decode="auto", rand_aug="2,9"), "cuda")
    assert (opts.decode, why) == ("cpu", "auto: DATA.RAND_AUG is on")
    assert resolve_decode(_opts(jpegs, decode="gpu"), "cpu")[0].decode == "gpu"
    with caplog.at_level("INFO", logger="resnest_engine"):
        train, val, _ = create_loaders(_opts(jpegs, decode="auto"), 4, 4, seed=0)
    lines = [r.getMessage() for r in caplog.records if "JPEG decoding" in r.getMessage()]
    assert lines == ["JPEG decoding: cpu (auto: the device is CPU)"]
    assert next(iter(train))[0].dtype == torch.float32  # the CPU (default float) path's batch


@pytest.mark.slow  # two short training runs, about 15 s
def test_digits_jpegs_train_to_the_same_top1_with_either_decoder(tmp_path):
    """The digits recipe on a JPEG folder (20 per class train, 10 val), 4 epochs: DECODE gpu (on
    the CPU: libjpeg-turbo, as the workers) gives the fast path's batches here (32 px boxes are
    never decoded at reduced size), so the runs are the same, top-1 included (the issue asks
    within 0.3 points)."""
    root = tmp_path / "digits"
    write_digits(root, 20, 10, ext=".jpg")
    results = {}
    for decode in ("cpu", "gpu"):
        out = tmp_path / decode
        r = run_main("--config-file", REPO / "recipes" / "digits.yaml", "--outdir", out,
                     "DATA.DATASET=imagefolder", f"DATA.ROOT={root}", "DATA.SMALL_IMAGE=false",
                     "DATA.FAST_JPEG=true", f"DATA.DECODE={decode}", "TRAINING.EPOCHS=4",
                     "TRAINING.BATCH_SIZE=50", "TRAINING.TEST_BATCH_SIZE=100",
                     "LOGGING.TENSORBOARD=false", "LOGGING.PROGRESS_BAR=off")
        assert r.returncode == 0, r.stderr[-2000:]
        results[decode] = json.loads((out / "metrics.json").read_text())
    cpu, gpu = results["cpu"], results["gpu"]
    assert abs(cpu["top1"] - gpu["top1"]) <= 0.3, (cpu["top1"], gpu["top1"])
    assert [h["loss"] for h in cpu["history"]] == [h["loss"] for h in gpu["history"]]
    assert cpu["top1"] > 20  # learnt something (10 classes: 10 is chance)
