"""Interop with the real webdataset library (issue 26): webdataset's own reader reads the shards
``resnest-shards`` writes, and shards written by webdataset's ``ShardWriter`` read as
``DATA.DATASET: shards`` after ``resnest-shards --index-only``. Both sides compare sample
counts, labels and the image members' bytes."""
import hashlib
import json

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from resnest_engine.cli.shards import main
from resnest_engine.data import DataOptions, build_dataset
from resnest_engine.data.datasets import ImageFolderSplit
from tests.support.data import make_folder

CLASSES = ["cat", "dog", "emu"]


@pytest.fixture
def src(tmp_path):
    """36 small images: PNG and JPEG (a .jpeg file among them) in three classes."""
    root = make_folder(tmp_path / "src", {"train": {"cat": 6, "dog": 5, "emu": 5},
                                          "val": {"cat": 3, "dog": 3, "emu": 2}})
    make_folder(tmp_path / "src", {"train": {"cat": 3, "emu": 2}, "val": {"dog": 2}},
                ext=".jpg")
    make_folder(tmp_path / "src", {"train": {"dog": 2}, "val": {"emu": 1}}, ext=".jpeg")
    return root


def _read_with_webdataset(split_dir):
    """Every sample webdataset's WebDataset yields for the split's shards, in shard order."""
    urls = sorted(str(p) for p in split_dir.glob("*.tar"))
    dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False)
    return list(dataset)


def test_webdataset_reads_the_shards_resnest_shards_writes(src, tmp_path, capsys):
    out = tmp_path / "set"
    assert main([src, str(out), "--shard-size", "5", "--no-progress"]) == 0
    capsys.readouterr()
    for split in ("train", "val"):
        ours = build_dataset(DataOptions(dataset="shards", root=str(out)), split)
        folder = ImageFolderSplit(src, split, classes=CLASSES)
        theirs = _read_with_webdataset(out / split)
        assert len(theirs) == len(ours) == len(folder) > 10
        index = json.loads((out / split / "index.json").read_text())
        assert len(index["shards"]) == -(-len(folder) // 5) > 1
        for i, sample in enumerate(theirs):
            image_ext = "png" if "png" in sample else "jpg"
            # the members of one sample (webdataset adds "__key__", "__url__" and such)
            assert {k for k in sample if not k.startswith("__")} == {image_ext, "cls"}
            assert sample["__key__"] == f"{i:08d}"
            assert ours.members[i] == f"{i:08d}.{image_ext}"
            # the label, as webdataset hands it (ASCII bytes) and as its decoder reads it
            assert int(sample["cls"]) == ours.targets[i] == folder.targets[i]
            assert sample[image_ext] == ours.read_bytes(i)
            assert sample[image_ext] == open(folder.samples[i][0], "rb").read()
        # webdataset's decoder ("pil", its cls handler) gives the same images and labels
        decoded = wds.WebDataset(sorted(str(p) for p in (out / split).glob("*.tar")),
                                 shardshuffle=False).decode("pil").to_tuple("png;jpg", "cls")
        for i, (image, label) in enumerate(decoded):
            assert label == ours.targets[i]
            assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(ours[i][0]))


def test_shardwriter_shards_read_as_a_split_after_index_only(src, tmp_path, capsys):
    """webdataset's ShardWriter writes the shards (its own tar stream, headers and member
    order); ``resnest-shards --index-only`` indexes them; ``DATA.DATASET: shards`` reads them.
    train carries integer ``.cls`` labels, val class names in ``.txt`` (with ``--classes``)."""
    root = tmp_path / "wds"
    written = {}
    for split, label_ext in (("train", "cls"), ("val", "txt")):
        folder = ImageFolderSplit(src, split, classes=CLASSES)
        (root / split).mkdir(parents=True)
        pattern = str(root / split / f"{split}-%06d.tar")
        with wds.ShardWriter(pattern, maxcount=7, verbose=0) as sink:
            for i, (path, label) in enumerate(folder.samples):
                ext = "png" if path.endswith(".png") else "jpg"
                sink.write({"__key__": f"{split}/sample{i:05d}",
                            ext: open(path, "rb").read(),
                            label_ext: label if label_ext == "cls" else CLASSES[label]})
        written[split] = folder
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")

    # a class-name label needs the names: one line, exit status 2
    assert main(["--index-only", str(root / "val"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "val-000000.tar: member val/sample00000.txt: label 'cat'" in err
    assert "give the names with --classes" in err
    for split in ("train", "val"):
        assert main(["--index-only", str(root / split), "--classes",
                     str(tmp_path / "classes.txt"), "--no-progress"]) == 0
        folder = written[split]
        assert capsys.readouterr().out.strip() == (
            f"{root / split}: indexed {len(folder)} samples in {-(-len(folder) // 7)} shards, "
            f"3 classes")
        index = json.loads((root / split / "index.json").read_text())
        for shard in index["shards"]:
            data = (root / split / shard["name"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == shard["sha256"]
            assert len(data) == shard["bytes"]

    train = build_dataset(DataOptions(dataset="shards", root=str(root)), "train")
    val = build_dataset(DataOptions(dataset="shards", root=str(root)), "val",
                        classes=train.classes)
    for split, ds in (("train", train), ("val", val)):
        folder = written[split]
        assert ds.classes == CLASSES
        assert len(ds) == len(folder) and ds.targets == folder.targets
        for i, (path, _) in enumerate(folder.samples):
            assert ds.read_bytes(i) == open(path, "rb").read(), (split, i)
            with Image.open(path) as im:
                assert np.array_equal(np.asarray(ds[i][0]), np.asarray(im.convert("RGB")))
        first = "png" if folder.samples[0][0].endswith(".png") else "jpg"
        assert ds.members[0] == f"{split}/sample00000.{first}"
