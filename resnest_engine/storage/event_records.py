"""Scalars read back from a run's TensorBoard event files (``RUN/tb/events.out.tfevents.*``, :attr:`RunDir.tensorboard`).

Written by hand because the only maintained reader is the ``tensorboard`` package (a server and
its dependencies), which resnest-engine does not otherwise need; tensorboardX, which wrote the
files, ships the ``Event`` protobuf but no reader. The format is TFRecord: per record a little-
endian uint64 length, its masked CRC-32C, the serialized ``Event``, and the data's masked CRC-32C.

A resumed run opens a new file that starts with a ``SessionLog.START`` event at its first step
(tensorboardX's ``purge_step``): points of earlier files at or after that step were written by
the killed run after its resume point, and are dropped, as TensorBoard drops them. A torn last
record (a run killed mid-write) ends that file's points.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Tuple, Union


__all__ = ["read_scalars"]

Points = List[Tuple[int, float]]


def _tensorboardx():
    # Imported when records are read, not with the package: tensorboardX's writer imports boto3
    # and google-cloud-storage (about 0.2 s), which every resnest-train start would pay.
    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import masked_crc32c
    return event_pb2, masked_crc32c


def _records(path: Path) -> Iterator[bytes]:
    _, masked_crc32c = _tensorboardx()
    data = path.read_bytes()
    pos = 0
    while pos + 12 <= len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        end = pos + 12 + length + 4
        if header_crc != masked_crc32c(header) or end > len(data):
            return  # torn or foreign tail: keep what came before
        body = data[pos + 12:pos + 12 + length]
        (body_crc,) = struct.unpack("<I", data[end - 4:end])
        if body_crc != masked_crc32c(body):
            return
        yield body
        pos = end


def _first_wall_time(path: Path) -> float:
    event_pb2, _ = _tensorboardx()
    for body in _records(path):
        event = event_pb2.Event()
        event.ParseFromString(body)
        return event.wall_time
    return float("inf")


def read_scalars(log_dir: Union[str, Path], tags: Iterable[str]) -> Dict[str, Points]:
    """``{tag: [(step, value), ...]}`` sorted by step, for each of ``tags`` found in the event
    files under ``log_dir`` (a missing directory gives ``{}``). Later files replace the points of
    earlier ones from their purge step on; a step written twice keeps its last value."""
    wanted = set(tags)
    event_pb2, _ = _tensorboardx()
    files = sorted(Path(log_dir).glob("events.out.tfevents.*")) if Path(log_dir).is_dir() else []
    files.sort(key=_first_wall_time)
    points: Dict[str, Dict[int, float]] = {}
    for path in files:
        for body in _records(path):
            event = event_pb2.Event()
            event.ParseFromString(body)
            if event.HasField("session_log") and event.session_log.status == event.session_log.START:
                for by_step in points.values():
                    for step in [s for s in by_step if s >= event.step]:
                        del by_step[step]
            if not event.HasField("summary"):
                continue
            for value in event.summary.value:
                if value.tag in wanted and value.HasField("simple_value"):
                    points.setdefault(value.tag, {})[int(event.step)] = float(value.simple_value)
    return {tag: sorted(by_step.items()) for tag, by_step in points.items()}
