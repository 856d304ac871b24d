"""GPU benchmark suite: one command, under 8 minutes on one CUDA GPU, one JSON + one markdown table.

    python benchmarks/gpu_suite.py --out output/bench-gpu        # (make bench-gpu)
    python benchmarks/gpu_suite.py --out /tmp/smoke --smoke      # tiny sizes, any machine

A GPU run also writes its JSON (with the machine) to ``benchmarks/results/gpu_suite.json``, which
``python -m benchmarks.report`` turns into docs/benchmarks.md's table (``--json PATH``: elsewhere);
a smoke run writes only into ``--out`` unless ``--json`` is given.

Parts (each has a time budget; a part over budget, or one that fails, is recorded with its
status and reason and the suite moves on). Steady state everywhere: warm-up steps, then
``trials`` x ``iters`` (201 on a GPU) timed steps between ``torch.cuda.synchronize`` calls,
models interleaved per trial, median reported; each part records ``timed_steps`` and
``img_per_s``.

1. ``train``: training img/s at batch 128 and 256 of our ``resnest50``, timm's ``resnest50d``
   (identical weights) and timm's ``resnet50`` (the calibration), bf16 autocast +
   channels_last, eager, SGD step; FLOPs per image (``FlopCounterMode``, forward + backward) and
   MFU against the card's dense bf16 peak (``BF16_PEAK_TFLOPS``; null when unknown);
   ``vs_timm`` at the fastest batch.
2. ``infer``: inference img/s (eval, ``no_grad``, bf16 autocast, channels_last), same models.
3. ``jpeg_pipeline``: files -> normalised float batch on the GPU: our fast JPEG path (uint8
   through the workers and the host-to-device copy, normalisation on the GPU with
   ``loader.batch_transform``) vs torchvision's classification reference (normalise in the
   workers, float copy); JPEGs generated into a temporary folder (``benchmarks/dataloader.py``).
4. ``train_compiled``: our model's step under ``torch.compile`` modes default, reduce-overhead
   (CUDA graphs) and max-autotune; a mode whose compile would not fit the remaining budget is
   skipped with a note; the fastest is reported as a ``MODEL.COMPILE`` setting.
5. ``recipe``: ``resnest-train`` in-process at steady state (log windows after the warm-up
   ones): (a) synthetic batches already on the device, ``vs_bare_step`` = its img/s over part
   1's bare step (same model, batch, precision); (b) a generated JPEG folder through the fast
   JPEG path with ``DATA.PREFETCH: auto``, decoded in the workers (``jpeg.decode.cpu``) and on
   the device (``jpeg.decode.gpu``: ``DATA.DECODE: gpu``, nvjpeg; its ``vs_device_resident``
   is the issue's "JPEG folder >= 0.9x synthetic" goal, and ``decoder_max_abs_diff_levels``
   nvjpeg's largest difference from libjpeg-turbo); peak GPU memory; (c) on CUDA, the
   synthetic run again with its free iterations under ``torch.cuda.set_sync_debug_mode("error")``
   (``sync_debug``: passed, or failed with the call that synced).

Without CUDA (or with ``--smoke``) the same code runs at tiny sizes (resnest14 at 32 px,
batches 2 and 4, 2 timed steps, 8 JPEGs, 6-step recipes, ``torch.compile`` with the cheap
``eager`` backend, the modes then only labels) in well under a minute, writing the same JSON/markdown shape: the test suite
runs it so that the script cannot rot. Smoke numbers are not benchmarks.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import logging
import platform
import re
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import dataloader as dl_bench  # noqa: E402  (benchmarks/dataloader.py)
import model_throughput as mt  # noqa: E402  (benchmarks/model_throughput.py)
from benchmarks import record  # noqa: E402

PARTS = ("train", "infer", "jpeg_pipeline", "train_compiled", "recipe")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")  # cheapest compile first

# Sizes and per-part time budgets (seconds). GPU: total budget 450 s of the 8 minutes, leaving
# room for start-up (imports, CUDA context) and the JSON/markdown. Steady state: warm-up steps,
# then ``trials`` x ``iters`` timed steps (>= 200) per model and batch.
GPU = dict(ours="resnest50", timm="resnest50d", calib="resnet50", img_size=224,
           train_batches=[128, 256], infer_batch=256, warmup=10, iters=67, trials=3,
           jpeg_images=512, jpeg_batch=64, jpeg_workers=8, jpeg_trials=3,
           recipe_steps=300, recipe_log_every=20, recipe_warm_windows=3, recipe_batch=128,
           recipe_workers=8, recipe_jpeg_images=2048,
           compile_backend="inductor",
           compile_estimate_s={"default": 60.0, "reduce-overhead": 80.0, "max-autotune": 240.0},
           total_budget_s=450.0,
           budget_s=dict(train=150.0, infer=40.0, jpeg_pipeline=45.0, train_compiled=None,
                         recipe=110.0))
SMOKE = dict(ours="resnest14", timm="resnest14d", calib="resnet18", img_size=32,
             train_batches=[2, 4], infer_batch=2, warmup=1, iters=2, trials=1,
             jpeg_images=8, jpeg_batch=4, jpeg_workers=0, jpeg_trials=1,
             recipe_steps=6, recipe_log_every=1, recipe_warm_windows=2, recipe_batch=2,
             recipe_workers=0, recipe_jpeg_images=8,
             compile_backend="eager",
             compile_estimate_s={"default": 5.0, "reduce-overhead": 5.0, "max-autotune": 5.0},
             total_budget_s=100.0,
             budget_s=dict(train=20.0, infer=10.0, jpeg_pipeline=20.0, train_compiled=None,
                           recipe=30.0))

#: Dense bf16 tensor-core peak (TFLOP/s, no sparsity) by a substring of the CUDA device name,
#: first match wins (the specific names before the general ones). Other devices: unknown (None).
BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4),
    ("GH200", 989.4), ("H800", 989.4), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0),
    ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0),
    ("RTX 4090", 165.2), ("RTX 3090", 71.0), ("V100", None), ("T4", None),
)


def bf16_peak_tflops(device_name: str) -> Optional[float]:
    """The card's dense bf16 peak from :data:`BF16_PEAK_TFLOPS`; None when unknown (the CPU)."""
    for key, peak in BF16_PEAK_TFLOPS:
        if key in device_name:
            return peak
    return None


class Budget:
    """Deadline bookkeeping: the suite's and the current part's."""

    def __init__(self, total_s: float) -> None:
        self.t0 = time.perf_counter()
        self.total_s = total_s

    def left(self) -> float:
        return self.total_s - (time.perf_counter() - self.t0)


# --------------------------------------------------------------------------- helpers
def sync(device: torch.device) -> None:
    mt.sync(device)


def autocast(device: torch.device, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def build_pair(cfg: dict, device: torch.device) -> Dict[str, torch.nn.Module]:
    """Ours and timm's twin with identical (seeded, BN-randomised) weights, plus timm's plain
    ResNet (``calib``: the calibration, a model every GPU benchmark knows), channels_last."""
    torch.manual_seed(0)
    twin = mt.build(f"timm:{cfg['timm']}")
    mt.randomise_norms(twin)
    ours = mt.build(f"ours:{cfg['ours']}")
    ours.load_state_dict(twin.state_dict(), strict=True)
    calib = mt.build(f"timm:{cfg['calib']}")
    models = {f"ours:{cfg['ours']}": ours, f"timm:{cfg['timm']}": twin,
              f"timm:{cfg['calib']}": calib}
    for m in models.values():
        m.to(device=device, memory_format=torch.channels_last)
    return models


def train_flops_per_image(model: torch.nn.Module, cfg: dict, device: torch.device,
                          bf16: bool) -> Optional[float]:
    """FLOPs of one training image (forward + backward) counted by torch's FlopCounterMode on a
    batch of 2 (matmuls and convolutions, 2 per multiply-add); None if it cannot count."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:  # pragma: no cover - older torch
        return None
    size, n = cfg["img_size"], 2
    x = torch.randn(n, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    model.train()
    with FlopCounterMode(display=False) as counter:
        with autocast(device, bf16):
            out = model(x)
        out.float().sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / n


def mfu(img_s: Optional[float], flops_per_image: Optional[float],
        peak_tflops: Optional[float]) -> Optional[float]:
    """Model FLOPs utilisation: achieved FLOP/s over the card's bf16 peak (None if unknown)."""
    if not img_s or not flops_per_image or not peak_tflops:
        return None
    return img_s * flops_per_image / (peak_tflops * 1e12)


def compiled(model: torch.nn.Module, mode: str, backend: str) -> Callable:
    """``torch.compile`` in ``mode`` (inductor); another backend (the smoke run's ``eager``)
    takes no mode: the mode is then only a label."""
    if backend == "inductor":
        return torch.compile(model, mode=mode)
    return torch.compile(model, backend=backend)


def throughput(models: Dict[str, torch.nn.Module], mode: str, batch: int, cfg: dict,
               device: torch.device, bf16: bool,
               compile_fns: Optional[Dict[str, Callable[[], Callable]]] = None,
               estimates: Optional[Dict[str, float]] = None,
               deadline: Optional[Callable[[], float]] = None) -> Dict[str, dict]:
    """img/s of each model in ``mode`` ('train' or 'infer') at steady state: warm-up, then
    ``trials`` rounds of ``iters`` timed steps (models interleaved, order rotated); median over
    trials. ``timed_steps`` = trials x iters.

    ``compile_fns[name]()`` gives the callable to run instead of the model (compiled), and a
    model is skipped when ``deadline()`` (seconds left) is below ``estimates[name]``; an eager
    model is skipped when less than 5 s are left."""
    size = cfg["img_size"]
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
    steps, rows = {}, {}
    for name, model in models.items():
        need = (estimates or {}).get(name, 5.0)
        if deadline is not None and deadline() < need:
            rows[name] = dict(status="skipped", reason=(
                f"time budget: {deadline():.0f} s left, it needs about {need:.0f} s"))
            continue
        fn = compile_fns[name]() if compile_fns else model

        def forward(inp, fn=fn):
            with autocast(device, bf16):
                return fn(inp).float()

        steps[name] = mt.make_steps(model, forward, x, y)[mode]
        t0 = time.perf_counter()
        for _ in range(max(cfg["warmup"], 1)):
            steps[name]()
        sync(device)
        rows[name] = dict(status="ok", warmup_s=time.perf_counter() - t0,
                          warmup_steps=max(cfg["warmup"], 1), img_s_trials=[])
    names = list(steps)
    for trial in range(cfg["trials"]):
        k = trial % max(len(names), 1)
        for name in names[k:] + names[:k]:
            dt = mt.time_steps(steps[name], cfg["iters"], device)
            rows[name]["img_s_trials"].append(batch * cfg["iters"] / dt)
    for name in names:
        rows[name]["img_s"] = statistics.median(rows[name]["img_s_trials"])
        rows[name]["timed_steps"] = cfg["iters"] * cfg["trials"]
    ok = [n for n in names if rows[n]["status"] == "ok"]
    ours = next((n for n in ok if n.startswith("ours:")), None)
    ref = next((n for n in ok if n.startswith("timm:")), None)
    if ours and ref:
        rows[ours]["ratio_vs_timm"] = rows[ours]["img_s"] / rows[ref]["img_s"]
        rows[ours]["paired_ratio_vs_timm"] = statistics.median(
            a / b for a, b in zip(rows[ours]["img_s_trials"], rows[ref]["img_s_trials"]))
    return rows


# --------------------------------------------------------------------------- parts
def part_train(ctx: dict) -> dict:
    """Eager training img/s at each batch of ``train_batches``: ours, timm's twin, timm's
    calibration ResNet; FLOPs per image and MFU against the card's bf16 peak."""
    cfg, device, bf16 = ctx["cfg"], ctx["device"], ctx["bf16"]
    models, peak = ctx["models"], ctx["peak_tflops"]
    flops = {name: train_flops_per_image(m, cfg, device, bf16) for name, m in models.items()}
    ctx["flops"] = flops
    by_batch: Dict[str, dict] = {}
    for batch in cfg["train_batches"]:
        rows = throughput(models, "train", batch, cfg, device, bf16, deadline=ctx["part_left"])
        for name, r in rows.items():
            r["flops_per_image"] = flops[name]
            r["mfu"] = mfu(r.get("img_s"), flops[name], peak)
        by_batch[str(batch)] = rows
    ctx["train_by_batch"] = by_batch
    ours, calib = f"ours:{cfg['ours']}", f"timm:{cfg['calib']}"
    measured = {b: rows for b, rows in by_batch.items() if rows[ours].get("img_s")}
    best = max(measured, key=lambda b: measured[b][ours]["img_s"]) if measured else None
    row = measured[best][ours] if best else {}
    first = by_batch[str(cfg["train_batches"][0])]
    return dict(batch=cfg["train_batches"][0], batches=cfg["train_batches"],
                img_size=cfg["img_size"], precision=ctx["precision"], channels_last=True,
                compile=False, models=first, by_batch=by_batch,
                timed_steps=cfg["iters"] * cfg["trials"], warmup_steps=cfg["warmup"],
                best_batch=int(best) if best else None, img_per_s=row.get("img_s"),
                flops_per_image=flops[ours], peak_bf16_tflops=peak, mfu=row.get("mfu"),
                vs_timm=row.get("ratio_vs_timm"),
                vs_calibration=(row["img_s"] / measured[best][calib]["img_s"]
                                if best and measured[best][calib].get("img_s") else None),
                calibration=dict(model=calib, img_s=(measured[best][calib].get("img_s")
                                                     if best else None),
                                 mfu=measured[best][calib].get("mfu") if best else None))


def part_infer(ctx: dict) -> dict:
    cfg, device = ctx["cfg"], ctx["device"]
    rows = throughput(ctx["models"], "infer", cfg["infer_batch"], cfg, device, ctx["bf16"],
                      deadline=ctx["part_left"])
    ours = rows[f"ours:{cfg['ours']}"]
    return dict(batch=cfg["infer_batch"], img_size=cfg["img_size"], precision=ctx["precision"],
                channels_last=True, compile=False, models=rows,
                timed_steps=cfg["iters"] * cfg["trials"], img_per_s=ours.get("img_s"),
                vs_timm=ours.get("ratio_vs_timm"))


def part_train_compiled(ctx: dict) -> dict:
    """Our model's training step under each ``torch.compile`` mode (default, max-autotune,
    reduce-overhead = CUDA graphs) at the first train batch; the fastest is what a recipe's
    ``MODEL.COMPILE`` should name. A mode whose compile would not fit the budget is skipped."""
    cfg, device = ctx["cfg"], ctx["device"]
    batch, backend = cfg["train_batches"][0], cfg["compile_backend"]
    ours = f"ours:{cfg['ours']}"
    rows: Dict[str, dict] = {}
    for mode in COMPILE_MODES:
        torch.manual_seed(0)
        model = mt.build(ours).to(device=device, memory_format=torch.channels_last)
        label = f"{ours} [{mode}]"
        r = throughput({label: model}, "train", batch, cfg, device, ctx["bf16"],
                       compile_fns={label: lambda m=model, mode=mode: compiled(m, mode, backend)},
                       estimates={label: cfg["compile_estimate_s"][mode]},
                       deadline=ctx["part_left"])[label]
        r.update(mode=mode, mfu=mfu(r.get("img_s"), (ctx.get("flops") or {}).get(ours),
                                     ctx["peak_tflops"]))
        rows[label] = r
        del model
        torch._dynamo.reset()  # drop the compiled graphs (and the models they hold)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    ok = {r["mode"]: r for r in rows.values() if r["status"] == "ok"}
    fastest = max(ok, key=lambda m: ok[m]["img_s"]) if ok else None
    eager = ((ctx.get("train_by_batch") or {}).get(str(batch)) or {}).get(ours, {}).get("img_s")
    return dict(batch=batch, img_size=cfg["img_size"], precision=ctx["precision"],
                channels_last=True, compile=True, compile_backend=backend, models=rows,
                timed_steps=cfg["iters"] * cfg["trials"], fastest_mode=fastest,
                img_per_s=ok[fastest]["img_s"] if fastest else None,
                mfu=ok[fastest]["mfu"] if fastest else None,
                vs_eager=(ok[fastest]["img_s"] / eager if fastest and eager else None),
                recipe_setting=(f"MODEL.COMPILE: {fastest}" if fastest else None))


def part_jpeg_pipeline(ctx: dict) -> dict:
    """Files -> normalised float batch on ``device``, our fast JPEG path vs torchvision's."""
    cfg, device = ctx["cfg"], ctx["device"]
    batch, workers = cfg["jpeg_batch"], cfg["jpeg_workers"]

    def on_device(x, y):
        sync(device)  # both pipelines alike: the batch is really there
        return x, y

    with tempfile.TemporaryDirectory(prefix="resnest_gpu_suite_jpeg_") as root:
        t0 = time.perf_counter()
        counts = dl_bench.make_jpeg_folder(root, cfg["jpeg_images"])
        gen_s = time.perf_counter() - t0
        fast = dl_bench.our_loader(root, batch, workers, fast=True)
        ref = dl_bench.torchvision_reference_loader(root, batch, workers)
        runners = {
            # uint8 NHWC batch copied to the device, normalised there (our batch_transform).
            "ours (fast_jpeg, normalise on device)": dl_bench.epoch_runner(
                fast, lambda b: on_device(*fast.prepare_batch(b, device, non_blocking=True))),
            # float batch normalised in the workers, then copied.
            "torchvision reference": dl_bench.epoch_runner(
                ref, lambda b: on_device(b[0].to(device), b[1].to(device))),
        }
        for run in runners.values():  # warm-up: worker start-up, page cache, CUDA kernels
            run()
        trials: Dict[str, List[float]] = {name: [] for name in runners}
        for _ in range(cfg["jpeg_trials"]):
            for name, run in runners.items():
                trials[name].append(run())
    med = {name: statistics.median(v) for name, v in trials.items()}
    ours, tv = med["ours (fast_jpeg, normalise on device)"], med["torchvision reference"]
    return dict(images=cfg["jpeg_images"], batch=batch, crop=224, workers=workers,
                size_mix=counts, generate_s=gen_s,
                pipelines={n: dict(img_s=med[n], img_s_trials=trials[n]) for n in trials},
                speedup_vs_torchvision=ours / tv)


_BATCH_RE = re.compile(r"Batch: (\d+)\|.*\| ([\d.]+) img/s")
_EPOCH_RE = re.compile(r"Epoch: (\d+), Time cost: ([\d.]+) \|.*\| ([\d.]+) img/s")


def parse_train_log(text: str, warm_windows: int = 1) -> dict:
    """The ``Batch: N| ... X img/s`` and ``Epoch: N, Time cost: T | ... X img/s`` lines;
    ``steady_img_s``: the median of the log windows after the first ``warm_windows``."""
    batches = [(int(m.group(1)), float(m.group(2))) for m in _BATCH_RE.finditer(text)]
    epochs = [(int(m.group(1)), float(m.group(2)), float(m.group(3)))
              for m in _EPOCH_RE.finditer(text)]
    # The first log windows include start-up (cudnn autotuning, first allocations, workers).
    steady = [ips for _, ips in batches[warm_windows:]] or [ips for _, ips in batches]
    return dict(batch_lines=len(batches), epoch_lines=len(epochs),
                steady_img_s=statistics.median(steady) if steady else None,
                epoch_img_s=epochs[-1][2] if epochs else None,
                epoch_time_s=epochs[-1][1] if epochs else None)


class DeviceResident:
    """A train loader whose first batches are moved (and normalised) onto the device once and
    then served round-robin, ``len(loader)`` per epoch: the recipe without any input cost.
    Everything else (sampler, ``len``, ``set_epoch``) is the wrapped loader's."""

    def __init__(self, loader, device: torch.device, keep: int = 4) -> None:
        self.wrapped_loader = loader
        it = iter(loader)
        self.batches = [loader.prepare_batch(next(it), device) for _ in range(min(keep, len(loader)))]
        del it

    def __getattr__(self, name):
        if name.startswith("__") or name == "wrapped_loader":
            raise AttributeError(name)
        return getattr(self.wrapped_loader, name)

    def __len__(self) -> int:
        return len(self.wrapped_loader)

    def __iter__(self):
        return (self.batches[i % len(self.batches)] for i in range(len(self)))

    def prepare_batch(self, batch, device=None, non_blocking=False):
        return batch[0], batch[1]


class SyncCheck:
    """``torch.cuda.set_sync_debug_mode("error")`` over the recipe's free iterations: from
    ITERATION_STARTED of an iteration that is neither a log (``LOG_EVERY``) nor a NaN-check
    (``NAN_CHECK_EVERY``) iteration nor an epoch's last, to the next GET_BATCH_STARTED or epoch
    end, so the step and every ITERATION_COMPLETED handler run under it; any call that waits
    for the device raises. Counts the free iterations run under it."""

    def __init__(self, log_every: int, check_every: int) -> None:
        self.every = (max(1, log_every), max(1, check_every))
        self.free_iterations = 0

    def attach(self, trainer) -> None:
        from ignite.engine import Events
        trainer.add_event_handler(Events.ITERATION_STARTED, self._started)
        for event in (Events.GET_BATCH_STARTED, Events.EPOCH_COMPLETED, Events.COMPLETED):
            trainer.add_event_handler(event, self._default)
        # The first exception handler: the mode back to default before anything else runs, and
        # the exception raised on (an ignite engine with EXCEPTION_RAISED handlers swallows it
        # unless one raises).
        trainer.add_event_handler(Events.EXCEPTION_RAISED, self._reraise)
        handlers = trainer._event_handlers[Events.EXCEPTION_RAISED]
        handlers.insert(0, handlers.pop())

    def _started(self, engine) -> None:
        it, length = engine.state.iteration, engine.state.epoch_length
        free = all(it % e for e in self.every) and it % length
        if free:
            self.free_iterations += 1
        torch.cuda.set_sync_debug_mode("error" if free else "default")

    @staticmethod
    def _default(_engine=None, *_args) -> None:
        torch.cuda.set_sync_debug_mode("default")

    @staticmethod
    def _reraise(_engine, exc: BaseException) -> None:
        torch.cuda.set_sync_debug_mode("default")
        raise exc


def run_recipe(recipe: dict, device: torch.device, warm_windows: int,
               device_resident: bool = False, sync_check: Optional[SyncCheck] = None) -> dict:
    """One ``resnest-train`` run of ``recipe`` in this process (so that peak GPU memory is
    readable): its log's steady-state img/s, wall time and peak GPU memory. ``sync_check``
    (CUDA): attached to the run's trainer."""
    import yaml
    from resnest_engine import cli
    from resnest_engine.workflows import train as train_mod

    real_create = train_mod.create_loaders
    real_build_trainer = train_mod.build_trainer

    def resident_loaders(*args, **kwargs):
        tr, va, n = real_create(*args, **kwargs)
        return DeviceResident(tr, device), va, n

    def checked_trainer(*args, **kwargs):
        trainer = real_build_trainer(*args, **kwargs)
        sync_check.attach(trainer)
        return trainer

    with tempfile.TemporaryDirectory(prefix="resnest_gpu_suite_recipe_") as tmp:
        cfg_file = Path(tmp) / "recipe.yaml"
        cfg_file.write_text(yaml.safe_dump(recipe))
        outdir = Path(tmp) / "run"
        base = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)  # left over from earlier parts
        threads = torch.get_num_threads()
        t0 = time.perf_counter()
        out, err = io.StringIO(), io.StringIO()
        if device_resident:
            train_mod.create_loaders = resident_loaders
        if sync_check is not None:
            train_mod.build_trainer = checked_trainer
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = cli.main(["--config-file", str(cfg_file), "--outdir", str(outdir)])
        finally:
            train_mod.create_loaders = real_create
            train_mod.build_trainer = real_build_trainer
            if sync_check is not None:
                SyncCheck._default()
        wall = time.perf_counter() - t0
        torch.set_num_threads(threads)  # the run may set its own
        log_file = outdir / "log.txt"
        log = log_file.read_text() if log_file.exists() else out.getvalue() + err.getvalue()
        metrics_file = outdir / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else None
    # Detach the run's file handlers from the root logger (their directory is gone).
    for lg in (logging.getLogger(), logging.getLogger("resnest_engine")):
        for h in list(lg.handlers):
            if isinstance(h, logging.FileHandler):
                lg.removeHandler(h)
                h.close()
    if rc != 0:
        raise RuntimeError(f"resnest-train exited {rc}: {(err.getvalue() or log)[-500:]}")
    parsed = parse_train_log(log, warm_windows)
    if parsed["batch_lines"] == 0 or parsed["epoch_lines"] == 0:
        raise RuntimeError("no 'Batch: ...img/s' / 'Epoch: ..., Time cost' line in the log")
    resolved = [line.strip() for line in log.splitlines()
                if re.search(r"AMP|channels_last|CHANNELS_LAST|precision|Precision|prefetch",
                             line)][:4]
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    every = recipe["LOGGING"]["LOG_EVERY"]
    timed = max(0, parsed["batch_lines"] - warm_windows) * every or parsed["batch_lines"] * every
    return dict(wall_s=wall, **parsed, timed_steps=timed, img_per_s=parsed["steady_img_s"],
                peak_gpu_mem_gib=peak / 2 ** 30 if peak is not None else None,
                gpu_mem_before_run_gib=base / 2 ** 30 if base is not None else None,
                peak_gpu_mem_note=None if peak is not None else "no CUDA device (smoke run)",
                resolved_log_lines=resolved,
                val_top1=(metrics or {}).get("top1") if isinstance(metrics, dict) else None)


def decoder_difference(root: str, device: torch.device, limit: int = 64) -> dict:
    """The largest |device decode - CPU decode| over up to ``limit`` JPEGs of ``root``, in uint8
    levels (nvjpeg against libjpeg-turbo on CUDA; 0 on the CPU, where both are libjpeg-turbo)."""
    import warnings
    from torchvision.io import ImageReadMode, decode_jpeg
    files = sorted(Path(root).rglob("*.jpg"))[:limit]
    datas = [torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8) for f in files]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        on_device = decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)
        on_cpu = decode_jpeg(datas, mode=ImageReadMode.RGB)
    diffs = [(a.cpu().int() - b.int()).abs() for a, b in zip(on_device, on_cpu)]
    return dict(decoder_images=len(files),
                decoder_max_abs_diff_levels=max(int(d.max()) for d in diffs),
                decoder_mean_abs_diff_levels=sum(float(d.float().mean()) for d in diffs) / len(diffs))


def part_recipe(ctx: dict) -> dict:
    """The recipe end to end (``resnest-train``: engine, handlers, logging) at steady state:
    (a) synthetic batches already on the device, against the bare step of part ``train`` (same
    model, batch and precision): ``vs_bare_step``; (b) a generated JPEG folder through the fast
    JPEG path, decoded in the workers (``decode.cpu``) and on the device (``decode.gpu``,
    DATA.DECODE gpu: nvjpeg on CUDA), with nvjpeg's difference from libjpeg-turbo."""
    cfg, device = ctx["cfg"], ctx["device"]
    model, size, batch, steps = cfg["ours"], cfg["img_size"], cfg["recipe_batch"], cfg["recipe_steps"]
    every, warm = cfg["recipe_log_every"], cfg["recipe_warm_windows"]
    amp = "bf16" if ctx["bf16"] else "off"  # the bare step's precision, also on the CPU
    recipe = {
        "FORMAT": "resnest-engine/1", "SEED": 0,
        "MODEL": {"NAME": model, "CHANNELS_LAST": True, "COMPILE": False},
        "DATA": {"DATASET": "synthetic", "IMAGE_SIZE": size, "CROP_SIZE": size,
                 "SYNTHETIC_SIZE": batch * steps, "SYNTHETIC_CLASSES": 10,
                 "WORKERS": 0, "PREFETCH": False},
        "TRAINING": {"EPOCHS": 1, "BATCH_SIZE": batch, "TEST_BATCH_SIZE": batch,
                     "AMP": amp, "DETERMINISTIC": False},
        "OPTIMIZER": {"WARMUP_EPOCHS": 0},
        "LOGGING": {"LOG_EVERY": every, "TENSORBOARD": False, "PROGRESS_BAR": "off"},
    }
    synthetic = run_recipe(recipe, device, warm, device_resident=True)
    # The free iterations under set_sync_debug_mode("error") (CUDA only: on the CPU nothing
    # waits, which tests/workflows/test_host_sync.py checks by counting the reads instead).
    if device.type == "cuda" and ctx["part_left"]() < 2 * synthetic["wall_s"] + 15:
        sync_debug = dict(status="skipped",
                          reason=f"time budget: {ctx['part_left']():.0f} s left")
    elif device.type == "cuda":
        check = SyncCheck(every, recipe["TRAINING"].get("NAN_CHECK_EVERY", 50))
        try:
            run_recipe(recipe, device, warm, device_resident=True, sync_check=check)
            sync_debug = dict(status="passed", mode="error", free_iterations=check.free_iterations)
        except Exception as e:  # a sync on a free iteration: recorded with where it happened
            sync_debug = dict(status="failed", mode="error", free_iterations=check.free_iterations,
                              reason=f"{type(e).__name__}: {str(e)[-400:]}")
    else:
        sync_debug = dict(status="skipped", reason="no CUDA device: nothing waits on the CPU")
    bare = (((ctx.get("train_by_batch") or {}).get(str(batch)) or {})
            .get(f"ours:{model}", {}).get("img_s"))
    out = dict(model=model, img_size=size, batch=batch, steps=steps, amp=amp,
               dataset="synthetic, already on the device", **synthetic, sync_debug=sync_debug,
               bare_step_img_s=bare,
               vs_bare_step=synthetic["img_per_s"] / bare if bare and synthetic["img_per_s"] else None)
    # (b) JPEG files -> fast JPEG path (uint8 through the workers, normalised on the device),
    # decoded in the workers (cpu) or on the device (gpu: nvjpeg on CUDA; on the CPU the same
    # code with libjpeg-turbo, so the smoke run covers it).
    decode: Dict[str, dict] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="resnest_gpu_suite_jpegs_") as root:
            # every class in both splits (the smoke run has fewer images than 10 classes)
            dl_bench.make_jpeg_folder(root, cfg["recipe_jpeg_images"],
                                      classes=min(10, cfg["recipe_jpeg_images"]))
            per_epoch = cfg["recipe_jpeg_images"] // batch
            epochs = -(-steps // per_epoch)
            for kind in ("cpu", "gpu"):
                if kind == "gpu":
                    from resnest_engine.data.gpu_decode import nvjpeg_available
                    ok, why = nvjpeg_available(device)
                    if device.type == "cuda" and not ok:
                        decode[kind] = dict(status="unavailable", reason=why)
                        continue
                if ctx["part_left"]() < 15:
                    decode[kind] = dict(status="skipped",
                                        reason=f"time budget: {ctx['part_left']():.0f} s left")
                    continue
                try:
                    jpeg = json.loads(json.dumps(recipe))
                    jpeg["DATA"] = {"DATASET": "imagefolder", "ROOT": root, "FAST_JPEG": True,
                                    "DECODE": kind, "CROP_SIZE": size,
                                    "WORKERS": cfg["recipe_workers"], "PREFETCH": "auto"}
                    jpeg["TRAINING"].update(EPOCHS=epochs, VAL_EVERY=epochs)
                    res = run_recipe(jpeg, device, warm)
                    extra = decoder_difference(root, device) if kind == "gpu" else {}
                    decode[kind] = dict(
                        status="ok", images=cfg["recipe_jpeg_images"], epochs=epochs,
                        workers=cfg["recipe_workers"], **res, **extra,
                        vs_device_resident=(res["img_per_s"] / synthetic["img_per_s"]
                                            if res["img_per_s"] and synthetic["img_per_s"]
                                            else None))
                except Exception as e:  # recorded; the other slot and part (a) stand
                    traceback.print_exc()
                    decode[kind] = dict(status="error", reason=f"{type(e).__name__}: {e}")
    except Exception as e:  # the folder could not be written
        traceback.print_exc()
        for kind in ("cpu", "gpu"):
            decode.setdefault(kind, dict(status="error", reason=f"{type(e).__name__}: {e}"))
    cpu_img_s = (decode.get("cpu") or {}).get("img_per_s")
    if decode.get("gpu", {}).get("status") == "ok" and cpu_img_s:
        decode["gpu"]["vs_decode_cpu"] = decode["gpu"]["img_per_s"] / cpu_img_s
    out["jpeg"] = dict(decode=decode)
    return out


PART_FUNCS = {"train": part_train, "infer": part_infer, "jpeg_pipeline": part_jpeg_pipeline,
              "train_compiled": part_train_compiled, "recipe": part_recipe}


def run_part(name: str, ctx: dict, budget: Budget, part_budget_s: float) -> dict:
    """Run one part unless the suite's budget is spent; record status, reason and seconds."""
    if budget.left() <= 0:
        return dict(status="skipped", reason="suite time budget spent", budget_s=part_budget_s)
    t0 = time.perf_counter()
    ctx["part_left"] = lambda: min(part_budget_s - (time.perf_counter() - t0), budget.left())
    try:
        res = PART_FUNCS[name](ctx)
        status, reason = "ok", None
        models = res.get("models", {})
        if models and all(r["status"] == "skipped" for r in models.values()):
            status, reason = "skipped", next(iter(models.values()))["reason"]
        elif any(r["status"] == "skipped" for r in models.values()):
            reason = "some models skipped (time budget)"
    except Exception as e:  # recorded, the suite goes on
        traceback.print_exc()
        res, status, reason = {}, "error", f"{type(e).__name__}: {e}"
    sec = time.perf_counter() - t0
    if status == "ok" and sec > part_budget_s:
        reason = f"over its {part_budget_s:.0f} s budget ({sec:.0f} s)"
    print(f"[gpu_suite] {name}: {status} in {sec:.1f} s" + (f" ({reason})" if reason else ""),
          file=sys.stderr)
    return dict(status=status, reason=reason, seconds=sec, budget_s=part_budget_s, **res)


# --------------------------------------------------------------------------- report
def _fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def markdown(result: dict) -> str:
    env, parts = result["env"], result["parts"]
    lines = [f"# GPU suite ({result['mode']})", "",
             f"device: {env['device_name']}; torch {env['torch']}; timm {env.get('timm')}; "
             f"precision {result['precision']}, channels_last; total {result['total_s']:.0f} s"]
    if result.get("smoke_reason"):
        lines.append(f"SMOKE run ({result['smoke_reason']}): tiny sizes, the numbers are not "
                     f"benchmarks.")
    lines += ["", "| part | what | img/s | vs reference | status |", "|---|---|---:|---:|---|"]
    for part in ("train", "train_compiled", "infer"):
        p = parts[part]
        groups = ({int(b): rows for b, rows in p["by_batch"].items()} if p.get("by_batch")
                  else {p.get("batch"): p.get("models") or {}})
        if not any(groups.values()):
            lines.append(f"| {part} | - | - | - | {p['status']}: {p['reason']} |")
        for batch, models in groups.items():
          for name, r in models.items():
            what = f"{name}, batch {batch} at {p['img_size']}"
            if part == "train_compiled":
                what += f", compile ({p['compile_backend']})"
            if r.get("mfu") is not None:
                what += f", MFU {100 * r['mfu']:.1f}%"
            ratio = r.get("ratio_vs_timm")
            status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}"
            lines.append(f"| {part} | {what} | {_fmt(r.get('img_s'))} | "
                         f"{_fmt(ratio, '.2f') + 'x timm' if ratio else '-'} | {status} |")
    p = parts["train"]
    if p.get("status") == "ok":
        lines.append(f"| train | ours at batch {p.get('best_batch')}: MFU "
                     f"{_fmt(None if p.get('mfu') is None else 100 * p['mfu'])}% of "
                     f"{_fmt(p.get('peak_bf16_tflops'), '.0f')} bf16 TFLOP/s, "
                     f"{_fmt(None if not p.get('flops_per_image') else p['flops_per_image'] / 1e9)}"
                     f" GFLOP/image (fwd+bwd); {_fmt(p.get('vs_calibration'), '.2f')}x "
                     f"{p['calibration']['model']} | {_fmt(p.get('img_per_s'))} | "
                     f"{_fmt(p.get('vs_timm'), '.2f')}x timm | ok |")
    p = parts["train_compiled"]
    if p.get("fastest_mode"):
        lines.append(f"| train_compiled | fastest mode: {p['fastest_mode']} "
                     f"(`{p['recipe_setting']}`) | {_fmt(p.get('img_per_s'))} | "
                     f"{_fmt(p.get('vs_eager'), '.2f')}x eager | ok |")
    p = parts["jpeg_pipeline"]
    if p["status"] == "ok":
        for name, r in p["pipelines"].items():
            ratio = (f"{p['speedup_vs_torchvision']:.2f}x torchvision" if name.startswith("ours")
                     else "1.00x")
            lines.append(f"| jpeg_pipeline | {name}, {p['images']} JPEGs, batch {p['batch']}, "
                         f"{p['workers']} workers | {r['img_s']:.1f} | {ratio} | ok |")
    else:
        lines.append(f"| jpeg_pipeline | - | - | - | {p['status']}: {p['reason']} |")
    p = parts["recipe"]
    if p["status"] == "ok":
        mem = (f"peak GPU memory {p['peak_gpu_mem_gib']:.2f} GiB" if p["peak_gpu_mem_gib"]
               is not None else "no GPU memory (CPU)")
        lines.append(f"| recipe | resnest-train {p['model']} at {p['img_size']}, batch "
                     f"{p['batch']}, {p['steps']} steps, data on the device, steady state over "
                     f"{p['timed_steps']} steps (epoch {_fmt(p['epoch_img_s'])} img/s, "
                     f"{_fmt(p['epoch_time_s'])} s); {mem} | {_fmt(p['steady_img_s'])} | "
                     f"{_fmt(p.get('vs_bare_step'), '.2f')}x bare step | ok |")
        for kind, d in p["jpeg"]["decode"].items():
            if d.get("status") == "ok":
                diff = (f"; decoders differ by at most {d['decoder_max_abs_diff_levels']} "
                        f"levels" if "decoder_max_abs_diff_levels" in d else "")
                lines.append(f"| recipe | JPEG folder ({d['images']} JPEGs, fast path, DECODE "
                             f"{kind}, {d['workers']} workers), steady state over "
                             f"{d['timed_steps']} steps{diff} | {_fmt(d['img_per_s'])} | "
                             f"{_fmt(d.get('vs_device_resident'), '.2f')}x data on the device "
                             f"| ok |")
            else:
                lines.append(f"| recipe | JPEG folder, DECODE {kind} | - | - | "
                             f"{d['status']}: {d.get('reason')} |")
    else:
        lines.append(f"| recipe | - | - | - | {p['status']}: {p['reason']} |")
    lines += ["", "| part | seconds | budget (s) |", "|---|---:|---:|"]
    for name in PARTS:
        lines.append(f"| {name} | {_fmt(parts[name].get('seconds'))} | "
                     f"{_fmt(parts[name].get('budget_s'), '.0f')} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="output/bench-gpu", help="folder for gpu_suite.json/.md")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (automatic without CUDA)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"subset of {','.join(PARTS)}")
    p.add_argument("--budget-s", type=float, default=None, help="total time budget (seconds)")
    p.add_argument("--json", default=None, help="results file (a GPU run's default: "
                   "benchmarks/results/gpu_suite.json; a smoke run writes none unless given)")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    cuda = torch.cuda.is_available()
    smoke_reason = None
    if args.smoke:
        smoke_reason = "--smoke"
    elif not cuda:
        smoke_reason = "CUDA unavailable: smoke mode"
        print("[gpu_suite] CUDA is not available: running the SMOKE mode (tiny sizes)",
              file=sys.stderr)
    cfg = dict(SMOKE if smoke_reason else GPU)
    if args.budget_s:
        cfg["total_budget_s"] = args.budget_s
    wanted = [s.strip() for s in args.parts.split(",") if s.strip()]
    unknown = set(wanted) - set(PARTS)
    if unknown:
        p.error(f"unknown parts: {sorted(unknown)}")
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # bf16 autocast on CUDA (when supported) and in the CPU smoke run (exercises the same code).
    bf16 = (torch.cuda.is_bf16_supported() if cuda else True)
    precision = "bf16 autocast" if bf16 else "fp32"
    budget = Budget(cfg["total_budget_s"])
    device_name = torch.cuda.get_device_name(device) if cuda else "CPU"
    ctx = dict(cfg=cfg, device=device, bf16=bf16, precision=precision,
               peak_tflops=bf16_peak_tflops(device_name) if cuda else None)
    ctx["models"] = build_pair(cfg, device)
    try:
        import timm
        timm_version = timm.__version__
    except ImportError:  # pragma: no cover
        timm_version = None
    env = dict(device_name=torch.cuda.get_device_name(device) if cuda else
               f"CPU ({platform.processor() or platform.machine()})",
               device=str(device), torch=torch.__version__, cuda=torch.version.cuda,
               timm=timm_version, python=platform.python_version(),
               threads=torch.get_num_threads(), peak_bf16_tflops=ctx["peak_tflops"],
               peak_note=None if ctx["peak_tflops"] else "peak unknown: MFU is null")
    parts: Dict[str, dict] = {}
    for name in PARTS:
        if name not in wanted:
            parts[name] = dict(status="skipped", reason="not in --parts")
            continue
        part_budget = cfg["budget_s"][name]
        if part_budget is None:  # compile: whatever the suite has left, less the recipe's share
            reserve = cfg["budget_s"]["recipe"] if "recipe" in wanted else 0.0
            part_budget = max(0.0, budget.left() - reserve)
        parts[name] = run_part(name, ctx, budget, part_budget)
        if name == "infer":
            ctx.pop("models")  # free the eager pair before the compiled one
            if cuda:
                torch.cuda.empty_cache()
    result = dict(mode="smoke" if smoke_reason else "gpu", smoke_reason=smoke_reason,
                  precision=precision, env=env,
                  config={k: v for k, v in cfg.items()}, parts=parts,
                  total_s=time.perf_counter() - t_start)
    table = markdown(result)
    result = record.result("gpu_suite", (
        f"{'SMOKE run, not a benchmark: ' if smoke_reason else ''}steady-state img/s of "
        f"{cfg['ours']} vs timm {cfg['timm']} and timm {cfg['calib']} (train batches "
        f"{'/'.join(map(str, cfg['train_batches']))} eager, with MFU; torch.compile modes; "
        f"inference batch {cfg['infer_batch']}; {precision}, channels_last, {cfg['img_size']} px), "
        f"the JPEG pipeline vs torchvision ({cfg['jpeg_images']} JPEGs, {cfg['jpeg_workers']} "
        f"workers) and {cfg['recipe_steps']}-step resnest-train runs (data on the device; JPEG "
        f"folder, CPU decoding), on {env['device_name']}"), result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_suite.json").write_text(json.dumps(result, indent=2, default=str))
    if args.json or not smoke_reason:
        record.write_file(result, args.json)
    (out / "gpu_suite.md").write_text(table)
    print(table)
    print(f"wrote {out / 'gpu_suite.json'} and {out / 'gpu_suite.md'}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
