"""What the checkpoint checksums cost: a resnest50 resume point (weights, BatchNorm buffers and SGD
momentum, as the ImageNet recipe writes it) saved with and without its checksum, and read with
``read_checkpoint`` with verification on and off (``RESNEST_ENGINE_VERIFY_CHECKSUMS=0``).

Median of ``--trials`` of each, interleaved, the file in a temporary directory (page cache warm,
so the numbers are CPU time: a cold read from disk adds the same I/O to both). Prints a markdown
table and writes ``{"size_mb", "trials", "save_s": {...}, "load_s": {...}}`` with the machine to
``benchmarks/results/checksum_cost.json`` (``--json PATH``: elsewhere).

    python benchmarks/checksum_cost.py --trials 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.record import write_result  # noqa: E402
from resnest_engine.storage.checksum import VERIFY_ENV, with_checksum  # noqa: E402
from resnest_engine.handlers import read_checkpoint  # noqa: E402
from resnest_engine.handlers.checkpoint import atomic_save  # noqa: E402
from resnest_engine.models import get_model  # noqa: E402


def resume_point() -> dict:
    model = get_model("resnest50")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    opt.step()  # momentum buffers exist
    return {"format_version": 1, "meta": {"model": "resnest50"}, "model": model.state_dict(),
            "optimizer": opt.state_dict(), "trainer": {"iteration": 1}, "schedulers": {},
            "scaler": {}, "ema": {}, "rng": {}, "metrics": {}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--json", help="results file (default benchmarks/results/checksum_cost.json)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ckpt = resume_point()
    save = {"without checksum": [], "with checksum": []}
    load = {"verification off": [], "verification on": []}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "resume-e001-i0000001.pt"
        for _ in range(args.trials):
            t = time.perf_counter()
            atomic_save(ckpt, path)
            save["without checksum"].append(time.perf_counter() - t)
            t = time.perf_counter()
            atomic_save(with_checksum(ckpt), path)
            save["with checksum"].append(time.perf_counter() - t)
            for name, flag in (("verification off", "0"), ("verification on", "1")):
                os.environ[VERIFY_ENV] = flag
                t = time.perf_counter()
                read_checkpoint(path)
                load[name].append(time.perf_counter() - t)
        size = path.stat().st_size / 2 ** 20
    os.environ.pop(VERIFY_ENV, None)
    med = {k: statistics.median(v) for k, v in {**save, **load}.items()}
    print(f"resnest50 resume point: {size:.1f} MB, median of {args.trials}, 1 thread\n")
    print("| | seconds |\n|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.3f} |")
    print(f"\nchecksum on save: +{med['with checksum'] - med['without checksum']:.3f} s; "
          f"verification on load: +{med['verification on'] - med['verification off']:.3f} s")
    write_result("checksum_cost", (
        f"seconds to save a resnest50 resume point with and without its checksum and to read it "
        f"with verification on and off, median of {args.trials}, 1 torch thread, page cache warm"),
        {"size_mb": size, "trials": args.trials, "save_s": {k: med[k] for k in save},
         "load_s": {k: med[k] for k in load}}, args.json)


if __name__ == "__main__":
    main()
