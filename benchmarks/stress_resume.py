"""The random-kill resume stress test (``python -m tests.stress_resume``) as a results file.

Runs ``tests/stress_resume.py`` with the given ``--runs``, ``--seed`` and ``--max-delay`` (a tiny
deterministic recipe trained once uninterrupted, then ``--runs`` times SIGKILLed at random moments
and resumed with ``--resume auto`` until it finishes; final weights compared bitwise and
metrics.json for equality) and writes its summary ``{"runs", "identical", "kills", "results"}``
with the machine to ``benchmarks/results/stress_resume.json`` (``--json PATH``: elsewhere).
Exits 1 when a run differs.

    python benchmarks/stress_resume.py --runs 8 --seed 0
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.record import write_result  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-delay", type=float, default=12.0, help="seconds before a kill, at most")
    p.add_argument("--json", help="results file (default benchmarks/results/stress_resume.json)")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        summary_file = Path(tmp) / "summary.json"
        proc = subprocess.run([sys.executable, "-m", "tests.stress_resume", "--runs", str(a.runs),
                               "--seed", str(a.seed), "--max-delay", str(a.max_delay),
                               "--json", str(summary_file)], cwd=REPO)
        if not summary_file.exists():
            raise SystemExit(f"tests.stress_resume exited {proc.returncode} without a summary")
        summary = json.loads(summary_file.read_text())
    write_result("stress_resume", (
        f"runs of a tiny recipe SIGKILLed at random moments and resumed with --resume auto that "
        f"end bitwise identical to an uninterrupted run, --runs {a.runs} --seed {a.seed} "
        f"--max-delay {a.max_delay:g}"),
        {"seed": a.seed, "max_delay_s": a.max_delay, **summary}, a.json)
    return 0 if summary["identical"] == summary["runs"] else 1


if __name__ == "__main__":
    sys.exit(main())
