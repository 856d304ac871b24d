"""``resnest-average``: average the weights of a run's best or last checkpoints.

Floating tensors are averaged in float64 and cast back to their dtype; integer and bool buffers
(``num_batches_tracked``) are taken from the newest input. The weights of each checkpoint are
the ones :func:`resnest_engine.models.weights.read_state_dict` reads: the EMA weights of a run
that used EMA, else the model's. The average is written as a plain state_dict (default
``RUN_DIR/model_weights_avg.pt``) and evaluated on the run's validation set beside each input.

User errors end with one line ``error: ...`` on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .exit_codes import ExitCode

__all__ = ["average_state_dicts", "select_checkpoints", "main", "DEFAULT_OUTPUT"]

DEFAULT_OUTPUT = "model_weights_avg.pt"


def _averaged(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


class _Mean:
    """Running mean of state_dicts, one at a time (the CLI never holds all inputs in memory).

    The first input is kept as it is until a second one arrives, so the mean of one state_dict
    is that state_dict bitwise. Floating (and complex) tensors are summed in float64
    (complex128); other tensors are taken from the last input added.
    """

    def __init__(self) -> None:
        self.n = 0
        self._first: Optional[Dict[str, torch.Tensor]] = None
        self._sums: Optional[Dict[str, torch.Tensor]] = None
        self._last: Dict[str, torch.Tensor] = {}
        self._spec: Dict[str, Tuple[torch.Size, torch.dtype]] = {}
        self._names: List[str] = []

    def _check(self, state: Mapping[str, torch.Tensor], name: str) -> None:
        first = self._names[0]
        for k, v in state.items():
            if not isinstance(v, torch.Tensor):
                raise ValueError(f"key {k!r} of {name} is not a tensor")
            if k not in self._spec:
                raise ValueError(f"key {k!r} of {name} is not in {first}")
            shape, dtype = self._spec[k]
            if v.shape != shape:
                raise ValueError(f"key {k!r} has shape {tuple(v.shape)} in {name} "
                                 f"but {tuple(shape)} in {first}")
            if v.dtype != dtype:
                raise ValueError(f"key {k!r} has dtype {v.dtype} in {name} but {dtype} in {first}")
        for k in self._spec:
            if k not in state:
                raise ValueError(f"key {k!r} of {first} is missing from {name}")

    @staticmethod
    def _wide(v: torch.Tensor) -> torch.Tensor:
        return v.to(torch.complex128 if v.is_complex() else torch.float64)

    def add(self, state: Mapping[str, torch.Tensor], name: Optional[str] = None) -> None:
        """Add ``state`` (called ``name`` in errors; default ``state_dict <position>``)."""
        name = name or f"state_dict {self.n + 1}"
        if self.n == 0:
            for k, v in state.items():
                if not isinstance(v, torch.Tensor):
                    raise ValueError(f"key {k!r} of {name} is not a tensor")
            self._spec = {k: (v.shape, v.dtype) for k, v in state.items()}
            self._first = dict(state)
            self._names = [name]
        else:
            self._check(state, name)
            if self._sums is None:
                assert self._first is not None
                self._sums = {k: self._wide(v) for k, v in self._first.items() if _averaged(v)}
                self._first = None
            for k, v in state.items():
                if _averaged(v):
                    self._sums[k] += self._wide(v.to(self._sums[k].device))
        self._last = {k: v for k, v in state.items() if not _averaged(v)}
        self.n += 1

    def result(self) -> Dict[str, torch.Tensor]:
        if self.n == 0:
            raise ValueError("nothing to average: no state_dicts given")
        if self._sums is None:  # one input: itself, bitwise
            assert self._first is not None
            return {k: v.detach().clone() for k, v in self._first.items()}
        out = {}
        for k, (_, dtype) in self._spec.items():
            if k in self._sums:
                out[k] = (self._sums[k] / self.n).to(dtype)
            else:
                out[k] = self._last[k].detach().clone()
        return out


def average_state_dicts(state_dicts: Sequence[Mapping[str, torch.Tensor]]
                        ) -> Dict[str, torch.Tensor]:
    """The mean of ``state_dicts`` (oldest first, newest last), keys in the first one's order.

    Floating tensors are averaged in float64 and cast back to their dtype; integer and bool
    tensors (e.g. BatchNorm's ``num_batches_tracked``) are taken from the last state_dict. Keys,
    shapes and dtypes must match exactly, else ``ValueError`` naming the key. One state_dict
    comes back bitwise (as copies).
    """
    mean = _Mean()
    for state in state_dicts:
        mean.add(state)
    return mean.result()


class AverageError(ValueError):
    """A bad command line or a run directory that cannot be averaged."""


def select_checkpoints(run_dir: Path, best: Optional[int] = None, last: Optional[int] = None
                       ) -> Tuple[List[Path], str, Optional[str]]:
    """``(paths, what, note)``: the checkpoints to average, best first or newest first.

    ``best=N``: the N highest-scoring ``best-*.pt``; ``last=N``: the N newest ``resume-*.pt``;
    neither: every ``best-*.pt`` the run kept. ``note`` is a one-line message when fewer than
    asked for exist (naming the config key that keeps more); none at all is an error.
    """
    from .cli.run_dir import _best_checkpoints
    from .handlers.checkpoint import list_checkpoints
    ckpt_dir = run_dir / "checkpoints"
    if last is not None:
        found, key, kind = list_checkpoints(ckpt_dir), "TRAINING.KEEP_CHECKPOINTS", "resume points"
        wanted, flag = last, "--last"
    else:
        found, key, kind = _best_checkpoints(ckpt_dir), "TRAINING.KEEP_BEST", "best checkpoints"
        wanted, flag = best, "--best"
    if not found:
        hint = ("the run keeps them with TRAINING.KEEP_BEST >= 1 and validation; try --last N"
                if last is None else "the run writes them every epoch (TRAINING.KEEP_CHECKPOINTS)")
        raise AverageError(f"no {kind} in {ckpt_dir} ({hint})")
    note = None
    if wanted is not None and len(found) < wanted:
        note = (f"note: {flag} {wanted}: found only {len(found)} {kind} in {ckpt_dir}; "
                f"averaging {len(found)} (a run keeps more with {key}={wanted})")
    chosen = found if wanted is None else found[:wanted]
    what = (f"{len(chosen)} newest resume point{'s' if len(chosen) != 1 else ''}"
            if last is not None else
            f"{len(chosen)} best checkpoint{'s' if len(chosen) != 1 else ''}")
    return chosen, what, note


def output_path(run_dir: Path, output: Optional[str], inputs: Sequence[Path]) -> Path:
    """Where the average goes: never a file the run or its checkpoints live in."""
    from .cli.run_dir import _RUN_DIRS, _RUN_FILES
    out = Path(output) if output else run_dir / DEFAULT_OUTPUT
    if output is not None and (not output or output.endswith(("/", "\\")) or out.is_dir()):
        raise AverageError(f"--output: {output!r} is not a file name")
    if not out.parent.is_dir():
        raise AverageError(f"--output: directory not found: {out.parent}")
    target, run = out.resolve(), run_dir.resolve()
    if (target in [run / f for f in _RUN_FILES] or target.name == "model_weights.pt"
            or any(target.is_relative_to(run / d) for d in _RUN_DIRS)
            or target.parent.name == "checkpoints"):
        raise AverageError(f"--output: {out} is a run or checkpoint file; write the average "
                           "somewhere else")
    if any(target == p.resolve() for p in inputs):
        raise AverageError(f"--output: {out} is one of the checkpoints being averaged")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="resnest-average",
        description="Average the weights of a run's best or last checkpoints, write them as a "
                    "plain state_dict and evaluate them beside each checkpoint.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a resnest-train run directory (--outdir)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--best", type=int, metavar="N",
                       help="the N best checkpoints (checkpoints/best-*.pt, highest top-1 first); "
                            "default: every best checkpoint the run kept")
    which.add_argument("--last", type=int, metavar="N",
                       help="the N newest resume points (checkpoints/resume-*.pt)")
    p.add_argument("--output", metavar="PATH",
                   help=f"where to write the average (default: RUN_DIR/{DEFAULT_OUTPUT})")
    p.add_argument("--no-eval", action="store_true",
                   help="write the average without evaluating anything")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides of the run's config.yaml for the evaluation "
                        "(e.g. DATA.ROOT=/data/imagenet DATA.WORKERS=8)")
    return p


def run(argv: Sequence[str]) -> int:
    a = build_parser().parse_args(argv)
    for flag, n in (("--best", a.best), ("--last", a.last)):
        if n is not None and n < 1:
            raise AverageError(f"{flag} must be >= 1, got {n}")
    run_dir = Path(a.run_dir)
    if not run_dir.is_dir():
        raise AverageError(f"run directory not found: {run_dir}")
    cfg = None
    if not a.no_eval:
        config = run_dir / "config.yaml"
        if not config.is_file():
            raise AverageError(f"{config} not found: the run's config is needed to evaluate "
                               "(or pass --no-eval)")
        from .config import load_config
        cfg = load_config(config, a.overrides)
    elif a.overrides:
        raise AverageError("KEY=VALUE overrides only apply to the evaluation; drop them with "
                           "--no-eval")

    # One writer per run directory; also keeps a live run from rotating the checkpoints away
    # while they are read.
    from .run_lock import RunDirLock, RunDirLockedError, describe_holder
    try:
        lock = RunDirLock(run_dir, command="resnest-average " + shlex.join(map(str, argv)),
                          label=f"run directory {run_dir}").acquire()
    except RunDirLockedError as e:
        raise AverageError(f"run directory {run_dir} is in use ({describe_holder(e.holder)}); "
                           "average it when that has finished") from None
    try:
        paths, what, note = select_checkpoints(run_dir, a.best, a.last)
        out = output_path(run_dir, a.output, paths)
        if note:
            print(note, file=sys.stderr)

        from .handlers.checkpoint import atomic_save
        from .models.weights import read_state_dict
        mean = _Mean()
        # Oldest first, so that the integer buffers come from the newest checkpoint.
        for path in sorted(paths, key=_age):
            state = read_state_dict(path)  # WeightsError (names the file): a user error
            try:
                mean.add(state, path.name)
            except ValueError as e:
                raise AverageError(f"cannot average the checkpoints: {e}") from None
            del state
        atomic_save(mean.result(), out)
        del mean
        ema = cfg is not None and cfg.TRAINING.EMA_DECAY > 0
        print(f"wrote {out}: the average of the {what} of {run_dir}"
              f"{' (their EMA weights)' if ema else ''}")
        if cfg is None:
            return ExitCode.OK

        from .evaluate import evaluate
        width = max(len(p.name) for p in paths)
        for path in paths:
            m = evaluate(cfg, path)
            print(f"{path.name:<{width}}  top1 {m['top1']:.3f}")
        m = evaluate(cfg, out)
        print(f"{f'average of {len(paths)}:':<{width}}  top1 {m['top1']:.3f}")
        print(f"Validation: Top1: {m['top1']:.3f} | Top5: {m['top5']:.3f}")
        return ExitCode.OK
    finally:
        lock.release()


def _age(p: Path) -> Tuple[int, int]:
    """(epoch, iteration) of a checkpoint from its name (best files carry only the epoch)."""
    m = re.search(r"-e(\d+)(?:-i(\d+))?", p.stem)
    if m is None:
        return -1, -1
    return int(m.group(1)), int(m.group(2) or -1)


def main(argv: Optional[List[str]] = None) -> int:
    """Console entry point (``resnest-average``); returns the exit status."""
    from .cli import console_main
    return console_main(run, argv, (AverageError,))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
