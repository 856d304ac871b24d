"""DATA.CACHE: decoded once, augmented a batch at a time, bitwise the per-sample path's batches."""
import logging

import pytest
import torch

from resnest_engine.data import DataError, DataOptions, close_loader, create_loaders
from resnest_engine.data.cache import CachedSplit, plan_cache
from resnest_engine.data.reproducible import SeededDataset

from tests.support.data import make_folder

SMALL = dict(small_image=True, color_jitter=0.0, pca_lighting=0.0, workers=0)


def _batches(opts, epochs=(0, 3), batch=32, seed=5):
    """Every train batch of ``epochs`` and every val batch, as the trainer/evaluator see them
    (after ``prepare_batch``)."""
    train, val, _ = create_loaders(opts, batch_size=batch, test_batch_size=batch, seed=seed)
    out = []
    try:
        for epoch in epochs:
            train.sampler.set_epoch(epoch)
            out += [train.prepare_batch(b) for b in train]
        out += [val.prepare_batch(b) for b in val]
    finally:
        close_loader(train)
        close_loader(val)
    return train, out


def _assert_bitwise(a, b):
    # Bitwise by construction: the same draws, uint8 geometry by integer indexing, then the same
    # correctly rounded elementwise float ops (ExactNormalize: torchvision's ToDtype, Normalize).
    assert len(a) == len(b) and a
    for (xa, ya), (xb, yb) in zip(a, b):
        assert xa.dtype == xb.dtype == torch.float32 and xa.shape == xb.shape
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("hflip", [False, True])
def test_digits_cached_batches_are_bitwise_the_per_sample_ones(hflip):
    opts = dict(dataset="digits", image_size=32, crop_size=32, hflip=hflip, **SMALL)
    plain_loader, plain = _batches(DataOptions(**opts, cache=False))
    cached_loader, cached = _batches(DataOptions(**opts, cache=True))
    assert isinstance(plain_loader.dataset, SeededDataset)
    assert isinstance(cached_loader.dataset, CachedSplit)
    _assert_bitwise(plain, cached)
    # the augmentation is really on: a batch differs from its stored (unaugmented) images
    store = cached_loader.dataset
    keys = [(0, i) for i in range(32)]
    assert not torch.equal(store.__getitems__(keys)[0], store.images[:32])
    top, left, flip = store.draws(keys)
    assert set(top.tolist()) == set(range(9)) == set(left.tolist())  # padding 4: offsets 0-8
    assert flip.any() == hflip and not flip.all()


def test_image_folder_cache_resizes_like_the_per_sample_path(tmp_path):
    """Images of another size go through the same Resize first; grey (in_chans 1) too."""
    root = make_folder(tmp_path, {"train": {"a": 9, "b": 7}, "val": {"a": 3, "b": 4}},
                       size=(37, 29))
    for in_chans in (3, 1):
        opts = dict(dataset="imagefolder", root=root, crop_size=24, in_chans=in_chans, **SMALL)
        _, plain = _batches(DataOptions(**opts, cache=False), epochs=(0, 1, 2), batch=4)
        loader, cached = _batches(DataOptions(**opts, cache=True), epochs=(0, 1, 2), batch=4)
        assert loader.dataset.images.shape == (16, in_chans, 24, 24)
        _assert_bitwise(plain, cached)


def test_repeated_augmentation_keys_travel_into_the_cache():
    opts = dict(dataset="synthetic", synthetic_size=64, image_size=16, crop_size=16,
                aug_repeats=3, hflip=True, **SMALL)
    _, plain = _batches(DataOptions(**opts, cache=False), batch=16)
    _, cached = _batches(DataOptions(**opts, cache=True), batch=16)
    _assert_bitwise(plain, cached)


@pytest.mark.slow  # DataLoader worker processes
def test_workers_read_one_shared_store():
    opts = dict(dataset="digits", image_size=32, crop_size=32, hflip=True, **SMALL)
    _, alone = _batches(DataOptions(**opts, cache=True))
    loader, workers = _batches(DataOptions(**dict(opts, workers=2), cache=True))
    assert loader.dataset.images.is_shared()
    _assert_bitwise(alone, workers)


def test_auto_falls_back_and_the_log_says_why(caplog):
    base = dict(dataset="synthetic", synthetic_size=40, image_size=32, crop_size=32, **SMALL)
    caplog.set_level(logging.INFO, logger="resnest_engine")
    # 40 train + 10 val images of 3 x 32 x 32 bytes = 153,600 bytes; a 1 MB budget holds them
    train, _, _ = create_loaders(DataOptions(**base, cache_mb=1), 8, 8, seed=0)
    assert isinstance(train.dataset, CachedSplit)
    assert "Data cache: train split decoded once, 40 images, 0.1 MB in memory" in caplog.text

    caplog.clear()
    big = DataOptions(**dict(base, synthetic_size=400, image_size=64, crop_size=64), cache_mb=1)
    train, _, _ = create_loaders(big, 8, 8, seed=0)
    assert isinstance(train.dataset, SeededDataset)
    assert ("Data cache: not used (the decoded images need 6.1 MB, over the budget "
            "DATA.CACHE_MB=1)") in caplog.text

    caplog.clear()
    train, _, _ = create_loaders(DataOptions(**dict(base, color_jitter=0.4)), 8, 8, seed=0)
    assert isinstance(train.dataset, SeededDataset)
    assert ("not used (DATA.COLOR_JITTER is on: a per-sample augmentation the cache does not "
            "batch)") in caplog.text


@pytest.mark.parametrize("change, why", [
    (dict(small_image=False), "DATA.SMALL_IMAGE is false"),
    (dict(random_erase=0.25), "DATA.RANDOM_ERASE is on"),
    (dict(rand_aug="2,9"), "DATA.RAND_AUG is on"),
    (dict(cache_mb=1, synthetic_size=4000), "over the budget DATA.CACHE_MB=1"),
])
def test_cache_true_refuses_with_one_line(change, why):
    opts = DataOptions(**dict(dict(dataset="synthetic", synthetic_size=40, image_size=32,
                                   crop_size=32, **SMALL), **change), cache=True)
    with pytest.raises(DataError) as info:
        create_loaders(opts, 8, 8, seed=0)
    message = str(info.value)
    assert message.startswith("data.cache is true but ") and why in message
    assert message.endswith("set DATA.CACHE to auto or false") and "\n" not in message


def test_the_budget_counts_both_splits_per_process():
    opts = DataOptions(dataset="synthetic", crop_size=32, cache_mb=1, **SMALL)
    # 1 MB = 10^6 bytes = 325.5 images of 3 x 32 x 32
    assert plan_cache(opts, [300, 25]).use
    assert not plan_cache(opts, [300, 26]).use
    assert plan_cache(opts, [300, 26]).nbytes == 326 * 3072
    assert not plan_cache(DataOptions(dataset="synthetic", crop_size=32, cache=False, **SMALL),
                          [1]).use
