"""``resnest-average``: average the weights of a run's best or last checkpoints and evaluate them
(the command line of :func:`resnest_engine.workflows.average.average_checkpoints`).

User errors end with one line ``error: ...`` on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import List, Optional, Sequence

from ..workflows.average import DEFAULT_OUTPUT, average_checkpoints
from .exit_codes import ExitCode
from .console import console_main

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="resnest-average",
        description="Average the weights of a run's best or last checkpoints, write them as a "
                    "plain state_dict and evaluate them beside each checkpoint.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a resnest-train run directory (--outdir)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--best", type=int, metavar="N",
                       help="the N best checkpoints (checkpoints/best-*.pt, highest top-1 first); "
                            "default: every best checkpoint the run kept")
    which.add_argument("--last", type=int, metavar="N",
                       help="the N newest resume points (checkpoints/resume-*.pt)")
    p.add_argument("--output", metavar="PATH",
                   help=f"where to write the average (default: RUN_DIR/{DEFAULT_OUTPUT})")
    p.add_argument("--no-eval", action="store_true",
                   help="write the average without evaluating anything")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides of the run's config.yaml for the evaluation "
                        "(e.g. DATA.ROOT=/data/imagenet DATA.WORKERS=8)")
    return p


def run(argv: Sequence[str]) -> int:
    """``resnest-average ARGV``: the exit status (a user error raises)."""
    a = build_parser().parse_args(argv)
    average_checkpoints(a.run_dir, a.best, a.last, a.output, evaluate=not a.no_eval,
                        overrides=a.overrides,
                        command="resnest-average " + shlex.join(map(str, argv)),
                        report=print, note=lambda line: print(line, file=sys.stderr))
    return ExitCode.OK


def main(argv: Optional[List[str]] = None) -> int:
    """Console entry point (``resnest-average``); returns the exit status."""
    return console_main(run, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
