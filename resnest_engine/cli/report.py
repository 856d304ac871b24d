"""``resnest-report``: a finished run on one self-contained HTML page (the command line of
:func:`resnest_engine.workflows.report.write_report`).

    resnest-report RUN_DIR [--weights FILE] [--output FILE.html]

Writes ``RUN_DIR/report.html``: the curves of ``metrics.json``, the confusion matrix and the
per-class precision/recall of the run's weights on its validation split, and the most confident
mistakes as thumbnails. Exit status: 0 written; 1 the page could not be written (``cannot
write``); 2 a user error (not a run, unusable weights, matplotlib missing): one ``error:`` line;
130 when interrupted.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

from .exit_codes import ExitCode
from ..workflows.report import REPORT_FILE, write_report
from .console import console_main

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="resnest-report",
        description="Write a training run's report: curves, confusion matrix, per-class "
                    f"precision/recall and the most confident mistakes, in RUN_DIR/{REPORT_FILE} "
                    "(one self-contained HTML file).",
        epilog="Exit status: 0 written, 1 cannot write, 2 usage error. The figures need "
               "matplotlib: pip install 'resnest-engine[report]'.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a training run directory (its --outdir)")
    p.add_argument("--weights", metavar="FILE",
                   help="evaluate this checkpoint or weights file instead of the run's final "
                   "(else best, else newest) weights")
    p.add_argument("--output", metavar="FILE.html",
                   help=f"write the page here instead of RUN_DIR/{REPORT_FILE}")
    return p


def _note(line: str) -> None:
    print(line, file=sys.stderr)


def run(argv: Sequence[str]) -> int:
    """``resnest-report ARGV``: the exit status (a user error raises)."""
    a = build_parser().parse_args(argv)
    out = write_report(a.run_dir, weights=a.weights, output=a.output, note=_note)
    print(f"wrote {out}")
    return ExitCode.OK


def main(argv: Optional[List[str]] = None) -> int:
    """Console entry point (``resnest-report``); returns the exit status."""
    return console_main(run, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
