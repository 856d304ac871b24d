"""Training / inference throughput of our models against timm and torchvision.

Example (fp32 eager, CPU or the first GPU; writes ``benchmarks/results/model_throughput.json``,
``--json PATH`` writes elsewhere)::

    python benchmarks/model_throughput.py --batch-size 16 --img-size 224 --trials 5

Models are given as ``lib:name`` with lib one of ``ours``, ``timm``, ``tv`` (torchvision); a bare
name means ours. A training step is forward + cross-entropy + backward + SGD step; inference is
a forward under ``torch.no_grad``. The models are interleaved inside every trial (round robin,
starting position rotated per trial) so that load on a shared machine hits all of them alike,
and the median over trials is reported, with two ratios against the reference: the ratio of
the medians and the median of the per-trial (paired) ratios. Each of our models that has a timm/torchvision twin is
given the twin's weights (so both run on identical numbers) and the logits are compared; the
largest relative error is in the JSON.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.record import write_result  # noqa: E402
from resnest_engine.models import get_model  # noqa: E402

DEFAULT_MODELS = "ours:resnest50,timm:resnest50d,tv:resnet50,timm:resnet50d"
DEFAULT_REFERENCE = "timm:resnest50d"

# Our variant -> the same architecture elsewhere (state_dicts load strictly both ways).
TWINS = {
    "resnest14": "timm:resnest14d", "resnest26": "timm:resnest26d",
    "resnest50": "timm:resnest50d", "resnest101": "timm:resnest101e",
    "resnest200": "timm:resnest200e", "resnest269": "timm:resnest269e",
    "resnest50_fast_4s2x40d": "timm:resnest50d_4s2x40d",
    "resnest50_fast_1s4x24d": "timm:resnest50d_1s4x24d",
    "resnet50d": "timm:resnet50d", "resnet50": "tv:resnet50",
}


def parse_spec(spec: str) -> tuple:
    lib, _, name = spec.partition(":")
    if not name:
        lib, name = "ours", lib
    lib = {"torchvision": "tv"}.get(lib, lib)
    if lib not in ("ours", "timm", "tv"):
        raise SystemExit(f"unknown library in {spec!r}: use ours:, timm: or tv:")
    return lib, name


def build(spec: str) -> nn.Module:
    lib, name = parse_spec(spec)
    if lib == "ours":
        return get_model(name)
    if lib == "timm":
        import timm
        return timm.create_model(name, pretrained=False)
    import torchvision
    return getattr(torchvision.models, name)(weights=None)


@torch.no_grad()
def randomise_norms(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN parameters/statistics, so eval-mode logits exercise everything."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 0.5 + 0.25)
            m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-12)).item()


def check_numerics(model: nn.Module, twin: nn.Module, device, img_size: int) -> Dict[str, float]:
    """Max relative error of ``model``'s logits against ``twin``'s (same weights), eval and
    train mode."""
    model.to(device), twin.to(device)
    x = torch.randn(4, 3, img_size, img_size, generator=torch.Generator().manual_seed(0)).to(device)
    out = {}
    with torch.no_grad():
        for mode in ("eval", "train"):
            model.train(mode == "train"), twin.train(mode == "train")
            out[f"logits_max_rel_err_{mode}"] = rel_err(model(x), twin(x))
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_steps(model: nn.Module, compiled: Callable, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def train_step():
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(compiled(x), y)
        loss.backward()
        opt.step()

    def infer_step():
        model.eval()
        with torch.no_grad():
            compiled(x)

    return {"train": train_step, "infer": infer_step}


def time_steps(step: Callable, iters: int, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync(device)
    return time.perf_counter() - t0


def markdown_table(rows: List[dict], modes: List[str], reference: str) -> str:
    head = ["model", "params (M)"]
    for m in modes:
        head += [f"{m} img/s (median)", f"{m} min-max"]
    for m in modes:
        head += [f"{m} vs {reference} (medians / paired)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], f"{r['params_m']:.2f}"]
        for m in modes:
            cells += [f"{r[m]['median_img_s']:.2f}",
                      f"{r[m]['min_img_s']:.2f}-{r[m]['max_img_s']:.2f}"]
        for m in modes:
            cells += [f"{r[m]['ratio_vs_reference']:.3f} / {r[m]['paired_ratio_vs_reference']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=DEFAULT_MODELS,
                   help=f"comma-separated lib:name (default {DEFAULT_MODELS})")
    p.add_argument("--reference", default=DEFAULT_REFERENCE,
                   help="model the ratios are relative to (must be in --models)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--trials", type=int, default=5, help="timed trials (>= 5), median reported")
    p.add_argument("--iters", type=int, default=2, help="steps per model per trial")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model and mode")
    p.add_argument("--mode", choices=("train", "infer", "both"), default="both")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile every model")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    p.add_argument("--allow-few-trials", action="store_true",
                   help="accept --trials < 5 (development only; results are marked)")
    p.add_argument("--skip-numerics", action="store_true")
    p.add_argument("--json", default=None,
                   help="results file (default benchmarks/results/model_throughput.json)")
    args = p.parse_args(argv)
    if args.trials < 5 and not args.allow_few_trials:
        p.error("--trials must be >= 5 (use --allow-few-trials while developing)")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    specs = [s.strip() for s in args.models.split(",") if s.strip()]
    specs = [f"{lib}:{name}" for lib, name in map(parse_spec, specs)]
    reference = "{}:{}".format(*parse_spec(args.reference))
    if reference not in specs:
        p.error(f"--reference {reference} is not among --models")
    modes = ["train", "infer"] if args.mode == "both" else [args.mode]
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format

    # Same treatment for every model: seeded init, then randomised BN parameters/statistics
    # (timm zero-inits the last BN of each block, which would zero most gradients and make the
    # comparison unrepresentative). Our models with a twin then take the twin's exact weights.
    models: Dict[str, nn.Module] = {}
    for spec in specs:
        torch.manual_seed(0)
        models[spec] = build(spec)
        randomise_norms(models[spec])
    numerics: Dict[str, dict] = {}
    for spec in specs:
        lib, name = parse_spec(spec)
        twin_spec = TWINS.get(name) if lib == "ours" else None
        if not twin_spec:
            continue
        if twin_spec in models:
            twin = models[twin_spec]
        else:
            torch.manual_seed(0)
            twin = build(twin_spec)
            randomise_norms(twin)
        twin_state = {k: v.clone() for k, v in twin.state_dict().items()}
        models[spec].load_state_dict(twin_state, strict=True)
        if not args.skip_numerics:
            numerics[spec] = dict(reference=twin_spec, **check_numerics(
                models[spec], twin, device, min(args.img_size, 224)))
        # The train-mode check updated running statistics: restore both.
        models[spec].load_state_dict(twin_state)
        twin.load_state_dict(twin_state)
    for spec, model in models.items():
        model.to(device=device, memory_format=memory_format)

    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)
    x = x.contiguous(memory_format=memory_format)
    y = torch.randint(0, 1000, (args.batch_size,), device=device)
    steps = {}
    compile_s = {}
    for spec, model in models.items():
        fn = model
        if args.compile:
            fn = torch.compile(model)
        steps[spec] = make_steps(model, fn, x, y)
        # Warm up (and compile) each mode.
        for mode in modes:
            t0 = time.perf_counter()
            for _ in range(max(args.warmup, 1)):
                steps[spec][mode]()
            sync(device)
            compile_s[(spec, mode)] = time.perf_counter() - t0
            print(f"warmup {spec} {mode}: {compile_s[(spec, mode)]:.1f}s", file=sys.stderr)

    times: Dict[str, Dict[str, List[float]]] = {s: {m: [] for m in modes} for s in specs}
    for trial in range(args.trials):
        order = specs[trial % len(specs):] + specs[:trial % len(specs)]
        for mode in modes:
            for spec in order:
                dt = time_steps(steps[spec][mode], args.iters, device)
                times[spec][mode].append(args.batch_size * args.iters / dt)
        print(f"trial {trial + 1}/{args.trials}: " + ", ".join(
            f"{s} {m} {times[s][m][-1]:.1f}" for s in specs for m in modes), file=sys.stderr)

    rows = []
    for spec in specs:
        row = {"model": spec,
               "params_m": sum(p.numel() for p in models[spec].parameters()) / 1e6}
        for mode in modes:
            t = times[spec][mode]
            row[mode] = {"median_img_s": statistics.median(t), "min_img_s": min(t),
                         "max_img_s": max(t), "trials_img_s": t,
                         "warmup_s": compile_s[(spec, mode)]}
        rows.append(row)
    ref_row = next(r for r in rows if r["model"] == reference)
    for row in rows:
        for mode in modes:
            row[mode]["ratio_vs_reference"] = row[mode]["median_img_s"] / ref_row[mode]["median_img_s"]
            # Paired: both ran in the same trial, seconds apart, so machine-wide load drifts
            # between trials cancel. The more robust comparison on a shared machine.
            row[mode]["paired_ratio_vs_reference"] = statistics.median(
                a / b for a, b in zip(row[mode]["trials_img_s"], ref_row[mode]["trials_img_s"]))
    table = markdown_table(rows, modes, reference)
    config = dict(batch_size=args.batch_size, img_size=args.img_size, trials=args.trials,
                  iters=args.iters, warmup=args.warmup, channels_last=args.channels_last,
                  compile=args.compile, mode=args.mode, threads=torch.get_num_threads(),
                  device=str(device), reference=reference)
    env = dict(torch=torch.__version__, python=platform.python_version(),
               machine=platform.machine(), processor=platform.processor(),
               cpu_count=os.cpu_count(),
               gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None)
    try:
        import timm
        env["timm"] = timm.__version__
    except ImportError:
        pass
    print(f"\n{'compiled' if args.compile else 'eager'}, "
          f"{'channels_last' if args.channels_last else 'NCHW'}, fp32, batch {args.batch_size}, "
          f"{args.img_size}px, {args.trials} trials x {args.iters} steps, "
          f"{torch.get_num_threads()} threads, {device}"
          + (f" ({env['gpu']})" if env["gpu"] else ""))
    print(table)
    for spec, n in numerics.items():
        print(f"numerics {spec} vs {n['reference']} (its weights loaded): max rel err logits "
              f"eval {n['logits_max_rel_err_eval']:.2e}, train {n['logits_max_rel_err_train']:.2e}")
    result = dict(config=config, env=env, results=rows, numerics=numerics, table=table)
    return write_result("model_throughput", (
        f"{'+'.join(modes)} img/s of {', '.join(specs)} against {reference}, "
        f"{'compiled' if args.compile else 'eager'}, "
        f"{'channels_last' if args.channels_last else 'NCHW'}, fp32, batch {args.batch_size} at "
        f"{args.img_size}, {device}, {torch.get_num_threads()} thread(s), median of "
        f"{args.trials} interleaved trials x {args.iters} steps"), result, args.json)


if __name__ == "__main__":
    main()
