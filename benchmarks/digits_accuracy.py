"""The digits recipe's top-1 over training seeds and over train/val splits it was not tuned on.

Runs ``resnest-train --config-file recipes/digits.yaml`` (unchanged otherwise) once per
``--seeds`` value on the recipe's own split (DATA.SPLIT_SEED 0), and once per ``--split-seeds``
value at SEED 0 on another stratified 1,437 / 360 split of the same 1,797 images. Each run is its
own process; the top-1 is the final epoch's, read from the run's ``metrics.json``.

Prints a row per run and the minimum of each group, and writes ``{"overrides", "runs": [{"seed",
"split_seed", "top1", "wall_s"}, ...], "min_seeds", "min_splits"}`` with the machine to
``benchmarks/results/digits_accuracy.json`` (``--json PATH``: elsewhere).
Usage: ``python benchmarks/digits_accuracy.py [--seeds 0 1 2 3 4] [--split-seeds 1 2 3]``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.record import write_result  # noqa: E402


def run_recipe(outdir: Path, seed: int, split_seed: int, env: dict, overrides=()) -> dict:
    cmd = [sys.executable, "-m", "resnest_engine.cli", "--config-file", "recipes/digits.yaml",
           "--outdir", str(outdir), *overrides, f"SEED={seed}", f"DATA.SPLIT_SEED={split_seed}"]
    start = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    top1 = json.loads((outdir / "metrics.json").read_text())["top1"]
    return dict(seed=seed, split_seed=split_seed, top1=round(float(top1), 3),
                wall_s=round(wall, 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4],
                   help="training seeds on the recipe's split (DATA.SPLIT_SEED 0)")
    p.add_argument("--split-seeds", type=int, nargs="*", default=[1, 2, 3],
                   help="other splits (DATA.SPLIT_SEED), each at SEED 0")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides for every run (to try a change to the recipe)")
    p.add_argument("--json", help="results file (default benchmarks/results/digits_accuracy.json)")
    a = p.parse_args()
    env = dict(os.environ, PYTHONPATH=str(REPO),
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    jobs = [(s, 0) for s in a.seeds] + [(0, k) for k in a.split_seeds if k != 0]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed, split_seed in jobs:
            row = run_recipe(Path(tmp) / f"s{seed}-split{split_seed}", seed, split_seed, env,
                             a.set)
            runs.append(row)
            print(f"SEED {seed} DATA.SPLIT_SEED {split_seed}: top-1 {row['top1']:.2f}% "
                  f"({row['wall_s']:.1f} s)", flush=True)
    seeds = [r["top1"] for r in runs if r["split_seed"] == 0]
    splits = [r["top1"] for r in runs if r["split_seed"] != 0]
    out = dict(overrides=a.set, runs=runs, min_seeds=min(seeds, default=None),
               min_splits=min(splits, default=None))
    print(f"minimum over seeds {a.seeds}: {out['min_seeds']}; over split seeds "
          f"{[k for k in a.split_seeds if k != 0]}: {out['min_splits']}")
    split_seeds = [k for k in a.split_seeds if k != 0]
    groups = ([f"SEED {a.seeds} on DATA.SPLIT_SEED 0"] if a.seeds else []) + (
        [f"SEED 0 on DATA.SPLIT_SEED {split_seeds}"] if split_seeds else [])
    write_result("digits_accuracy", (
        f"recipes/digits.yaml final top-1 (%), {' and '.join(groups)}, OMP_NUM_THREADS "
        f"{env['OMP_NUM_THREADS']}" + (f", overrides {' '.join(a.set)}" if a.set else "")),
        out, a.json)


if __name__ == "__main__":
    main()
