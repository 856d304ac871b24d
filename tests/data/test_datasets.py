import os
import warnings

import numpy as np
import pytest
import torch

from resnest_engine.data import DataError, DataOptions, build_dataset, list_datasets
from resnest_engine.data.datasets import ImageFolderSplit, digits_split

from tests.support.data import make_folder, write_image


def test_registry_names_and_unknown():
    assert {"imagefolder", "imagenet", "cifar10", "cifar100", "digits", "synthetic"} <= set(list_datasets())
    with pytest.raises(DataError, match="unknown data.dataset 'nope'.*digits"):
        build_dataset(DataOptions(dataset="nope"), "train")


def test_imagefolder_discovery(folder):
    opts = DataOptions(dataset="imagefolder", root=folder)
    train, val = build_dataset(opts, "train"), build_dataset(opts, "val")
    assert train.classes == ["cat", "dog", "emu"] and val.classes == train.classes
    assert len(train) == 7 and len(val) == 3
    assert [label for _, label in val.samples] == [0, 1, 1]
    img, label = train[3]
    assert img.mode == "RGB" and img.size == (40, 30) and label == 1
    gray = build_dataset(DataOptions(dataset="imagenet", root=folder, in_chans=1, pca_lighting=0), "train")
    assert gray[0][0].mode == "L"


def test_imagefolder_ignores_hidden_and_non_images(tmp_path):
    root = make_folder(tmp_path, {"train": {"a": 1}, "val": {"a": 1}})
    (tmp_path / "train" / "a" / "notes.txt").write_text("x")
    (tmp_path / "train" / "a" / ".hidden.png").write_bytes(b"")
    (tmp_path / "train" / ".cache").mkdir()
    assert len(build_dataset(DataOptions(dataset="imagefolder", root=root), "train")) == 1


def test_imagefolder_missing_split(tmp_path):
    root = make_folder(tmp_path, {"train": {"a": 1}})
    opts = DataOptions(dataset="imagefolder", root=root)
    build_dataset(opts, "train")
    with pytest.raises(DataError, match=f"missing split folder {os.path.join(root, 'val')}"):
        build_dataset(opts, "val")
    with pytest.raises(DataError, match="needs data.root"):
        build_dataset(DataOptions(dataset="imagefolder"), "train")
    with pytest.raises(DataError, match="is not a folder"):
        build_dataset(DataOptions(dataset="imagefolder", root=str(tmp_path / "nowhere")), "train")


def test_imagefolder_empty_class(tmp_path):
    root = make_folder(tmp_path, {"train": {"a": 1, "b": 0}, "val": {"a": 1}})
    with pytest.raises(DataError, match=f"class folder {os.path.join(root, 'train', 'b')} has no"):
        build_dataset(DataOptions(dataset="imagefolder", root=root), "train")


def test_imagefolder_val_class_missing_from_train(tmp_path):
    root = make_folder(tmp_path, {"train": {"a": 1}, "val": {"a": 1, "zebra": 1}})
    with pytest.raises(DataError, match="1 class folder.*lacks: zebra"):
        build_dataset(DataOptions(dataset="imagefolder", root=root), "val")


def _corrupt_files(root):
    bad = os.path.join(root, "train", "a", "garbage.jpg")
    with open(bad, "wb") as f:
        f.write(np.random.default_rng(0).bytes(500))
    empty = os.path.join(root, "train", "b", "empty.png")
    open(empty, "wb").close()
    return bad, empty


def test_corrupt_file_error_names_file(tmp_path):
    root = make_folder(tmp_path, {"train": {"a": 2, "b": 2}, "val": {"a": 1}})
    bad, _ = _corrupt_files(root)
    ds = build_dataset(DataOptions(dataset="imagefolder", root=root), "train")
    index = [p for p, _ in ds.samples].index(bad)
    with pytest.raises(DataError, match=f"cannot read image file {bad}.*SKIP_CORRUPT") as info:
        ds[index]
    assert "\n" not in str(info.value)


def test_skip_corrupt_counts_and_warns(tmp_path):
    root = make_folder(tmp_path, {"train": {"a": 2, "b": 2}, "val": {"a": 1}})
    bad, empty = _corrupt_files(root)
    # A truncated JPEG passes the header check and fails only when decoded.
    trunc = write_image(os.path.join(root, "train", "b", "trunc.jpg"), (64, 48), seed=9)
    data = open(trunc, "rb").read()
    open(trunc, "wb").write(data[: len(data) // 2])
    opts = DataOptions(dataset="imagefolder", root=root, skip_corrupt=True)
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image file\(s\)"):
        ds = build_dataset(opts, "train")
    assert sorted(ds.skipped) == sorted([bad, empty]) and len(ds) == 5
    index = [p for p, _ in ds.samples].index(trunc)
    with pytest.warns(UserWarning, match=f"skipping unreadable image file {trunc}"):
        img, label = ds[index]
    assert ds.skipped_at_load == 1 and img.size == (40, 30)
    # Every remaining sample loads as its 40x30 image.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert [ds[i][0].size for i in range(len(ds))] == [(40, 30)] * len(ds)


def test_digits_split_sizes_stratified_deterministic():
    train = build_dataset(DataOptions(dataset="digits"), "train")
    val = build_dataset(DataOptions(dataset="digits"), "val")
    assert (len(train), len(val)) == (1437, 360)
    img, label = train[0]
    assert img.mode == "RGB" and img.size == (32, 32)
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    y = load_digits().target
    ref_train, ref_val = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)
    tr, va = digits_split()
    assert set(tr) == set(ref_train) and set(va) == set(ref_val) and not set(tr) & set(va)
    # Stratified: each class's share of val matches its share of the whole within one sample.
    counts_val = np.bincount(val.targets, minlength=10)
    counts_all = np.bincount(y, minlength=10)
    assert np.all(np.abs(counts_val - counts_all * 0.2) <= 1)
    again = build_dataset(DataOptions(dataset="digits"), "val")
    assert again.targets == val.targets and np.array_equal(again.images, val.images)
    small = build_dataset(DataOptions(dataset="digits", in_chans=1, pca_lighting=0, image_size=16), "train")
    assert small[0][0].mode == "L" and small[0][0].size == (16, 16)


def test_synthetic_deterministic():
    opts = DataOptions(dataset="synthetic", synthetic_size=20, synthetic_classes=3, image_size=24)
    a, b = build_dataset(opts, "train"), build_dataset(opts, "train")
    assert len(a) == 20 and len(build_dataset(opts, "val")) == 5 and len(a.classes) == 3
    x, y = a[7]
    assert x.shape == (3, 24, 24) and x.dtype == torch.uint8 and 0 <= y < 3
    assert torch.equal(x, b[7][0]) and y == b[7][1]
    assert not torch.equal(a[7][0], a[8][0])


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_without_download_is_a_clear_error(tmp_path, name):
    with pytest.raises(DataError, match=f"not found .*under {tmp_path}.*data.download=true"):
        build_dataset(DataOptions(dataset=name, root=str(tmp_path)), "train")
    assert list(tmp_path.iterdir()) == []  # nothing was downloaded
    with pytest.raises(DataError, match="needs data.root"):
        build_dataset(DataOptions(dataset=name), "train")


def test_imagefolder_class_from_train_only(folder):
    ds = ImageFolderSplit(folder, "val", classes=["cat", "dog", "emu"])
    assert ds.classes == ["cat", "dog", "emu"]
