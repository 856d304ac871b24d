"""DATA.DATASET: parquet through resnest-train: a user error is one line, and the key promise:
a run on Parquet written (in the Hub's layout, with pyarrow) from a folder is bitwise the run on
the folder."""
import pytest

from tests.support.cli import (DIGITS_ONE_EPOCH, REPO, assert_same_weights, assert_user_error,
                               run_main, train_digits_one_epoch)
from tests.support.parquet import folder_to_parquet
from tests.support.real_files import write_digits

COMMON = ["--config-file", REPO / "recipes" / "digits.yaml", *DIGITS_ONE_EPOCH]


def test_a_root_without_parquet_files_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_main(*COMMON[:2], "--outdir", tmp_path / "run", *COMMON[2:], "DATA.DATASET=parquet",
                 f"DATA.ROOT={tmp_path / 'empty'}", "DATA.WORKERS=0")
    assert_user_error(r, "no Parquet files for the train split under", "data/train-*.parquet")


def test_a_url_root_is_listed_when_opened_and_a_missing_bucket_is_one_line(tmp_path,
                                                                             monkeypatch):
    """A URL ROOT is not a local folder to check before the run: it is listed when the split
    is opened (moto's S3 server on 127.0.0.1), and a missing bucket is one line naming it."""
    from tests.support.remote import S3Server, set_env
    server = S3Server()
    set_env(monkeypatch, server.env)
    try:
        r = run_main(*COMMON[:2], "--outdir", tmp_path / "run", *COMMON[2:],
                     "DATA.DATASET=parquet", "DATA.ROOT=s3://nobucket/hub", "DATA.WORKERS=0",
                     f"DATA.CACHE_DIR={tmp_path / 'cache'}")
    finally:
        server.stop()
    assert_user_error(r, "data.root s3://nobucket/hub is not found (no such bucket, prefix or "
                         "folder)")


@pytest.mark.slow  # two short training runs
def test_training_on_parquet_is_bitwise_training_on_the_folder(tmp_path):
    src = tmp_path / "digits"
    write_digits(src, 20, 5)  # 200 train, 50 val: real scans, 32x32 grey PNGs
    out = folder_to_parquet(src, tmp_path / "hub", layout="hub", files_per_split=3,
                            row_group_size=16)
    runs = {"folder": ["DATA.DATASET=imagefolder", f"DATA.ROOT={src}"],
            # Parquet through DataLoader workers and the per-sample path, the folder cached
            "parquet": ["DATA.DATASET=parquet", f"DATA.ROOT={out}", "DATA.WORKERS=2",
                        "DATA.CACHE=false"]}
    weights = {name: train_digits_one_epoch(tmp_path / f"run-{name}", *extra)
               for name, extra in runs.items()}
    assert "Data cache: train split decoded once, 200 images" in \
        (tmp_path / "run-folder" / "log.txt").read_text()
    assert_same_weights(weights["folder"], weights["parquet"])
