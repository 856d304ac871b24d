"""GPU benchmark suite: one command, under 8 minutes on one CUDA GPU, one JSON + one markdown table.

    python benchmarks/gpu_suite.py --out output/bench-gpu        # (make bench-gpu)
    python benchmarks/gpu_suite.py --out /tmp/smoke --smoke      # tiny sizes, any machine

A GPU run also writes its JSON (with the machine) to ``benchmarks/results/gpu_suite.json``, which
``python -m benchmarks.report`` turns into docs/benchmarks.md's table (``--json PATH``: elsewhere);
a smoke run writes only into ``--out`` unless ``--json`` is given.

Parts (each has a time budget; a part over budget, or one that fails, is recorded with its
status and reason and the suite moves on):

1. ``train``: training img/s of our ``resnest50`` vs timm's ``resnest50d`` (identical weights),
   bf16 autocast + channels_last, eager; SGD step, warm-up steps then timed steps between
   ``torch.cuda.synchronize`` calls, models interleaved per trial, median reported.
2. ``infer``: inference img/s (eval, ``no_grad``, bf16 autocast, channels_last), same models.
3. ``jpeg_pipeline``: files -> normalised float batch on the GPU: our fast JPEG path (uint8
   through the workers and the host-to-device copy, normalisation on the GPU with
   ``loader.batch_transform``) vs torchvision's classification reference (normalise in the
   workers, float copy); JPEGs generated into a temporary folder (``benchmarks/dataloader.py``).
4. ``train_compiled``: part 1 with ``torch.compile``; a model whose compile would not fit the
   remaining budget is skipped with a note (runs after parts 1-3 so that it cannot starve them).
5. ``recipe``: a short end-to-end ``resnest-train`` run in-process (synthetic data, resnest50 at
   224, bf16/channels_last resolved by ``auto``), img/s parsed from its log and peak GPU memory
   (``torch.cuda.max_memory_allocated``).

Without CUDA (or with ``--smoke``) the same code runs at tiny sizes (resnest14 at 32 px, batch
2, 2 timed steps, 8 JPEGs, a 1-epoch synthetic recipe, ``torch.compile`` with the cheap
``eager`` backend) in well under a minute, writing the same JSON/markdown shape: the test suite
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

# Sizes and per-part time budgets (seconds). GPU: total budget 450 s of the 8 minutes, leaving
# room for start-up (imports, CUDA context) and the JSON/markdown.
GPU = dict(ours="resnest50", timm="resnest50d", img_size=224, train_batch=128, infer_batch=256,
           warmup=5, iters=10, trials=3, jpeg_images=512, jpeg_batch=64, jpeg_workers=8,
           jpeg_trials=3, recipe_steps=40, recipe_batch=128, recipe_workers=8,
           compile_backend="inductor", compile_estimate_s=120.0, total_budget_s=450.0,
           budget_s=dict(train=90.0, infer=40.0, jpeg_pipeline=90.0, train_compiled=None,
                         recipe=120.0))
SMOKE = dict(ours="resnest14", timm="resnest14d", img_size=32, train_batch=2, infer_batch=2,
             warmup=1, iters=2, trials=1, jpeg_images=8, jpeg_batch=4, jpeg_workers=0,
             jpeg_trials=1, recipe_steps=4, recipe_batch=4, recipe_workers=0,
             compile_backend="eager", compile_estimate_s=15.0, total_budget_s=100.0,
             budget_s=dict(train=20.0, infer=10.0, jpeg_pipeline=20.0, train_compiled=None,
                           recipe=30.0))


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
    """Ours and timm's twin with identical (seeded, BN-randomised) weights, channels_last."""
    torch.manual_seed(0)
    twin = mt.build(f"timm:{cfg['timm']}")
    mt.randomise_norms(twin)
    ours = mt.build(f"ours:{cfg['ours']}")
    ours.load_state_dict(twin.state_dict(), strict=True)
    models = {f"ours:{cfg['ours']}": ours, f"timm:{cfg['timm']}": twin}
    for m in models.values():
        m.to(device=device, memory_format=torch.channels_last)
    return models


def throughput(models: Dict[str, torch.nn.Module], mode: str, batch: int, cfg: dict,
               device: torch.device, bf16: bool, compile_backend: Optional[str] = None,
               deadline: Optional[Callable[[], float]] = None) -> Dict[str, dict]:
    """img/s of each model in ``mode`` ('train' or 'infer'): warm-up, then ``trials`` rounds of
    ``iters`` timed steps (models interleaved, order rotated); median over trials.

    With ``compile_backend`` each model is ``torch.compile``d first; a model is skipped when
    ``deadline()`` (seconds left) is below the config's compile estimate."""
    size = cfg["img_size"]
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
    steps, rows = {}, {}
    for name, model in models.items():
        if compile_backend and deadline is not None and deadline() < cfg["compile_estimate_s"]:
            rows[name] = dict(status="skipped", reason=(
                f"time budget: {deadline():.0f} s left, compile needs about "
                f"{cfg['compile_estimate_s']:.0f} s"))
            continue
        fn = torch.compile(model, backend=compile_backend) if compile_backend else model

        def forward(inp, fn=fn):
            with autocast(device, bf16):
                return fn(inp).float()

        steps[name] = mt.make_steps(model, forward, x, y)[mode]
        t0 = time.perf_counter()
        for _ in range(max(cfg["warmup"], 1)):
            steps[name]()
        sync(device)
        rows[name] = dict(status="ok", warmup_s=time.perf_counter() - t0, img_s_trials=[])
    names = list(steps)
    for trial in range(cfg["trials"]):
        k = trial % max(len(names), 1)
        for name in names[k:] + names[:k]:
            dt = mt.time_steps(steps[name], cfg["iters"], device)
            rows[name]["img_s_trials"].append(batch * cfg["iters"] / dt)
    for name in names:
        rows[name]["img_s"] = statistics.median(rows[name]["img_s_trials"])
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
    cfg, device = ctx["cfg"], ctx["device"]
    rows = throughput(ctx["models"], "train", cfg["train_batch"], cfg, device, ctx["bf16"])
    return dict(batch=cfg["train_batch"], img_size=cfg["img_size"], precision=ctx["precision"],
                channels_last=True, compile=False, models=rows)


def part_infer(ctx: dict) -> dict:
    cfg, device = ctx["cfg"], ctx["device"]
    rows = throughput(ctx["models"], "infer", cfg["infer_batch"], cfg, device, ctx["bf16"])
    return dict(batch=cfg["infer_batch"], img_size=cfg["img_size"], precision=ctx["precision"],
                channels_last=True, compile=False, models=rows)


def part_train_compiled(ctx: dict) -> dict:
    cfg, device = ctx["cfg"], ctx["device"]
    # Fresh models: the eager parts' optimizer steps changed the weights (harmless for speed,
    # but a fresh pair keeps the two compiled runs' inputs identical).
    models = build_pair(cfg, device)
    rows = throughput(models, "train", cfg["train_batch"], cfg, device, ctx["bf16"],
                      compile_backend=cfg["compile_backend"], deadline=ctx["part_left"])
    del models
    torch._dynamo.reset()  # drop the compiled graphs (and the models they hold) before the recipe
    gc.collect()
    return dict(batch=cfg["train_batch"], img_size=cfg["img_size"], precision=ctx["precision"],
                channels_last=True, compile=True, compile_backend=cfg["compile_backend"],
                models=rows)


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


def parse_train_log(text: str) -> dict:
    """The ``Batch: N| ... X img/s`` and ``Epoch: N, Time cost: T | ... X img/s`` lines."""
    batches = [(int(m.group(1)), float(m.group(2))) for m in _BATCH_RE.finditer(text)]
    epochs = [(int(m.group(1)), float(m.group(2)), float(m.group(3)))
              for m in _EPOCH_RE.finditer(text)]
    # The first log window includes start-up (cudnn autotuning, first allocations).
    steady = [ips for _, ips in batches[1:]] or [ips for _, ips in batches]
    return dict(batch_lines=len(batches), epoch_lines=len(epochs),
                steady_img_s=statistics.median(steady) if steady else None,
                epoch_img_s=epochs[-1][2] if epochs else None,
                epoch_time_s=epochs[-1][1] if epochs else None)


def part_recipe(ctx: dict) -> dict:
    """A short ``resnest-train`` run in this process (so that peak GPU memory is readable)."""
    import yaml
    from resnest_engine import cli

    cfg, device = ctx["cfg"], ctx["device"]
    model, size, batch, steps = cfg["ours"], cfg["img_size"], cfg["recipe_batch"], cfg["recipe_steps"]
    log_every = max(1, steps // 8)
    recipe = {
        "FORMAT": "resnest-engine/1", "SEED": 0,
        "MODEL": {"NAME": model, "CHANNELS_LAST": "auto", "COMPILE": False},
        "DATA": {"DATASET": "synthetic", "IMAGE_SIZE": size, "CROP_SIZE": size,
                 "SYNTHETIC_SIZE": batch * steps, "SYNTHETIC_CLASSES": 10,
                 "WORKERS": cfg["recipe_workers"]},
        "TRAINING": {"EPOCHS": 1, "BATCH_SIZE": batch, "TEST_BATCH_SIZE": batch,
                     "AMP": "auto", "DETERMINISTIC": False},
        "OPTIMIZER": {"WARMUP_EPOCHS": 0},
        "LOGGING": {"LOG_EVERY": log_every, "TENSORBOARD": False, "PROGRESS_BAR": "off"},
    }
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
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(["--config-file", str(cfg_file), "--outdir", str(outdir)])
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
    parsed = parse_train_log(log)
    if parsed["batch_lines"] == 0 or parsed["epoch_lines"] == 0:
        raise RuntimeError("no 'Batch: ...img/s' / 'Epoch: ..., Time cost' line in the log")
    resolved = [line.strip() for line in log.splitlines()
                if re.search(r"AMP|channels_last|CHANNELS_LAST|precision", line)][:4]
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return dict(model=model, img_size=size, batch=batch, steps=steps, dataset="synthetic",
                wall_s=wall, **parsed,
                peak_gpu_mem_gib=peak / 2 ** 30 if peak is not None else None,
                gpu_mem_before_run_gib=base / 2 ** 30 if base is not None else None,
                peak_gpu_mem_note=None if peak is not None else "no CUDA device (smoke run)",
                resolved_log_lines=resolved,
                val_top1=(metrics or {}).get("top1") if isinstance(metrics, dict) else None)


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
        models = p.get("models") or {}
        if not models:
            lines.append(f"| {part} | - | - | - | {p['status']}: {p['reason']} |")
        for name, r in models.items():
            what = f"{name}, batch {p['batch']} at {p['img_size']}"
            if part == "train_compiled":
                what += f", compile ({p['compile_backend']})"
            ratio = r.get("ratio_vs_timm")
            status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}"
            lines.append(f"| {part} | {what} | {_fmt(r.get('img_s'))} | "
                         f"{_fmt(ratio, '.2f') + 'x timm' if ratio else '-'} | {status} |")
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
                     f"{p['batch']}, {p['steps']} steps (epoch {_fmt(p['epoch_img_s'])} img/s, "
                     f"{_fmt(p['epoch_time_s'])} s); {mem} | {_fmt(p['steady_img_s'])} | - | ok |")
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
    ctx = dict(cfg=cfg, device=device, bf16=bf16, precision=precision)
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
               threads=torch.get_num_threads())
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
        f"{'SMOKE run, not a benchmark: ' if smoke_reason else ''}img/s of {cfg['ours']} vs timm "
        f"{cfg['timm']} (train batch {cfg['train_batch']}, eager and compiled; inference batch "
        f"{cfg['infer_batch']}; {precision}, channels_last, {cfg['img_size']} px), the JPEG "
        f"pipeline vs torchvision ({cfg['jpeg_images']} JPEGs, {cfg['jpeg_workers']} workers) and "
        f"a {cfg['recipe_steps']}-step resnest-train run, on {env['device_name']}"), result)
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
