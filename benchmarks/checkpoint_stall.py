"""How long the training thread is blocked per checkpoint save: written on the training thread
(``TRAINING.ASYNC_CHECKPOINT: false``) against the background writer (``true``), in one run.

Cases: a resnest50 at 224 with SGD momentum (its resume point: weights, BatchNorm buffers and
momentum, about 210 MB), and the digits recipe's resnest14 with AdamW (its resume point). Each
save goes through ignite's ``Checkpoint`` with the saver the standard handlers use, rotating 2
files, as a run's resume points do; the blocked time is the wall time of the checkpointer call on
the calling thread. Between two saves the benchmark waits for the background write to finish,
as the steps between two resume points would (a save that comes while the previous one is still
being written waits for it: that wait would count). Median over ``--saves`` saves of each mode,
interleaved. Prints a markdown table and writes ``{"device", "threads", "saves", "cases":
[{"name", "size_mb", "sync_s", "async_s", "ratio"}, ...]}`` with the machine to
``benchmarks/results/checkpoint_stall.json`` (``--json PATH``: elsewhere).

    python benchmarks/checkpoint_stall.py --saves 7
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
from ignite.engine import Engine

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.record import write_result  # noqa: E402
from resnest_engine.engine import create_optimizer, param_groups  # noqa: E402
from resnest_engine.handlers import create_resume_checkpointer  # noqa: E402
from resnest_engine.handlers.checkpoint import AtomicDiskSaver  # noqa: E402
from resnest_engine.handlers.background_saver import BackgroundDiskSaver  # noqa: E402
from resnest_engine.models import get_model  # noqa: E402


def case(name: str, model_name: str, optimizer: str, size: int, classes: int, device: str):
    model = get_model(model_name, num_classes=classes).to(device)
    opt = create_optimizer(param_groups(model, 1e-4), optimizer, lr=0.1)
    model(torch.randn(2, 3, size, size, device=device)).sum().backward()
    opt.step()  # the optimizer state exists, as in a run
    return name, {"model": model, "optimizer": opt}


def blocked_seconds(saver_cls, to_save, out: Path, saves: int) -> list:
    saver = saver_cls(out)
    checkpointer = create_resume_checkpointer(to_save, saver, n_saved=2)
    engine = Engine(lambda e, b: None)
    engine.state.epoch = 1
    times = []
    for i in range(saves):
        engine.state.iteration = i + 1
        t = time.perf_counter()
        checkpointer(engine)
        times.append(time.perf_counter() - t)
        if hasattr(saver, "wait"):
            saver.wait()  # the steps until the next save
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--saves", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="where the model and optimizer state live "
                    "(cuda: the background saver stages into pinned host memory)")
    ap.add_argument("--json", help="results file (default benchmarks/results/checkpoint_stall.json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cases = [case("resnest50 at 224, SGD momentum", "resnest50", "nesterov", 64, 1000, args.device),
             case("digits recipe (resnest14, AdamW)", "resnest14", "adamw", 32, 10, args.device)]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, to_save in cases:
            sync, background = [], []
            for trial in range(2):  # interleaved: a drift in load hits both modes alike
                sync += blocked_seconds(AtomicDiskSaver, to_save, Path(d) / f"s{trial}", args.saves // 2 + 1)
                background += blocked_seconds(BackgroundDiskSaver, to_save, Path(d) / f"b{trial}",
                                              args.saves // 2 + 1)
            size = max(p.stat().st_size for p in (Path(d) / "s0").glob("*.pt")) / 2 ** 20
            s, b = statistics.median(sync), statistics.median(background)
            rows.append({"name": name, "size_mb": round(size, 1), "sync_s": s, "async_s": b,
                         "ratio": s / b})
    print(f"blocked seconds per save, median of {len(sync)} saves per mode, {args.threads} "
          f"thread(s), state on {args.device}\n")
    print("| case | file | written on the training thread | background writer | less blocking |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['size_mb']} MB | {r['sync_s']:.3f} s | {r['async_s']:.3f} s | "
              f"{r['ratio']:.1f}x |")
    print("\ngoal: at least 5x less blocking: " +
          ("met" if all(r["ratio"] >= 5 for r in rows) else "not met"))
    write_result("checkpoint_stall", (
        f"training-thread seconds blocked per checkpoint save, written on the training thread vs "
        f"the background writer, median of {len(sync)} saves per mode, state on {args.device}, "
        f"{args.threads} torch thread(s)"),
        {"device": args.device, "threads": args.threads, "saves": len(sync), "cases": rows},
        args.json)


if __name__ == "__main__":
    main()
