"""Reading TensorBoard scalars back from event files written by tensorboardX itself, with a
resumed writer's purge step and a torn last record."""
import pytest
from tensorboardX import SummaryWriter

from resnest_engine.storage.event_records import read_scalars

# TensorBoard stores simple_value as float32: a value read back equals the float32 rounding of
# the written one, so the test writes values exact in float32 (k / 8) and compares with ==.


def _write(log_dir, points, purge_step=None):
    # tensorboardX names a file by the second it opened: a suffix keeps two writers of the same
    # second apart (a resumed run opens its writer seconds after the killed one)
    suffix = f".{purge_step}" if purge_step else ""
    w = SummaryWriter(str(log_dir), filename_suffix=suffix,
                      **({"purge_step": purge_step} if purge_step else {}))
    for step, value in points:
        w.add_scalar("train/loss", value, step)
        w.add_scalar("train/lr", value / 2, step)
    w.close()


def test_points_by_step_for_the_tags_asked(tmp_path):
    _write(tmp_path, [(s, s / 8) for s in range(1, 6)])
    got = read_scalars(tmp_path, ["train/loss"])
    assert list(got) == ["train/loss"]
    assert got["train/loss"] == [(s, s / 8) for s in range(1, 6)]
    assert read_scalars(tmp_path / "missing", ["train/loss"]) == {}


def test_a_resumed_writer_replaces_points_from_its_purge_step(tmp_path):
    # the killed run logged steps 1-10; its resume point was at step 5, so the resumed run
    # starts its writer with purge_step 6 and logs 6-8 anew (other values)
    _write(tmp_path, [(s, s / 8) for s in range(1, 11)])
    _write(tmp_path, [(s, -s / 8) for s in range(6, 9)], purge_step=6)
    got = read_scalars(tmp_path, ["train/loss", "train/lr"])
    assert got["train/loss"] == [(s, s / 8) for s in range(1, 6)] + [(s, -s / 8) for s in range(6, 9)]
    assert got["train/lr"] == [(s, s / 16) for s in range(1, 6)] + [(s, -s / 16) for s in range(6, 9)]


def test_a_torn_last_record_keeps_the_points_before_it(tmp_path):
    _write(tmp_path, [(s, s / 8) for s in range(1, 6)])
    (path,) = tmp_path.glob("events.out.tfevents.*")
    data = path.read_bytes()
    path.write_bytes(data[:-3])  # a run killed in the middle of its last write
    got = read_scalars(tmp_path, ["train/loss", "train/lr"])
    assert got["train/loss"] == [(s, s / 8) for s in range(1, 6)]
    assert got["train/lr"] == [(s, s / 16) for s in range(1, 5)]  # step 5's lr was the torn record


def test_a_flipped_byte_ends_the_file_there(tmp_path):
    _write(tmp_path, [(s, s / 8) for s in range(1, 6)])
    (path,) = tmp_path.glob("events.out.tfevents.*")
    data = bytearray(path.read_bytes())
    data[-6] ^= 0x01  # inside the last record's body: its CRC no longer matches
    path.write_bytes(bytes(data))
    got = read_scalars(tmp_path, ["train/lr"])
    assert got["train/lr"] == [(s, s / 16) for s in range(1, 5)]


@pytest.mark.parametrize("tag", ["train/top1"])
def test_a_tag_never_written_is_absent(tmp_path, tag):
    _write(tmp_path, [(1, 0.5)])
    assert read_scalars(tmp_path, [tag]) == {}
