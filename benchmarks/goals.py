"""The benchmarks' goals: one threshold on one number computed from results files.

``python -m benchmarks.report`` renders a row per goal (docs/benchmarks.md's goals table; those
with ``readme=True`` also in README.md's), and "met?" is ``value <op> threshold`` on the
number as the files hold it (not as rounded for the table).
"""
from __future__ import annotations

import operator
import statistics
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

OPS = {"<=": operator.le, ">=": operator.ge}


def ratio(v: float) -> str:
    return f"{v:.3f}x"


def ratio2(v: float) -> str:
    return f"{v:.2f}x"


def times_less(v: float) -> str:
    """A blocking ratio: whole numbers from 10x up, one decimal below."""
    return f"{v:.0f}x" if v >= 10 else f"{v:.1f}x"


def percent(v: float) -> str:
    return f"{v:.2f}%"


def _model_ratio(results: Dict[str, dict], stem: str) -> Optional[float]:
    rows = results[stem]["results"]
    return next(r["train"]["ratio_vs_reference"] for r in rows if r["model"] == "ours:resnest50")


def _median_run_key(results, stem, key):
    return statistics.median(r[key] for r in results[stem]["runs"])


def _digits_min(results, stem, own_split: bool):
    return min(r["top1"] for r in results[stem]["runs"] if (r["split_seed"] == 0) == own_split)


def _least_blocking(results, stem):
    return min(c["ratio"] for c in results[stem]["cases"])


def _stress(results, stems):
    return (sum(results[s]["identical"] for s in stems) / sum(results[s]["runs"] for s in stems))


def _stress_shown(results, stems):
    ident = sum(results[s]["identical"] for s in stems)
    runs = sum(results[s]["runs"] for s in stems)
    return f"{ident}/{runs} runs"


def _case_ratio(results, stem, case, of):
    """img/s of ``case`` / img/s of ``of`` in a file with ``cases: [{name, img_per_s}]``."""
    speed = {c["name"]: c["img_per_s"] for c in results[stem]["cases"]}
    return speed[case] / speed[of]


@dataclass(frozen=True)
class Goal:
    what: str  # docs/benchmarks.md's goals table
    short: str  # README.md's table
    files: Tuple[str, ...]  # results files (stems in benchmarks/results/) the number comes from
    section: str  # the docs/benchmarks.md heading (anchor) with the details
    metric: str  # what the number is
    op: str  # "<=" or ">="
    threshold: float
    value: Callable[[Dict[str, dict]], float]  # {stem: results file} -> the number
    fmt: Callable[[float], str]
    readme: bool = True
    shown: Optional[Callable[[Dict[str, dict]], str]] = None  # the measured cell, if not fmt(value)
    # True while the results file awaits its first measurement (on a quiet machine): the row
    # says so instead of a number. Remove it when the file is committed (a test checks).
    awaiting: bool = False

    @property
    def unit(self) -> str:
        return {ratio: "x", ratio2: "x", times_less: "x", percent: "%"}.get(self.fmt, "")

    @property
    def goal(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}{self.unit}"

    def met(self, value: float) -> bool:
        return OPS[self.op](value, self.threshold)


GOALS = (
    Goal("resnest50 training step vs timm `resnest50d`, fp32 eager NCHW, batch 16 at 224, CPU",
         "resnest50 training step vs timm `resnest50d`", ("model_throughput",),
         "model-throughput", "no slower: ours / timm, median img/s", ">=", 1.0,
         lambda r: _model_ratio(r, "model_throughput"), ratio),
    Goal("the same, channels_last + `torch.compile`", "the same, compiled",
         ("model_throughput-compiled",), "model-throughput",
         "no slower: ours / timm, median img/s", ">=", 1.0,
         lambda r: _model_ratio(r, "model_throughput-compiled"), ratio, readme=False),
    Goal("trainer + standard handlers vs a hand-written loop doing the same work (resnest14, "
         "32x32, batch 64)", "trainer + standard handlers vs a hand-written loop",
         ("engine_overhead",), "engine-overhead", "ours / hand-written, median wall time", "<=",
         1.03, lambda r: r["engine_overhead"]["ratio"], lambda v: f"{v:.4f}"),
    Goal("JPEG files -> normalised float batch of 64 at 224, our fast path vs torchvision's "
         "reference, 2 workers, 1 main-process thread",
         "JPEG input pipeline vs torchvision's reference (1 main thread)", ("dataloader",),
         "loading-throughput", "ours / torchvision, median img/s", ">=", 1.5,
         lambda r: r["dataloader"]["speedup_vs_torchvision"], ratio2),
    Goal("the same, 2 main-process threads", "the same, 2 main threads",
         ("dataloader-2threads",), "loading-throughput", "ours / torchvision, median img/s", ">=",
         1.5, lambda r: r["dataloader-2threads"]["speedup_vs_torchvision"], ratio2),
    Goal("quick start (digits recipe, PNG folder) vs timm's bare loop at our hyperparameters, the "
         "same epochs and validations, ours writing its checkpoints, logs and metrics",
         "quick start vs timm's bare loop at our hyperparameters", ("quickstart",),
         "quick-start-against-timm", "median ours / timm wall time", "<=", 0.95,
         lambda r: _median_run_key(r, "quickstart", "ratio_vs_timm_recipe"), ratio),
    Goal("the same, rerun under load from other jobs (stopped after 2 seeds)",
         "the same, under load", ("quickstart-under-load",), "quick-start-against-timm",
         "median ours / timm wall time", "<=", 0.95,
         lambda r: _median_run_key(r, "quickstart-under-load", "ratio_vs_timm_recipe"), ratio),
    Goal("quick start vs timm `train.py` defaults (what a timm user runs)",
         "quick start vs timm `train.py` defaults", ("quickstart",), "quick-start-against-timm",
         "largest ours / timm wall time", "<=", 0.5,
         lambda r: max(x["ratio_vs_timm_trainpy"] for x in r["quickstart"]["runs"]), ratio,
         readme=False),
    Goal("quick start top-1 on the PNG folder", "quick start top-1 (PNG folder)",
         ("quickstart",), "quick-start-against-timm", "smallest top-1 over seeds", ">=", 99.0,
         lambda r: min(x["ours_top1"] for x in r["quickstart"]["runs"]), percent, readme=False),
    Goal("`recipes/digits.yaml` top-1 on its own split, seeds 0-4",
         "digits recipe top-1, seeds 0-4", ("digits_accuracy",),
         "accuracy-over-seeds-and-splits", "smallest top-1", ">=", 99.0,
         lambda r: _digits_min(r, "digits_accuracy", True), percent),
    Goal("`recipes/digits.yaml` top-1 on other train/val splits (`DATA.SPLIT_SEED` 1-5), SEED 0",
         "digits recipe top-1, other train/val splits", ("digits_accuracy",),
         "accuracy-over-seeds-and-splits", "smallest top-1", ">=", 99.0,
         lambda r: _digits_min(r, "digits_accuracy", False), percent),
    Goal("training-thread time blocked per checkpoint save, on the training thread / with the "
         "background writer, state on CUDA", "checkpoint stall, background writer (CUDA)",
         ("checkpoint_stall-cuda",), "checkpoint-stall", "less blocking, smaller of the 2 cases",
         ">=", 5.0, lambda r: _least_blocking(r, "checkpoint_stall-cuda"), times_less),
    Goal("the same, state in host memory, 2 threads", "checkpoint stall, background writer (CPU)",
         ("checkpoint_stall-2threads",), "checkpoint-stall",
         "less blocking, smaller of the 2 cases", ">=", 5.0,
         lambda r: _least_blocking(r, "checkpoint_stall-2threads"), times_less),
    Goal("the same, state in host memory, 1 thread", "the same, 1 thread",
         ("checkpoint_stall",), "checkpoint-stall", "less blocking, smaller of the 2 cases", ">=",
         5.0, lambda r: _least_blocking(r, "checkpoint_stall"), times_less, readme=False),
    Goal("tar shards on local disk vs the image folder they were written from: read + decode + "
         "augment at 224 (the resnest50 ImageNet recipe's train transform), 2 workers, "
         "ImageNet-sized JPEGs", "local tar shards vs the image folder", ("data_at_scale",),
         "data-at-scale", "shards / folder, median img/s", ">=", 1.0,
         lambda r: _case_ratio(r, "data_at_scale", "shards", "folder"), ratio, readme=True),
    Goal("the same shards on a loopback S3 server, through the local shard cache from cold, "
         "with prefetch, vs on local disk", "tar shards on S3 vs local", ("data_at_scale",),
         "data-at-scale", "shards_s3 / shards, median img/s", ">=", 0.9,
         lambda r: _case_ratio(r, "data_at_scale", "shards_s3", "shards"), ratio, readme=True),
    Goal("the same images as Parquet in the Hugging Face Hub's layout vs local tar shards",
         "Hub Parquet vs local tar shards", ("data_at_scale",), "data-at-scale",
         "parquet / shards, median img/s", ">=", 0.9,
         lambda r: _case_ratio(r, "data_at_scale", "parquet", "shards"), ratio, readme=True),
    Goal("runs SIGKILLed at random moments and resumed (`--resume auto`) end bitwise identical to "
         "an uninterrupted run", "resume after random SIGKILLs is bitwise identical",
         ("stress_resume", "stress_resume-seed1"), "resume-stress-test",
         "identical runs / runs", ">=", 1.0,
         lambda r: _stress(r, ("stress_resume", "stress_resume-seed1")), lambda v: f"{v:.2f}",
         readme=False, shown=lambda r: _stress_shown(r, ("stress_resume", "stress_resume-seed1"))),
)
