"""DATA.DATASET: parquet: an image folder written as Parquet in the Hub's layout gives the
folder's samples (bitwise), class names from the Hub's metadata, other column names, one-line
errors, and the same batches through DataLoader workers and the small-image cache."""
import pickle

import numpy as np
import pytest

from resnest_engine.data import DataError, DataOptions, build_dataset
from resnest_engine.data.parquet import ParquetSplit, split_files
from tests.support.data import assert_same_batches, loader_batches, make_folder
from tests.support.parquet import folder_to_parquet, write_parquet


@pytest.fixture
def src(tmp_path):
    """A mixed PNG/JPEG folder: 3 classes in train, 2 of them in val."""
    root = make_folder(tmp_path / "src", {"train": {"cat": 3, "dog": 2, "emu": 2},
                                          "val": {"cat": 1, "dog": 2}})
    make_folder(tmp_path / "src", {"train": {"cat": 1}}, ext=".jpeg")
    make_folder(tmp_path / "src", {"train": {"dog": 1}}, ext=".jpg")
    return root


@pytest.mark.parametrize("layout", ["hub", "split"])
def test_the_dataset_is_the_folders_sample_for_sample(src, tmp_path, layout):
    out = folder_to_parquet(src, tmp_path / "pq", layout=layout, files_per_split=2,
                            row_group_size=2)
    for split in ("train", "val"):
        for in_chans in (1, 3):
            folder = build_dataset(DataOptions(dataset="imagefolder", root=src,
                                               in_chans=in_chans, pca_lighting=0), split)
            parquet = build_dataset(DataOptions(dataset="parquet", root=out,
                                                in_chans=in_chans, pca_lighting=0), split)
            assert parquet.classes == folder.classes == ["cat", "dog", "emu"]
            assert parquet.targets == folder.targets
            order = list(range(len(folder)))
            for i in order[::-1] + order:  # backwards too: row groups read again, out of order
                a, b = folder[i], parquet[i]
                assert a[1] == b[1] and a[0].mode == b[0].mode
                assert np.array_equal(np.asarray(a[0]), np.asarray(b[0]))
                assert parquet.read_bytes(i) == open(folder.samples[i][0], "rb").read()


def test_split_files_take_both_namings_in_name_order(tmp_path):
    for name in ("train-00001-of-00002", "train-00000-of-00002", "validation-00000-of-00001"):
        write_parquet(tmp_path / "hub" / "data" / f"{name}.parquet", [b"x"], [0])
    assert [p.rsplit("/", 1)[1] for p in split_files(str(tmp_path / "hub"), "train")] == [
        "train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert split_files(str(tmp_path / "hub"), "val")[0].endswith(
        "data/validation-00000-of-00001.parquet")
    write_parquet(tmp_path / "hub2" / "data" / "val-00000-of-00001.parquet", [b"x"], [0])
    assert split_files(str(tmp_path / "hub2"), "val")[0].endswith("data/val-00000-of-00001.parquet")
    (tmp_path / "own" / "val").mkdir(parents=True)
    with pytest.raises(DataError, match=r"split folder .*own/val holds no \*.parquet files"):
        split_files(str(tmp_path / "own"), "val")
    with pytest.raises(DataError, match=r"no Parquet files for the train split under .*own "
                                        r"\(looked for train/\*.parquet and data/train-\*"):
        split_files(str(tmp_path / "own"), "train")


def test_class_names_from_metadata_else_the_labels(tmp_path):
    write_parquet(tmp_path / "a.parquet", [b"x"] * 3, [0, 2, 1], classes=["zebra", "ant", "cow"])
    assert ParquetSplit([str(tmp_path / "a.parquet")]).classes == ["zebra", "ant", "cow"]
    write_parquet(tmp_path / "b.parquet", [b"x"] * 3, [0, 3, 1])
    ds = ParquetSplit([str(tmp_path / "b.parquet")])
    assert ds.classes == ["0", "1", "2", "3"] and ds.targets == [0, 3, 1]
    # a file without metadata beside one with it: the metadata's names, for both files' labels
    write_parquet(tmp_path / "d.parquet", [b"x"] * 2, [2, 2])
    ds = ParquetSplit([str(tmp_path / "a.parquet"), str(tmp_path / "d.parquet")])
    assert ds.classes == ["zebra", "ant", "cow"] and ds.targets == [0, 2, 1, 2, 2]
    with pytest.raises(DataError, match=r"b.parquet: column 'label' holds label 3, out of range "
                                        r"for 3 classes"):
        ParquetSplit([str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")])
    # given names (the train split's, a run's) replace the labels' and must match the metadata
    assert ParquetSplit([str(tmp_path / "b.parquet")], classes=list("abcd")).classes == list("abcd")
    with pytest.raises(DataError, match=r"a.parquet: its class names .* differ from the ones "
                                        r"asked for"):
        ParquetSplit([str(tmp_path / "a.parquet")], classes=["x", "y", "z"])
    write_parquet(tmp_path / "c.parquet", [b"x"], [0], classes=["ant", "zebra", "cow"])
    with pytest.raises(DataError, match=r"c.parquet: its class names .* differ from .*a.parquet"):
        ParquetSplit([str(tmp_path / "a.parquet"), str(tmp_path / "c.parquet")])


def test_custom_column_names_and_plain_binary(src, tmp_path):
    out = folder_to_parquet(src, tmp_path / "pq", layout="split", image="jpg", label="cls",
                            metadata=True)
    opts = DataOptions(dataset="parquet", root=out, parquet_image_column="jpg",
                       parquet_label_column="cls")
    folder = build_dataset(DataOptions(dataset="imagefolder", root=src), "train")
    ds = build_dataset(opts, "train")
    assert ds.classes == folder.classes and ds.targets == folder.targets
    assert np.array_equal(np.asarray(ds[3][0]), np.asarray(folder[3][0]))
    with pytest.raises(DataError, match=r"part-0.parquet has no column 'image' \(its columns: "
                                        r"jpg, cls\); set DATA.PARQUET_IMAGE_COLUMN"):
        build_dataset(DataOptions(dataset="parquet", root=out), "train")
    blobs = [open(p, "rb").read() for p, _ in folder.samples]
    write_parquet(tmp_path / "bin.parquet", blobs, folder.targets, struct=False,
                  label_type=__import__("pyarrow").int32())
    ds = ParquetSplit([str(tmp_path / "bin.parquet")])
    assert ds.targets == folder.targets
    assert np.array_equal(np.asarray(ds[5][0]), np.asarray(folder[5][0]))


def test_errors_are_one_line_naming_file_and_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def error(path, **kw):
        with pytest.raises(DataError) as e:
            ParquetSplit([str(path)], **kw)
        msg = str(e.value)
        assert "\n" not in msg and str(path) in msg, msg
        return msg

    p = tmp_path / "str_label.parquet"
    write_parquet(p, [b"x"], ["cat"], label_type=pa.string())
    assert "column 'label' is string; expected integer class indices" in error(p)
    p = tmp_path / "int_image.parquet"
    pq.write_table(pa.table({"image": [1, 2], "label": [0, 1]}), str(p))
    assert "column 'image' is int64; expected binary image bytes or a struct" in error(p)
    p = tmp_path / "no_label.parquet"
    pq.write_table(pa.table({"image": pa.array([b"x"], pa.binary())}), str(p))
    assert "has no column 'label' (its columns: image); set DATA.PARQUET_LABEL_COLUMN" in error(p)
    p = tmp_path / "null.parquet"
    write_parquet(p, [b"x", b"y"], [0, None])
    assert "column 'label' holds 1 null label(s)" in error(p)
    p = tmp_path / "range.parquet"
    write_parquet(p, [b"x", b"y"], [0, 3], classes=["a", "b"])
    assert "column 'label' holds label 3, out of range for 2 classes" in error(p)
    p = tmp_path / "garbage.parquet"
    p.write_bytes(b"not a parquet file at all")
    assert error(p).startswith(f"cannot read Parquet file {p}: ")
    assert "FileNotFoundError" in error(tmp_path / "missing.parquet")


def test_an_image_that_does_not_decode_names_file_and_row(src, tmp_path):
    folder = build_dataset(DataOptions(dataset="imagefolder", root=src), "train")
    blobs = [open(p, "rb").read() for p, _ in folder.samples]
    blobs[2] = blobs[2][:20]  # a PNG cut off
    path = tmp_path / "bad.parquet"
    write_parquet(path, blobs, folder.targets, row_group_size=2)
    ds = ParquetSplit([str(path)])
    with pytest.raises(DataError) as e:
        ds[2]
    msg = str(e.value)
    assert "\n" not in msg and f"cannot read image row 2 of Parquet file {path}" in msg
    with pytest.warns(UserWarning, match=r"skipping unreadable image row 2 of .*using sample 3"):
        image, label = ParquetSplit([str(path)], skip_corrupt=True)[2]
    assert label == folder.targets[3] and np.array_equal(np.asarray(image),
                                                         np.asarray(folder[3][0]))


def test_no_open_file_is_pickled(src, tmp_path):
    out = folder_to_parquet(src, tmp_path / "pq")
    ds = build_dataset(DataOptions(dataset="parquet", root=out), "train")
    first = np.asarray(ds[0][0])
    assert ds._readers and list(ds._groups) == [0]
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._readers == {} and not copy._groups
    assert np.array_equal(np.asarray(copy[0][0]), first)
    ds.close()
    assert ds._readers == {} and np.array_equal(np.asarray(ds[0][0]), first)


@pytest.mark.parametrize("cache,workers", [(True, 0), (False, 2)])
def test_loaders_give_the_folders_batches(src, tmp_path, cache, workers):
    """Through create_loaders: the cache (decoded by threads sharing one reader) and DataLoader
    workers (each opening its own files) give the folder's batches, bitwise."""
    out = folder_to_parquet(src, tmp_path / "pq", row_group_size=3)
    batches = {}
    for name, root in (("folder", src), ("parquet", out)):
        opts = DataOptions(dataset="imagefolder" if name == "folder" else "parquet", root=root,
                           crop_size=32, small_image=True, color_jitter=0, pca_lighting=0,
                           workers=workers, cache=cache)
        batches[name], n = loader_batches(opts)
        assert n == 3
    assert_same_batches(batches["folder"], batches["parquet"])


def test_an_fsspec_filesystem_opens_the_files(src, tmp_path):
    import fsspec
    out = folder_to_parquet(src, tmp_path / "pq")
    files = split_files(out, "val")
    local = ParquetSplit(files)
    ds = pickle.loads(pickle.dumps(ParquetSplit(files, filesystem=fsspec.filesystem("file"))))
    assert ds.classes == local.classes and ds.targets == local.targets
    for i in range(len(ds)):
        assert ds.read_bytes(i) == local.read_bytes(i)


def test_the_window_order_reads_each_row_group_about_once(src, tmp_path):
    # row groups of 4; the window order mixes 4 row groups: with the last 8 row groups kept,
    # each is read once per epoch, where keeping one would read one per sample
    out = folder_to_parquet(src, tmp_path / "pq", layout="split", files_per_split=1,
                            row_group_size=4)
    ds = ParquetSplit(split_files(str(out), "train"))
    from resnest_engine.data.samplers import WindowSampler
    reads = []
    original = ds._read
    ds._read = lambda fn, path, column: (reads.append(path), original(fn, path, column))[1]
    for key in WindowSampler(ds.block_sizes(), 4, num_replicas=1, rank=0, seed=0):
        ds.read_bytes(key.index)
    assert len(reads) == len(ds.block_sizes()) and len(ds.block_sizes()) > 1
    # a loader's sampler with a larger window: two of its windows are kept
    ds.follow(WindowSampler(ds.block_sizes(), 16, num_replicas=1, rank=0, seed=0))
    assert ds.keep_row_groups == 32
