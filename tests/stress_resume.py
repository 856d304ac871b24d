#!/usr/bin/env python
"""Seeded random-kill stress test of exact resume (outside the timed suite).

Trains a tiny deterministic recipe once without interruption, then N times: start the run,
SIGKILL it at a random moment (a random delay, so kills land anywhere: data loading, the step,
inside checkpoint writes), resume with ``--resume auto`` (killing again with some probability)
until it finishes, and compare final weights (bitwise) and metrics.json with the reference.

    python -m tests.stress_resume --runs 20 --seed 0 [--json out.json]
"""
import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
from tests.support.cli import TINY, cli_env, merge

CONFIG = merge(TINY, {"TRAINING": {"EPOCHS": 3, "CKPT_EVERY_ITERS": 1, "KEEP_CHECKPOINTS": 2},
                      "DATA": {"WORKERS": 1}})


def start(cfg, out, resume):
    args = [sys.executable, "-m", "resnest_engine.cli", "--config-file", str(cfg), "--outdir", str(out)]
    if resume:
        args += ["--resume", "auto"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=cli_env())


def same(a, b):
    wa = torch.load(a / "model_weights.pt", weights_only=True)
    wb = torch.load(b / "model_weights.pt", weights_only=True)
    weights = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    metrics = json.loads((a / "metrics.json").read_text()) == json.loads((b / "metrics.json").read_text())
    return weights and metrics


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-delay", type=float, default=12.0, help="seconds before a kill, at most")
    p.add_argument("--json")
    a = p.parse_args()
    rng = random.Random(a.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = tmp / "cfg.yaml"
        cfg.write_text(yaml.safe_dump(CONFIG))
        ref = tmp / "reference"
        t0 = time.time()
        r = start(cfg, ref, False)
        _, err = r.communicate()
        assert r.returncode == 0, err
        full = time.time() - t0
        identical, kills, results = 0, 0, []
        for i in range(a.runs):
            out = tmp / f"run{i}"
            resume, n_kills = False, 0
            while True:
                proc = start(cfg, out, resume)
                delay = rng.uniform(0.5, min(a.max_delay, full))
                try:
                    proc.wait(timeout=delay if n_kills < 3 else None)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    n_kills += 1
                    resume = True
                    continue
                if proc.returncode != 0:
                    raise SystemExit(f"run {i}: exit {proc.returncode}: {proc.stderr.read()}")
                break
            ok = same(ref, out)
            identical += ok
            kills += n_kills
            results.append({"run": i, "kills": n_kills, "identical": ok})
            print(f"run {i}: {n_kills} kill(s), {'bitwise identical' if ok else 'DIFFERENT'}", flush=True)
        summary = {"runs": a.runs, "identical": identical, "kills": kills, "results": results}
        print(f"{identical}/{a.runs} runs bitwise identical after {kills} SIGKILLs")
        if a.json:
            Path(a.json).write_text(json.dumps(summary, indent=2))
        return 0 if identical == a.runs else 1


if __name__ == "__main__":
    sys.exit(main())
