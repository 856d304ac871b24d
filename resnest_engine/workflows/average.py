"""Checkpoint averaging: :func:`average_checkpoints` (a run's best or last checkpoints into one
weights file; ``resnest-average`` is its command line, :mod:`resnest_engine.cli.average`) and
:func:`average_state_dicts`.

    from resnest_engine.workflows.average import average_checkpoints
    done = average_checkpoints("output/digits", best=3)   # -> output/digits/model_weights_avg.pt

Floating tensors are averaged in float64 and cast back to their dtype; integer and bool buffers
(``num_batches_tracked``) are taken from the newest input. The weights of each checkpoint are
the ones :func:`resnest_engine.models.weights.read_state_dict` reads: the EMA weights of a run
that used EMA, else the model's. The average is written as a plain state_dict (default
``RUN_DIR/model_weights_avg.pt``) and, on request, evaluated on the run's validation set beside
each input.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from ..config import load_config
from ..errors import InputError
from .evaluate import evaluate as evaluate_weights
from ..handlers.checkpoint import list_checkpoints, save_weights
from ..models.weights import read_state_dict
from .run_files import best_checkpoints, refuse_overwrite
from ..storage.run_lock import RunDirLock, RunDirLockedError, describe_holder
from ..storage.run_dir import RunDir

__all__ = ["AverageError", "Averaged", "DEFAULT_OUTPUT", "average_checkpoints",
           "average_state_dicts", "select_checkpoints"]

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

    Args:
        state_dicts: the state_dicts to average, oldest first.
    """
    mean = _Mean()
    for state in state_dicts:
        mean.add(state)
    return mean.result()


class AverageError(InputError):
    """A run directory that cannot be averaged, or bad arguments."""


@dataclass
class Averaged:
    """What :func:`average_checkpoints` wrote."""

    output: Path  #: the averaged weights (a plain state_dict)
    checkpoints: List[Path]  #: the checkpoints averaged, best first (``best``) or newest first
    what: str  #: e.g. ``"3 best checkpoints"``
    #: top-1 on the validation set of each checkpoint (by path) and of the average (``output``),
    #: when evaluated
    top1: Dict[Path, float] = field(default_factory=dict)


def select_checkpoints(run_dir: Path, best: Optional[int] = None, last: Optional[int] = None
                       ) -> Tuple[List[Path], str, Optional[str]]:
    """``(paths, what, note)``: the checkpoints to average, best first or newest first.

    ``best=N``: the N highest-scoring ``best-*.pt``; ``last=N``: the N newest ``resume-*.pt``;
    neither: every ``best-*.pt`` the run kept. ``note`` is a one-line message when fewer than
    asked for exist (naming the config key that keeps more); none at all is an error.
    """
    ckpt_dir = RunDir(run_dir).checkpoints
    if last is not None:
        found, key, kind = list_checkpoints(ckpt_dir), "TRAINING.KEEP_CHECKPOINTS", "resume points"
        wanted, flag = last, "--last"
    else:
        found, key, kind = best_checkpoints(ckpt_dir), "TRAINING.KEEP_BEST", "best checkpoints"
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


def _output_path(run_dir: Path, output: Optional[str], inputs: Sequence[Path]) -> Path:
    """Where the average goes: never a file the run or its checkpoints live in."""
    out = Path(output) if output else run_dir / DEFAULT_OUTPUT
    if output is not None and (not output or output.endswith(("/", "\\")) or out.is_dir()):
        raise AverageError(f"--output: {output!r} is not a file name")
    if not out.parent.is_dir():
        raise AverageError(f"--output: directory not found: {out.parent}")
    refuse_overwrite(out, "--output", run_dir, inputs, any_run=True,
                     run_file="is a run or checkpoint file; write the average somewhere else",
                     input_file="is one of the checkpoints being averaged")
    return out


def average_checkpoints(run_dir: Union[str, Path], best: Optional[int] = None,
                        last: Optional[int] = None, output: Union[str, Path, None] = None, *,
                        evaluate: bool = False, overrides: Sequence[str] = (),
                        command: Optional[str] = None,
                        report: Optional[Callable[[str], None]] = None,
                        note: Optional[Callable[[str], None]] = None) -> Averaged:
    """Average the weights of ``run_dir``'s checkpoints into one plain state_dict.

    Which: ``best=N`` the N best checkpoints (``checkpoints/best-*.pt``), ``last=N`` the N newest
    resume points; neither: every best checkpoint the run kept. Written atomically to ``output``
    (default ``RUN_DIR/model_weights_avg.pt``; never over a run file or a checkpoint). With
    ``evaluate``, the average and each input are then evaluated on the run's validation set
    (its ``config.yaml`` with ``overrides``, e.g. ``["DATA.ROOT=/data"]``).

    The run directory is locked meanwhile (``command`` names the holder). ``report(line)`` is
    called with each line of the report (what was written, each top-1), ``note(line)`` with a
    remark (fewer checkpoints than asked for). Raises :class:`AverageError` (one line, naming
    the argument as ``resnest-average`` spells it) for a run that cannot be averaged.

    Args:
        run_dir: the training run directory.
        best: average the N best checkpoints.
        last: average the N newest resume points.
        output: where to write (default ``RUN_DIR/model_weights_avg.pt``).
        evaluate: also evaluate the average and each input on the validation set.
        overrides: config overrides for that evaluation, e.g. ``["DATA.ROOT=/data"]``.
        command: names the run directory lock's holder.
        report: called with each line of the report.
        note: called with each remark.
    """
    report, note = report or (lambda line: None), note or (lambda line: None)  # silent
    for flag, n in (("--best", best), ("--last", last)):
        if n is not None and n < 1:
            raise AverageError(f"{flag} must be >= 1, got {n}")
    if best is not None and last is not None:
        raise AverageError("--best and --last: pass one of them")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AverageError(f"run directory not found: {run_dir}")
    cfg = None
    if evaluate:
        config = RunDir(run_dir).config
        if not config.is_file():
            raise AverageError(f"{config} not found: the run's config is needed to evaluate "
                               "(or pass --no-eval)")
        cfg = load_config(config, list(overrides))
    elif overrides:
        raise AverageError("KEY=VALUE overrides only apply to the evaluation; drop them with "
                           "--no-eval")

    # One writer per run directory; also keeps a live run from rotating the checkpoints away
    # while they are read.
    try:
        lock = RunDirLock(run_dir, command=command or f"average_checkpoints({str(run_dir)!r})",
                          label=f"run directory {run_dir}").acquire()
    except RunDirLockedError as e:
        raise AverageError(f"run directory {run_dir} is in use ({describe_holder(e.holder)}); "
                           "average it when that has finished") from None
    try:
        paths, what, remark = select_checkpoints(run_dir, best, last)
        out = _output_path(run_dir, None if output is None else str(output), paths)
        if remark:
            note(remark)

        mean = _Mean()
        # Oldest first, so that the integer buffers come from the newest checkpoint.
        for path in sorted(paths, key=_age):
            state = read_state_dict(path)  # WeightsError (names the file): a user error
            try:
                mean.add(state, path.name)
            except ValueError as e:
                raise AverageError(f"cannot average the checkpoints: {e}") from None
            del state
        save_weights(mean.result(), out)
        del mean
        ema = cfg is not None and cfg.TRAINING.EMA_DECAY > 0
        report(f"wrote {out}: the average of the {what} of {run_dir}"
               f"{' (their EMA weights)' if ema else ''}")
        done = Averaged(out, list(paths), what)
        if cfg is None:
            return done

        width = max(len(p.name) for p in paths)
        for path in paths:
            m = evaluate_weights(cfg, path)
            done.top1[path] = float(m["top1"])
            report(f"{path.name:<{width}}  top1 {m['top1']:.3f}")
        m = evaluate_weights(cfg, out)
        done.top1[out] = float(m["top1"])
        report(f"{f'average of {len(paths)}:':<{width}}  top1 {m['top1']:.3f}")
        report(f"Validation: Top1: {m['top1']:.3f} | Top5: {m['top5']:.3f}")
        return done
    finally:
        lock.release()


def _age(p: Path) -> Tuple[int, int]:
    """(epoch, iteration) of a checkpoint from its name (best files carry only the epoch)."""
    m = re.search(r"-e(\d+)(?:-i(\d+))?", p.stem)
    if m is None:
        return -1, -1
    return int(m.group(1)), int(m.group(2) or -1)

