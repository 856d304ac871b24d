import os
import warnings

import pytest
import torch

from resnest_engine.data import DataError, DataOptions, build_dataset, create_loaders
from resnest_engine.data.jpeg import FastJpegSample, make_device_transform, normalize_batch
from resnest_engine.data.reproducible import SeededDataset
from resnest_engine.data.transforms import build_eval_transform, lighting_offset

from tests.support.data import write_image

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpegs")
    sizes = [(400, 300), (300, 400), (160, 120), (120, 90)]
    for split, per_class in (("train", 4), ("val", 2)):
        for c in ("a", "b"):
            for k in range(per_class):
                write_image(str(root / split / c / f"{k}.jpg"), sizes[k % 4], seed=k + 10 * (c == "b"))
    return str(root)


def _opts(root, **kw):
    base = dict(dataset="imagefolder", root=root, crop_size=64, fast_jpeg=True, workers=0)
    base.update(kw)
    return DataOptions(**base)


def test_fast_batches_stay_uint8_until_the_batch_transform(jpegs):
    opts = _opts(jpegs, pca_lighting=0.1, random_erase=0.5, color_jitter=0.3)
    train, val, num_classes = create_loaders(opts, batch_size=4, test_batch_size=4, seed=0)
    images, labels, params = next(iter(train))
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 64, 64)
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert labels.dtype == torch.int64 and params.shape == (4, 7)
    x, y = train.batch_transform((images, labels, params))
    assert x.dtype == torch.float32 and x.shape == (4, 3, 64, 64) and y is labels
    assert x.is_contiguous(memory_format=torch.channels_last)
    vx, vy = val.prepare_batch(next(iter(val)), device="cpu")
    assert vx.dtype == torch.float32 and vx.shape == (4, 3, 64, 64) and num_classes == 2


def test_fast_draws_are_keyed_per_sample(jpegs):
    opts = _opts(jpegs, pca_lighting=0.1, random_erase=1.0)
    ds = build_dataset(opts, "train")
    data = SeededDataset(FastJpegSample(ds, opts, train=True), len(ds), seed=4)
    a = data[(1, 0)]
    b = data[(1, 0)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    assert not torch.equal(a[2], data[(1, 4)][2]) and not torch.equal(a[2], data[(2, 0)][2])
    assert a[2][:3].abs().sum() > 0  # lighting alphas were drawn


@pytest.mark.slow  # DataLoader worker processes
def test_fast_path_workers_match_in_process(jpegs):
    batches = []
    for workers in (0, 2):
        train, _, _ = create_loaders(_opts(jpegs, workers=workers, pca_lighting=0.1), 4, 4, seed=1)
        train.sampler.set_epoch(3)
        batches.append([b for b in train])
        train.close()
    for (x0, y0, p0), (x2, y2, p2) in zip(*batches):
        assert torch.equal(x0, x2) and torch.equal(y0, y2) and torch.equal(p0, p2)


def test_normalize_batch_matches_the_float_formula():
    g = torch.Generator().manual_seed(0)
    nhwc = torch.randint(0, 256, (3, 8, 10, 3), dtype=torch.uint8, generator=g)
    images = nhwc.permute(0, 3, 1, 2)
    params = torch.zeros(3, 7)
    params[:, :3] = torch.randn(3, 3, generator=g) * 0.1
    params[1, 3:] = torch.tensor([2.0, 3.0, 4.0, 5.0])  # erase rows 2-5, cols 3-7 of image 1
    out = normalize_batch(images, MEAN, STD, params, lighting=True, erase=True)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    expected = (images.float() / 255 + lighting_offset(params[:, :3]).view(3, 3, 1, 1) - mean) / std
    expected[1, :, 2:6, 3:8] = 0
    # one fused scale-and-shift against the formula's 4 roundings, |values| <= 2.7: measured
    # 4.8e-7 (0.9 eps32 / std); atol 1e-5 ~ 19 such units
    assert torch.allclose(out, expected, atol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last)
    plain = normalize_batch(images.contiguous(), MEAN, STD, channels_last=False)
    assert torch.allclose(plain, (images.float() / 255 - mean) / std, atol=1e-5) and plain.is_contiguous()
    gray = normalize_batch(images[:, :1].contiguous(), (0.5,), (0.25,))
    assert torch.allclose(gray, (images[:, :1].float() / 255 - 0.5) / 0.25, atol=1e-5)


@pytest.mark.parametrize("index", [0, 2])  # a large image (draft decoding) and a small one
def test_fast_eval_is_close_to_the_default_eval(jpegs, index):
    opts = _opts(jpegs, crop_size=64)
    ds = build_dataset(opts, "val")
    img, label = FastJpegSample(ds, opts, train=False)(index)
    fast = make_device_transform(opts)((img[None], torch.tensor([label])))[0][0]
    slow = build_eval_transform(opts)(ds[index][0])
    diff = (fast - slow) * torch.tensor(STD).view(3, 1, 1) * 255  # in pixel levels
    assert fast.shape == slow.shape == (3, 64, 64)
    assert diff.abs().mean() < 6, diff.abs().mean()


def test_fast_large_crop_and_gray(jpegs):
    opts = _opts(jpegs, crop_size=320, hflip=True)
    ds = build_dataset(opts, "train")
    for train in (True, False):
        out = FastJpegSample(ds, opts, train=train)(0)
        assert out[0].shape == (3, 320, 320) and out[0].dtype == torch.uint8
    gray = _opts(jpegs, in_chans=1, pca_lighting=0, mean=(0.5,), std=(0.25,))
    train, _, _ = create_loaders(gray, 4, 4, seed=0)
    x, y = train.prepare_batch(next(iter(train)))
    assert x.shape == (4, 1, 64, 64)


def test_fast_path_needs_an_image_folder_and_skips_corrupt(jpegs, tmp_path):
    with pytest.raises(DataError, match="fast_jpeg needs an image-folder"):
        create_loaders(DataOptions(dataset="digits", fast_jpeg=True, workers=0), 8, 8, seed=0)
    with pytest.raises(DataError, match="small_image"):
        create_loaders(_opts(jpegs, small_image=True), 4, 4, seed=0)
    import shutil

    root = str(tmp_path / "copy")
    shutil.copytree(jpegs, root)
    path = os.path.join(root, "train", "a", "0.jpg")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 3])
    opts = _opts(root)
    ds = build_dataset(opts, "train")
    sample = FastJpegSample(ds, opts, train=True)
    index = [p for p, _ in ds.samples].index(path)
    with pytest.raises(DataError, match=f"cannot read image file {path}"):
        sample(index)
    ds.skip_corrupt = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img, label, _ = sample(index)
    assert img.shape == (3, 64, 64) and ds.skipped_at_load == 1
    assert any(path in str(w.message) for w in caught)


def test_cpu_normalisation_runs_on_one_thread_beside_workers_and_gives_the_same_batch(monkeypatch):
    """With DataLoader workers on a CPU run, the batch transform caps itself to one thread (the
    workers decode on the same cores); the result is bitwise that of the uncapped transform and
    the thread count is restored."""
    import resnest_engine.data.jpeg as jpeg

    capped = make_device_transform(DataOptions(dataset="imagefolder", root="x", workers=2,
                                               fast_jpeg=True))
    free = make_device_transform(DataOptions(dataset="imagefolder", root="x", workers=0,
                                             fast_jpeg=True))
    assert capped.cpu_threads == 1 and free.cpu_threads is None
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 48, 48, 3), dtype=torch.uint8, generator=g).permute(0, 3, 1, 2)
    labels = torch.arange(4)
    seen = []
    original = jpeg.normalize_batch

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(jpeg, "normalize_batch", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x1, _ = capped((images, labels))
        x2, _ = free((images, labels))
        assert seen == [1, 2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert torch.equal(x1, x2)  # elementwise: no element's result depends on the thread count
