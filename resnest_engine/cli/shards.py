"""``resnest-shards``: write an image folder as tar shards in the webdataset layout, with the
index that ``DATA.DATASET: shards`` reads (:mod:`resnest_engine.workflows.shards`), or index
shards written by others (``--index-only``).

    resnest-shards SRC OUT [--shard-size N]
    resnest-shards --index-only DIR [--classes FILE]

User errors end with one line ``error: ...`` on stderr and exit status 2 (1 for a failed write).
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

from ..workflows.shards import DEFAULT_SHARD_SIZE, index_shards, read_classes, write_shards
from .console import UsageError, console_main
from .exit_codes import ExitCode

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="resnest-shards",
        description="Write the image folder SRC (train/<class>/*, val/<class>/*) as tar shards "
                    "in the webdataset layout under OUT (OUT/train/*.tar, OUT/val/*.tar, each "
                    "with index.json), for DATA.DATASET=shards DATA.ROOT=OUT. A rerun after an "
                    "interrupted conversion continues after its complete shards.")
    p.add_argument("src", metavar="SRC", nargs="?", help="the image folder")
    p.add_argument("out", metavar="OUT", nargs="?", help="the shard set's folder (new or empty)")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, metavar="N",
                   help=f"samples per shard (default {DEFAULT_SHARD_SIZE})")
    p.add_argument("--index-only", metavar="DIR",
                   help="write DIR/index.json for the *.tar shards in DIR, written by others in "
                        "webdataset's layout (label in .cls or .txt)")
    p.add_argument("--classes", metavar="FILE",
                   help="with --index-only: the class names, one per line in label order "
                        "(default 0..K-1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(argv: Sequence[str]) -> int:
    """``resnest-shards ARGV``: the exit status (a user error raises)."""
    a = build_parser().parse_args(argv)
    progress = not a.no_progress
    if a.index_only:
        if a.src or a.out:
            raise UsageError("--index-only DIR takes no SRC or OUT")
        classes = read_classes(a.classes) if a.classes else None
        index = index_shards(a.index_only, classes, progress=progress)
        print(f"{a.index_only}: indexed {index['samples']} samples in {len(index['shards'])} "
              f"shards, {len(index['classes'])} classes")
        return ExitCode.OK
    if a.classes:
        raise UsageError("--classes goes with --index-only (a conversion takes the class "
                         "folders' names)")
    if not a.src or not a.out:
        raise UsageError("give SRC and OUT (or --index-only DIR)")
    if a.shard_size < 1:
        raise UsageError(f"--shard-size must be a positive integer, got {a.shard_size}")
    write_shards(a.src, a.out, a.shard_size, progress=progress, note=print)
    return ExitCode.OK


def main(argv: Optional[List[str]] = None) -> int:
    """Console entry point (``resnest-shards``); returns the exit status."""
    return console_main(run, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
