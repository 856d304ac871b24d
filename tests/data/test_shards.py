"""Tar shards: resnest-shards' conversion (round trip, refusal, rerun; --index-only is in
test_shards_webdataset.py, on shards webdataset writes) and
DATA.DATASET: shards (the folder's samples, bitwise; damaged shards as one-line errors)."""
import hashlib
import io
import json
import os
import tarfile

import numpy as np
import pytest

from resnest_engine.data import DataError, DataOptions, build_dataset
from resnest_engine.data.datasets import ImageFolderSplit
from resnest_engine.workflows.shards import write_shards
from tests.support.data import assert_same_batches, loader_batches, make_folder


@pytest.fixture
def converted(tmp_path):
    """A mixed PNG/JPEG folder (jpeg extension included) and its shard set, 3 samples a shard."""
    src = make_folder(tmp_path / "src", {"train": {"cat": 3, "dog": 2, "emu": 2},
                                         "val": {"cat": 1, "dog": 2}})
    make_folder(tmp_path / "src", {"train": {"cat": 1}}, ext=".jpeg")  # cat/000.jpeg
    make_folder(tmp_path / "src", {"train": {"dog": 1}}, ext=".jpg")
    out = tmp_path / "out"
    write_shards(src, str(out), shard_size=3, progress=False)
    return src, out


def _files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file()}


def test_round_trip_bytes_labels_offsets_and_sha256(converted):
    src, out = converted
    for split in ("train", "val"):
        folder = ImageFolderSplit(src, split, classes=["cat", "dog", "emu"])
        index = json.loads((out / split / "index.json").read_text())
        assert index["classes"] == ["cat", "dog", "emu"] and index["samples"] == len(folder)
        assert [s["name"] for s in index["shards"]] == [
            f"shard-{k:06d}.tar" for k in range(-(-len(folder) // 3))]
        i = 0
        for shard in index["shards"]:
            data = (out / split / shard["name"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == shard["sha256"]
            assert len(data) == shard["bytes"] and shard["samples"] == len(shard["labels"])
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                names = tar.getnames()
                assert names == [m[0] for m in shard["members"]]
                for name, offset, size in shard["members"]:  # the offsets point at the bytes
                    assert data[offset:offset + size] == tar.extractfile(name).read()
            for k, label in enumerate(shard["labels"]):
                path, want = folder.samples[i]
                key = f"{i:08d}"
                ext = os.path.splitext(path)[1].lower().lstrip(".").replace("jpeg", "jpg")
                image_member, cls_member = shard["members"][2 * k: 2 * k + 2]
                assert image_member[0] == f"{key}.{ext}" and cls_member[0] == f"{key}.cls"
                assert data[image_member[1]:image_member[1] + image_member[2]] == \
                    open(path, "rb").read()
                assert data[cls_member[1]:cls_member[1] + cls_member[2]] == str(want).encode()
                assert label == want
                i += 1
        assert i == len(folder)
    names = [m[0] for s in json.loads((out / "train" / "index.json").read_text())["shards"]
             for m in s["members"]]
    assert names[:2] == ["00000000.jpg", "00000000.cls"]  # cat/000.jpeg, named as webdataset's


def test_the_dataset_is_the_folders_sample_for_sample(converted):
    src, out = converted
    for split in ("train", "val"):
        for in_chans in (1, 3):
            folder = build_dataset(DataOptions(dataset="imagefolder", root=src, in_chans=in_chans,
                                               pca_lighting=0), split)
            shards = build_dataset(DataOptions(dataset="shards", root=str(out), in_chans=in_chans,
                                               pca_lighting=0), split)
            assert shards.classes == folder.classes and shards.targets == folder.targets
            for i in range(len(folder)):
                a, b = folder[i], shards[i]
                assert a[1] == b[1] and a[0].mode == b[0].mode
                assert np.array_equal(np.asarray(a[0]), np.asarray(b[0]))


@pytest.mark.parametrize("cache,workers", [(True, 0), (False, 2)])
def test_loaders_give_the_folders_batches(converted, cache, workers):
    """Through create_loaders: the cache (decoded by threads sharing the file handles) and
    DataLoader workers (each opening its own) give the folder's batches, bitwise."""
    src, out = converted
    batches = {}
    for name, root in (("folder", src), ("shards", str(out))):
        opts = DataOptions(dataset="imagefolder" if name == "folder" else "shards", root=root,
                           crop_size=32, small_image=True, color_jitter=0, pca_lighting=0,
                           workers=workers, cache=cache)
        batches[name], n = loader_batches(opts)
        assert n == 3
    assert_same_batches(batches["folder"], batches["shards"])


def test_another_set_in_out_is_refused(converted, tmp_path):
    src, out = converted
    before = _files(out)
    with pytest.raises(DataError, match=r"holds another shard set .*\(refused\)"):
        write_shards(src, str(out), shard_size=4, progress=False)
    (out / "val" / "index.json").unlink()
    (out / "val" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"holds notes.txt, which this conversion would not write"):
        write_shards(src, str(out), shard_size=3, progress=False)
    other = make_folder(tmp_path / "other", {"train": {"cat": 3, "dog": 3, "emu": 3},
                                             "val": {"cat": 1}}, size=(20, 20))
    (out / "val" / "notes.txt").unlink()
    (out / "train" / "index.json").unlink()  # shards without an index: checked by SHA-256
    with pytest.raises(DataError, match=r"shard-000000.tar is not the shard this conversion "
                                        r"writes .*\(refused\)"):
        write_shards(other, str(out), shard_size=3, progress=False)
    write_shards(src, str(out), shard_size=3, progress=False)  # the same source: completed again
    assert _files(out) == before


def test_a_rerun_continues_after_the_complete_shards(converted, tmp_path):
    src, out = converted
    whole = _files(out)
    last = sorted((out / "train").glob("shard-*.tar"))[-1]
    last.unlink()
    (out / "train" / "index.json").unlink()
    (out / "train" / ".shard-000009.tar.tmp-123").write_bytes(b"torn")  # a killed write's temp
    lines = []
    write_shards(src, str(out), shard_size=3, progress=False, note=lines.append)
    assert _files(out) == whole
    assert any("kept from an earlier run" in line and "/train" in line for line in lines)
    assert any("up to date" in line and "/val" in line for line in lines)


def test_source_errors_are_one_line(tmp_path):
    make_folder(tmp_path / "nosplit", {"train": {"cat": 1}})
    with pytest.raises(DataError, match=r"missing split folder .*nosplit/val"):
        write_shards(str(tmp_path / "nosplit"), str(tmp_path / "o1"), progress=False)
    (tmp_path / "flat" / "train").mkdir(parents=True)
    (tmp_path / "flat" / "val").mkdir()
    with pytest.raises(DataError, match=r"has no class sub-folders"):
        write_shards(str(tmp_path / "flat"), str(tmp_path / "o2"), progress=False)


def test_a_truncated_or_corrupt_shard_is_one_line_naming_shard_and_member(converted):
    src, out = converted
    shard = out / "train" / "shard-000001.tar"
    data = shard.read_bytes()
    index = json.loads((out / "train" / "index.json").read_text())
    name, offset, size = index["shards"][1]["members"][2]  # the second sample's image
    opts = DataOptions(dataset="shards", root=str(out))
    shard.write_bytes(data[:offset + 10])
    with pytest.raises(DataError) as e:
        build_dataset(opts, "train")
    msg = str(e.value)
    assert "\n" not in msg and f"shard {shard} is truncated" in msg and f"member {name}" in msg
    corrupt = bytearray(data)
    corrupt[offset + 16: offset + size] = b"\x00" * (size - 16)  # keep the PNG signature
    shard.write_bytes(bytes(corrupt))
    ds = build_dataset(opts, "train")
    with pytest.raises(DataError) as e:
        ds[4]
    msg = str(e.value)
    assert "\n" not in msg and f"member {name} of shard {shard}" in msg
