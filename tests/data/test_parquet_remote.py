"""DATA.DATASET: parquet with DATA.ROOT a URL (issue 26): listed through fsspec (S3: glob; HTTP:
the root's files.txt), indexed by range requests, read from whole files fetched into the shard
cache; against real servers on 127.0.0.1 (moto's S3 server, an HTTP file server). Errors are
one line naming the URL."""
import os
import pickle

import numpy as np
import pytest

from resnest_engine.data import DataError, DataOptions, build_dataset
from resnest_engine.data.parquet import MANIFEST_NAME
from tests.support.data import assert_same_batches, loader_batches, make_folder
from tests.support.parquet import folder_to_parquet
from tests.support.remote import HttpServer


@pytest.fixture
def src(tmp_path):
    root = make_folder(tmp_path / "src", {"train": {"cat": 3, "dog": 3, "emu": 2},
                                          "val": {"cat": 2, "dog": 2}})
    make_folder(tmp_path / "src", {"train": {"cat": 1, "emu": 1}}, ext=".jpg")
    return root


def _parquet(root, split, tmp_path, **extra):
    return build_dataset(DataOptions(dataset="parquet", root=str(root), pca_lighting=0,
                                     cache_dir=str(tmp_path / "cache"), **extra), split)


def _same_samples(remote, local):
    assert remote.classes == local.classes and remote.targets == local.targets
    for i in range(len(local)):
        assert remote.read_bytes(i) == local.read_bytes(i), i
    for i in (0, len(local) - 1):
        assert np.array_equal(np.asarray(remote[i][0]), np.asarray(local[i][0]))


@pytest.mark.parametrize("layout", ["hub", "split"])
def test_an_s3_root_reads_the_local_files_samples(src, tmp_path, s3, layout):
    out = folder_to_parquet(src, tmp_path / "pq", layout=layout, files_per_split=2,
                            row_group_size=3)
    url = s3.upload(tmp_path / "pq", "bucket", "hub/imagenet")
    for split in ("train", "val"):
        local = _parquet(out, split, tmp_path)
        assert local.cache is None
        remote = _parquet(url, split, tmp_path)
        prefix = f"{url}/data/{'train' if split == 'train' else 'validation'}-" \
            if layout == "hub" else f"{url}/{split}/part-"
        assert all(f.startswith(prefix) for f in remote.files) and len(remote.files) == 2
        _same_samples(remote, local)
        assert sorted(remote.cache.fetches) == [0, 1]  # each file fetched once, whole
        cached = {n[17:]: os.path.getsize(tmp_path / "cache" / split / n)  # <tag>-<name>
                  for n in os.listdir(tmp_path / "cache" / split) if n.endswith(".parquet")}
        assert cached == {os.path.basename(p): os.path.getsize(p) for p in local.files}
        remote.close()
        # a second run on the same files: indexed and read from the cache, nothing fetched
        again = pickle.loads(pickle.dumps(_parquet(url, split, tmp_path)))
        _same_samples(again, local)
        assert again.cache.fetches == {}


def test_a_changed_remote_file_is_fetched_again(src, tmp_path, s3):
    out = folder_to_parquet(src, tmp_path / "pq", files_per_split=1)
    url = s3.upload(tmp_path / "pq", "bucket", "set")
    first = _parquet(url, "val", tmp_path)
    first.read_bytes(0)
    first.close()
    # the same name, other contents (val's rows in reverse): a new ETag names a new cached copy
    local = _parquet(out, "val", tmp_path)
    from tests.support.parquet import write_parquet
    blobs = [local.read_bytes(i) for i in range(len(local))][::-1]
    write_parquet(tmp_path / "new.parquet", blobs, local.targets[::-1], classes=local.classes)
    s3.client().put_object(Bucket="bucket", Key="set/data/validation-00000-of-00001.parquet",
                           Body=(tmp_path / "new.parquet").read_bytes())
    changed = _parquet(url, "val", tmp_path)
    assert changed.targets == local.targets[::-1]
    assert changed.read_bytes(0) == local.read_bytes(len(local) - 1)
    assert changed.cache.fetches == {0: 1}
    assert len([n for n in os.listdir(tmp_path / "cache" / "val") if n.endswith(".parquet")]) == 2


def test_workers_read_an_s3_split_as_the_local_files(src, tmp_path, s3):
    """Through create_loaders with 2 DataLoader workers (each with its own cache handles and
    prefetch thread, sharing the cache folder): the local Parquet files' batches, bitwise."""
    out = folder_to_parquet(src, tmp_path / "pq", row_group_size=3)
    url = s3.upload(tmp_path / "pq", "bucket", "set")
    batches = {}
    for name, root in (("local", out), ("s3", url)):
        # one order for both (a URL root's default is the window order)
        opts = DataOptions(dataset="parquet", root=root, crop_size=32, small_image=True,
                           color_jitter=0, pca_lighting=0, workers=2, cache=False,
                           cache_dir=str(tmp_path / "cache"), shuffle="global")
        batches[name], n = loader_batches(opts)
    assert_same_batches(batches["local"], batches["s3"])


def test_s3_errors_are_one_line_naming_the_url(src, tmp_path, s3):
    folder_to_parquet(src, tmp_path / "pq")
    url = s3.upload(tmp_path / "pq", "bucket", "set")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "readme.txt").write_text("no parquet here")
    other = s3.upload(tmp_path / "other", "second", "other")

    def error(root, split="train"):
        with pytest.raises(DataError) as e:
            _parquet(root, split, tmp_path)
        msg = str(e.value)
        assert "\n" not in msg, msg
        return msg

    assert error("s3://nobucket/set") == "data.root s3://nobucket/set is not found (no such " \
                                         "bucket, prefix or folder)"
    assert error(f"{url}/nothing") == f"data.root {url}/nothing is not found (no such bucket, " \
                                      f"prefix or folder)"
    assert error(other) == (f"no Parquet files for the train split under {other} (looked for "
                            f"train/*.parquet and data/train-*.parquet)")
    assert error(other + "/", "val").startswith(f"no Parquet files for the val split under {other} "
                                                f"(looked for val/*.parquet and "
                                                f"data/validation-*.parquet or data/val-*.parquet)")
    s3.client().put_object(Bucket="second", Key="other/train/bad.parquet", Body=b"not parquet")
    assert error(other).startswith(f"cannot read Parquet file {other}/train/bad.parquet: ")


def test_an_http_root_lists_its_files_in_files_txt(src, tmp_path):
    out = folder_to_parquet(src, tmp_path / "pq", files_per_split=2)
    http = HttpServer(tmp_path / "pq")
    try:
        with pytest.raises(DataError) as e:
            _parquet(http.url, "train", tmp_path)
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"data.root {http.url}: an http(s) server "
                                                  f"cannot list its files")
        assert f"{http.url}/{MANIFEST_NAME} is not found" in msg
        names = sorted(p.relative_to(tmp_path / "pq").as_posix()
                       for p in (tmp_path / "pq").rglob("*.parquet"))
        (tmp_path / "pq" / MANIFEST_NAME).write_text("# the Parquet files\n" +
                                                     "\n".join(names) + "\n")
        for split in ("train", "val"):
            _same_samples(_parquet(http.url, split, tmp_path), _parquet(out, split, tmp_path))
        (tmp_path / "pq" / MANIFEST_NAME).write_text("data/test-00000-of-00001.parquet\n")
        with pytest.raises(DataError, match=rf"^{http.url}/files.txt names no Parquet files for "
                                            rf"the train split \(looked for train/\*.parquet"):
            _parquet(http.url, "train", tmp_path / "elsewhere")
    finally:
        http.stop()


def test_remote_files_are_fetched_in_the_window_orders_file_order(src, tmp_path, s3):
    # 5 files of 2 row groups: the window order permutes the files; the fetch-ahead thread asks
    # for them in the order this rank will read them, not in file-name order
    import time

    from resnest_engine.data.samplers import WindowSampler
    folder_to_parquet(src, tmp_path / "pq", files_per_split=5, row_group_size=1)
    url = s3.upload(tmp_path / "pq", "bucket", "order")
    ds = _parquet(url, "train", tmp_path)
    sampler = WindowSampler(ds.block_sizes(), 2, num_replicas=1, rank=0, seed=1,
                            block_groups=ds.block_groups())
    files = ds.fetch_units()
    order = [k.index for k in sampler]
    expected = list(dict.fromkeys(int(files[i]) for i in order))
    assert expected != sorted(expected)  # the window order is not the file order
    ds.follow(sampler)
    ds.reading(0, order[0])
    ahead = expected[:ds.cache.ahead]  # the thread fetches this many ahead
    assert len(ahead) >= 3
    deadline = time.time() + 30
    while not all(ds.cache.cached(f) for f in ahead) and time.time() < deadline:
        time.sleep(0.05)
    assert list(ds.cache.fetches) == ahead
    ds.close()
