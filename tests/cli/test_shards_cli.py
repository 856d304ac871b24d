"""resnest-shards on the command line, and the key promise: a run on the shards written from a
folder is bitwise the run on the folder."""
import os
import signal
import time

import pytest

from resnest_engine.cli.shards import main
from tests.support.cli import assert_same_weights, popen_cli, run_cli, train_digits_one_epoch
from tests.support.real_files import write_digits


def test_errors_are_one_line_with_exit_status_2(tmp_path, capsys):
    (tmp_path / "src" / "train" / "a").mkdir(parents=True)
    assert main([str(tmp_path / "src"), str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: missing split folder") and "\n" not in err
    assert main(["--index-only", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.strip().endswith("is not a folder")
    assert main([str(tmp_path / "src")]) == 2
    assert "give SRC and OUT" in capsys.readouterr().err


@pytest.mark.slow  # a process killed mid-conversion, then one that finishes it
def test_a_killed_conversion_continues_and_gives_the_same_files(tmp_path):
    src = tmp_path / "digits"
    write_digits(src, 20, 4)  # 200 + 40 PNGs
    shards = "resnest_engine.cli.shards"
    clean = tmp_path / "clean"
    r = run_cli(src, clean, "--shard-size", "2", "--no-progress", module=shards, timeout=300)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    proc = popen_cli(src, out, "--shard-size", "2", "--no-progress", module=shards)
    deadline = time.monotonic() + 120
    while len(list((out / "train").glob("shard-*.tar"))) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "val" / "index.json").exists(), "finished before it was killed"
    r = run_cli(src, out, "--shard-size", "2", "--no-progress", module=shards, timeout=300)
    assert r.returncode == 0, r.stderr
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(clean) for p in clean.rglob("*") if p.is_file())
    for rel in files:
        assert (out / rel).read_bytes() == (clean / rel).read_bytes(), rel


@pytest.mark.slow  # two short training runs
def test_training_on_shards_is_bitwise_training_on_the_folder(tmp_path):
    src = tmp_path / "digits"
    write_digits(src, 20, 5)  # 200 train, 50 val: real scans, 32x32 grey PNGs
    shards = tmp_path / "set"
    assert main([str(src), str(shards), "--shard-size", "64", "--no-progress"]) == 0
    runs = {"folder": ["DATA.DATASET=imagefolder", f"DATA.ROOT={src}"],
            # the shards through DataLoader workers and the per-sample path, the folder cached
            "shards": ["DATA.DATASET=shards", f"DATA.ROOT={shards}", "DATA.WORKERS=2",
                       "DATA.CACHE=false"]}
    weights = {name: train_digits_one_epoch(tmp_path / f"run-{name}", *extra)
               for name, extra in runs.items()}
    assert "Data cache: train split decoded once, 200 images" in \
        (tmp_path / "run-folder" / "log.txt").read_text()
    assert_same_weights(weights["folder"], weights["shards"])
