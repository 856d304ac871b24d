"""Engine overhead: ``create_trainer`` + ``attach_standard_handlers`` vs a hand-written torch loop.

Both sides do the same work on the same numbers: resnest14 at 32x32, batch 64, 10 classes,
synthetic batches held in memory, SGD with Nesterov momentum (no weight decay on norm weights and
biases, on both sides), a cosine LR set before every step, a log line with ``.item()`` reads and
TensorBoard scalars (loss, top-1, LR, img/s; tensorboardX) every ``--log-every`` steps, a
checkpoint (model + optimizer + state) at each epoch end and the final weights at the end. No
validation, no progress bar.

* ``ours``: ``create_trainer`` + ``attach_standard_handlers`` (``val_loader=None``) + ``run``:
  ignite events, LR scheduler, NaN guard, text log, TensorBoard, crash-safe resume points
  (temp file + fsync + rename) and ``model_weights.pt``.
* ``raw``: a ``for`` loop with the cosine computed by hand, ``print`` to a log file, a
  ``SummaryWriter``, plain ``torch.save``.

The timed region is everything after the model, optimizer and data exist: building the
engine/handlers (or the writer) and training. Two ways to pair the sides (``--mode``):

* ``interleaved`` (default): one trial runs both loops step by step in one process, each on its
  own copy of the model: ``ours`` iterates a data wrapper that runs raw's step i (and raw's
  epoch end after its last step) just before handing ``ours`` batch i. Raw's calls are timed
  on their own and subtracted from ``ours``'s total, so both see the machine's load at the same
  moments; this is what makes a ratio near 1 measurable on a shared CPU.
* ``alternating``: separate runs, ``ours`` then ``raw``, the order flipped each trial.

The ratio is the median over trials of ``ours / raw`` (wall clock; the process CPU-time ratio is
reported beside it), after an untimed warm-up trial. One torch thread (the default here) avoids
OpenMP threads waiting on each other on an oversubscribed CPU.

    python benchmarks/engine_overhead.py --trials 5

Prints a markdown table and writes ``{"ratio": ..., "ours_s": ..., "raw_s": ..., "cpu_ratio": ...,
"trials": [...], "config": {...}}`` (times are medians over trials) with the machine to
``benchmarks/results/engine_overhead.json`` (``--json PATH``: elsewhere).
"""
from __future__ import annotations

import argparse
import copy
import logging
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.record import write_result  # noqa: E402
from resnest_engine.engine import create_optimizer, create_trainer, param_groups  # noqa: E402
from resnest_engine.handlers import (attach_standard_handlers, build_standard_handlers, create_lr_scheduler,  # noqa: E402
                                     setup_logger)
from resnest_engine.models import get_model  # noqa: E402

Batch = Tuple[torch.Tensor, torch.Tensor]


def make_data(steps: int, batch: int, size: int, classes: int, seed: int = 0) -> List[Batch]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 3, size, size, generator=g),
             torch.randint(0, classes, (batch,), generator=g)) for _ in range(steps)]


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    return create_optimizer(param_groups(model, 1e-4), "nesterov", lr=lr, momentum=0.9)


def run_ours(model, data: List[Batch], epochs: int, lr: float, out: Path,
             log_every: int) -> Tuple[float, float]:
    optimizer = make_optimizer(model, lr)
    setup_logger(out / "log.txt", stream=False)
    t0, c0 = time.perf_counter(), time.process_time()
    trainer = create_trainer(model, optimizer, F.cross_entropy)
    schedule = create_lr_scheduler(optimizer, "cos", lr, epochs * len(data))
    attach_standard_handlers(trainer, build_standard_handlers(
        trainer, model, optimizer, lr_scheduler=schedule, output_dir=str(out),
        log_every=log_every, tensorboard=True, progress_bar="off", ckpt_every=1,
        keep_checkpoints=2))
    trainer.run(data, max_epochs=epochs)
    times = time.perf_counter() - t0, time.process_time() - c0
    _close_logger()
    return times


class RawLoop:
    """The hand-written loop, cut into calls so it can also run interleaved with ``ours``."""

    def __init__(self, model, lr: float, total_steps: int, out: Path, log_every: int) -> None:
        self.model, self.lr, self.total, self.out, self.log_every = model, lr, total_steps, out, log_every
        self.optimizer = make_optimizer(model, lr)

    def start(self) -> None:
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(self.out / "tb"))
        (self.out / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.log = open(self.out / "log.txt", "a")
        self.step_no = 0
        self.run_loss, self.correct, self.seen, self.t_log = None, None, 0, time.perf_counter()

    def step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, i: int) -> None:
        model, optimizer = self.model, self.optimizer
        model.train()
        cur_lr = 0.5 * self.lr * (1.0 + math.cos(math.pi * self.step_no / self.total))
        for group in optimizer.param_groups:
            group["lr"] = cur_lr
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
        self.step_no += 1
        n = x.shape[0]
        batch_loss = loss.detach() * n
        batch_correct = (logits.detach().argmax(1) == y).sum()
        self.run_loss = batch_loss if self.run_loss is None else self.run_loss + batch_loss
        self.correct = batch_correct if self.correct is None else self.correct + batch_correct
        self.seen += n
        if self.step_no % self.log_every == 0:
            now = time.perf_counter()
            mean_loss = self.run_loss.item() / self.seen
            top1 = 100.0 * self.correct.item() / self.seen
            ips = self.seen / (now - self.t_log)
            print(f"Epoch: {epoch} Batch: {i}| Loss: {mean_loss:.3f} | Top1: {top1:.3f} | "
                  f"LR: {cur_lr:.6f} | {ips:.1f} img/s", file=self.log, flush=True)
            for k, v in (("loss", mean_loss), ("top1", top1), ("lr", cur_lr),
                         ("images_per_sec", ips)):
                self.writer.add_scalar(f"train/{k}", v, self.step_no)
            self.run_loss, self.correct, self.seen, self.t_log = None, None, 0, now

    def end_epoch(self, epoch: int) -> None:
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "epoch": epoch, "step": self.step_no},
                   self.out / "checkpoints" / f"epoch-{epoch:03d}.pt")

    def finish(self) -> None:
        torch.save(self.model.state_dict(), self.out / "model_weights.pt")
        self.writer.close()
        self.log.close()


def run_raw(model, data: List[Batch], epochs: int, lr: float, out: Path,
            log_every: int) -> Tuple[float, float]:
    loop = RawLoop(model, lr, epochs * len(data), out, log_every)
    t0, c0 = time.perf_counter(), time.process_time()
    loop.start()
    for epoch in range(1, epochs + 1):
        for i, (x, y) in enumerate(data, start=1):
            loop.step(x, y, epoch, i)
        loop.end_epoch(epoch)
    loop.finish()
    return time.perf_counter() - t0, time.process_time() - c0


class _Clock:
    """Accumulated wall and process CPU time of the calls made through it."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __call__(self, fn, *args) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        fn(*args)
        self.wall += time.perf_counter() - t0
        self.cpu += time.process_time() - c0


class _InterleavedData:
    """The batches for ``ours``; before handing out batch i it runs raw's step i (and raw's
    epoch end after its last step), timed on ``clock``. Both loops thus share every moment of
    the machine's load, step by step."""

    def __init__(self, data: List[Batch], loop: RawLoop, clock: _Clock) -> None:
        self.data, self.loop, self.clock, self.epoch = data, loop, clock, 0

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self):
        self.epoch += 1
        for i, (x, y) in enumerate(self.data, start=1):
            self.clock(self.loop.step, x, y, self.epoch, i)
            if i == len(self.data):
                self.clock(self.loop.end_epoch, self.epoch)
            yield x, y


def run_interleaved(ours_model, raw_model, data: List[Batch], epochs: int, lr: float, out: Path,
                    log_every: int) -> Dict[str, Tuple[float, float]]:
    """``ours`` and ``raw`` step by step in one process: ``(wall, cpu)`` of each."""
    (out / "raw").mkdir()
    (out / "ours").mkdir()
    loop = RawLoop(raw_model, lr, epochs * len(data), out / "raw", log_every)
    clock = _Clock()
    clock(loop.start)
    before = clock.wall, clock.cpu
    total_wall, total_cpu = run_ours(ours_model, _InterleavedData(data, loop, clock), epochs, lr,
                                     out / "ours", log_every)
    # ours's timer also ran through raw's calls made from inside the data iterator.
    ours = total_wall - (clock.wall - before[0]), total_cpu - (clock.cpu - before[1])
    clock(loop.finish)
    return {"ours": ours, "raw": (clock.wall, clock.cpu)}


def _close_logger() -> None:
    log = logging.getLogger("resnest_engine")
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()


def _fresh_model(base_state, classes: int):
    model = get_model("resnest14", num_classes=classes)
    model.load_state_dict(base_state)
    return model


def one_run(kind: str, base_state, data, args, root: Path, tag: str) -> Tuple[float, float]:
    model = _fresh_model(base_state, args.classes)
    out = root / f"{kind}-{tag}"
    out.mkdir(parents=True)
    fn = run_ours if kind == "ours" else run_raw
    try:
        return fn(model, data, args.epochs, args.lr, out, args.log_every)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def one_trial(base_state, data, args, root: Path, tag: str, t: int) -> Dict[str, Tuple[float, float]]:
    if args.mode == "alternating":
        order = ("ours", "raw") if t % 2 == 0 else ("raw", "ours")
        return {kind: one_run(kind, base_state, data, args, root, tag) for kind in order}
    out = root / f"pair-{tag}"
    out.mkdir(parents=True)
    try:
        return run_interleaved(_fresh_model(base_state, args.classes),
                               _fresh_model(base_state, args.classes), data, args.epochs,
                               args.lr, out, args.log_every)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv=None) -> Dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--steps", type=int, default=25, help="steps per epoch")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--warmup-steps", type=int, default=3, help="steps of the untimed warm-up runs")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (0 = torch's default); 1 keeps timings stable on a shared "
                        "machine, where OpenMP threads of an oversubscribed CPU wait on each other")
    p.add_argument("--mode", choices=("interleaved", "alternating"), default="interleaved",
                   help="interleaved: ours and raw step by step in one run (robust to other "
                        "processes' load); alternating: separate runs, order flipped each trial")
    p.add_argument("--json", type=str, default=None,
                   help="results file (default benchmarks/results/engine_overhead.json)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    base_state = copy.deepcopy(get_model("resnest14", num_classes=args.classes).state_dict())
    data = make_data(args.steps, args.batch_size, args.img_size, args.classes)
    root = Path(tempfile.mkdtemp(prefix="engine_overhead-"))
    try:
        warm = data[:args.warmup_steps]
        wargs = argparse.Namespace(**{**vars(args), "epochs": 1})
        one_trial(base_state, warm, wargs, root, "warmup", 0)
        one_trial(base_state, warm, wargs, root, "warmup1", 1)
        trials = []
        for t in range(args.trials):
            res = one_trial(base_state, data, args, root, str(t), t)
            times = {"ours": res["ours"][0], "raw": res["raw"][0],
                     "ours_cpu": res["ours"][1], "raw_cpu": res["raw"][1]}
            times["ratio"] = times["ours"] / times["raw"]
            times["cpu_ratio"] = times["ours_cpu"] / times["raw_cpu"]
            trials.append(times)
            print(f"trial {t + 1}/{args.trials}: ours {times['ours']:.2f} s, raw {times['raw']:.2f} s, "
                  f"ratio {times['ratio']:.4f} (CPU time ratio {times['cpu_ratio']:.4f})", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    steps = args.epochs * args.steps
    ours_s = statistics.median(t["ours"] for t in trials)
    raw_s = statistics.median(t["raw"] for t in trials)
    ratio = statistics.median(t["ratio"] for t in trials)
    cpu_ratio = statistics.median(t["cpu_ratio"] for t in trials)
    result = {
        "ratio": ratio, "ours_s": ours_s, "raw_s": raw_s, "cpu_ratio": cpu_ratio,
        "ours_cpu_s": statistics.median(t["ours_cpu"] for t in trials),
        "raw_cpu_s": statistics.median(t["raw_cpu"] for t in trials),
        "ours_ms_per_step": 1000 * ours_s / steps, "raw_ms_per_step": 1000 * raw_s / steps,
        "ratio_min": min(t["ratio"] for t in trials), "ratio_max": max(t["ratio"] for t in trials),
        "goal": 1.03, "goal_met": ratio <= 1.03, "trials": trials,
        "config": {**{k: v for k, v in vars(args).items() if k != "json"}, "model": "resnest14",
                   "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                   "cpu_count": os.cpu_count(), "platform": platform.platform(),
                   "python": platform.python_version()},
    }
    print()
    print(f"{args.mode}: resnest14 {args.img_size}x{args.img_size}, batch {args.batch_size}, "
          f"{args.epochs} epochs x {args.steps} steps, {args.trials} trials, "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs")
    print()
    print("| loop | median wall time (s) | ms / step | median CPU time (s) |")
    print("|---|---:|---:|---:|")
    print(f"| ours (create_trainer + attach_standard_handlers) | {ours_s:.2f} | "
          f"{result['ours_ms_per_step']:.1f} | {result['ours_cpu_s']:.2f} |")
    print(f"| raw torch loop | {raw_s:.2f} | {result['raw_ms_per_step']:.1f} | "
          f"{result['raw_cpu_s']:.2f} |")
    print(f"| **ours / raw, median of per-trial ratios** | **{ratio:.4f}** (min "
          f"{result['ratio_min']:.4f}, max {result['ratio_max']:.4f}) | | {cpu_ratio:.4f} |")
    print()
    print(f"goal: wall-time ratio <= 1.03: {'met' if result['goal_met'] else 'not met'}")
    return write_result("engine_overhead", (
        f"wall time of create_trainer + attach_standard_handlers over a hand-written loop doing "
        f"the same work, median of {args.trials} {args.mode} trials of {args.epochs} epochs x "
        f"{args.steps} steps, resnest14 at {args.img_size}x{args.img_size}, batch "
        f"{args.batch_size}, {torch.get_num_threads()} torch thread(s)"), result, args.json)


if __name__ == "__main__":
    main()
