"""A benchmark's result as one JSON file: ``{"benchmark", "measured", "machine", ...numbers}``.

Every script in benchmarks/ writes one by default to ``benchmarks/results/<benchmark>.json``
(``--json PATH`` writes it elsewhere); ``python -m benchmarks.report`` builds the tables of
docs/benchmarks.md and README.md from the files in ``benchmarks/results/``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

from benchmarks.machine import machine_info

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def default_path(benchmark: str) -> Path:
    return RESULTS_DIR / f"{benchmark}.json"


def result(benchmark: str, measured: str, numbers: dict) -> dict:
    """The results-file form of ``numbers``: what was measured and on which machine first."""
    reserved = {"benchmark", "measured", "machine"} & set(numbers)
    if reserved:
        raise ValueError(f"{sorted(reserved)} are set by result(), not by the benchmark")
    return {"benchmark": benchmark, "measured": measured, "machine": machine_info(), **numbers}


def write_file(out: dict, path: Optional[str] = None) -> Path:
    """Write a ``result(...)`` to ``path`` (default ``benchmarks/results/<benchmark>.json``)."""
    target = Path(path) if path else default_path(out["benchmark"])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"wrote {target}", file=sys.stderr)
    return target


def write_result(benchmark: str, measured: str, numbers: dict,
                 path: Optional[str] = None) -> dict:
    """Write ``result(...)`` to ``path`` (default ``benchmarks/results/<benchmark>.json``) and
    return it."""
    out = result(benchmark, measured, numbers)
    write_file(out, path)
    return out
