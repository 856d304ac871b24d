"""Training from a shard set in S3 (moto's server on 127.0.0.1) is bitwise training on the folder
the shards were written from, also with a cache budget under two shards (issue 26)."""
import json

import pytest

from resnest_engine.cli.shards import main
from tests.support.cli import assert_same_weights, train_digits_one_epoch
from tests.support.real_files import write_digits
from tests.support.remote import S3Server, set_env


@pytest.mark.slow  # three short training runs
def test_training_from_s3_is_bitwise_training_on_the_folder(tmp_path, monkeypatch):
    src = tmp_path / "digits"
    write_digits(src, 20, 5)  # 200 train, 50 val
    shards = tmp_path / "set"
    assert main([str(src), str(shards), "--shard-size", "64", "--no-progress"]) == 0
    server = S3Server()
    set_env(monkeypatch, server.env)
    try:
        url = server.upload(shards, "bucket", "shards")
        largest = max(s["bytes"] for s in
                      json.loads((shards / "train" / "index.json").read_text())["shards"])
        runs = {"folder": ["DATA.DATASET=imagefolder", f"DATA.ROOT={src}"],
                # through DataLoader workers, each fetching ahead into the shared cache
                # DATA.SHUFFLE=global: the folder's order (a URL root's default is window)
                "s3": ["DATA.DATASET=shards", f"DATA.ROOT={url}", "DATA.WORKERS=2",
                       "DATA.SHUFFLE=global",
                       "DATA.CACHE=false", f"DATA.CACHE_DIR={tmp_path / 'cache'}"],
                # a budget under two shards: shards are evicted and fetched again
                "s3-small": ["DATA.DATASET=shards", f"DATA.ROOT={url}", "DATA.WORKERS=0",
                             "DATA.SHUFFLE=global",
                             "DATA.CACHE=false", f"DATA.CACHE_DIR={tmp_path / 'small'}",
                             f"DATA.SHARD_CACHE_GB={1.5 * largest / 1e9}"]}
        weights = {name: train_digits_one_epoch(tmp_path / f"run-{name}", *extra)
                   for name, extra in runs.items()}
    finally:
        server.stop()
    # Evicted and fetched again: the 4 train shards never all in the cache. One may stand over
    # the budget when the reader holds it open while the fetch-ahead thread brings the next
    # (a shard in use is never evicted, docs/data.md), so 1 or 2 are left.
    assert 1 <= len(list((tmp_path / "small" / "train").glob("*.tar"))) <= 2
    assert len(json.loads((shards / "train" / "index.json").read_text())["shards"]) == 4
    for name in ("s3", "s3-small"):
        assert_same_weights(weights["folder"], weights[name])
