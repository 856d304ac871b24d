"""``resnest-train``: train, resume, evaluate or export a recipe."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from ..config import apply_overrides, check_resume_overrides, diff_configs, dump_config_text
from ..config import load_config as load_our_config
from ..data import DataError
from ..workflows.evaluate import evaluate
from .exit_codes import ExitCode
from ..workflows.export import export_weights
from ..handlers.standard import write_final_outputs
from ..official import is_official_checkpoint, read_config, read_resume_file
from ..official.log_format import validation_line
from ..workflows.report import require_matplotlib, write_report
from ..storage.run_lock import has_run_content
from .args import build_parser
from .console import UsageError, console_main
from .launch import launch_training, _world_size, _writes_run_dir, resolve_launch_args
from .run_dir import (write_text_or_fail, checkpoint_finished, lock_run_dir, move_aside,
                      prune_moved_aside, export_path, find_run_weights)
from ..storage.run_dir import RunDir
from ..workflows.run_files import newest_valid_checkpoint

__all__ = ["main", "run_cli"]


def run_cli(argv: Sequence[str]) -> int:
    a = build_parser().parse_args(argv)
    resolve_launch_args(a, spawn=not (a.export or a.eval_only))
    world = _world_size(a)
    loaded = read_config(a.config_file, a.overrides, world_size=world)
    cfg = loaded.config
    outdir = Path(a.outdir) if a.outdir else Path("output") / Path(a.config_file).stem

    if a.keep_previous is not None and (a.keep_previous < 0 or not a.force):
        raise UsageError("--keep-previous N: N >= 0, and only with --force")
    if a.report and (a.export or not a.eval_only):
        raise UsageError("--report goes with --eval-only (after training: resnest-report OUTDIR)")
    if a.report and world > 1:
        raise UsageError("--report: the report is made by one process; after this evaluation "
                         "run resnest-report OUTDIR")
    if a.report:
        require_matplotlib()  # before anything is read or evaluated
    if a.print_config:
        for line in loaded.translation + [f"warning: {w}" for w in loaded.warnings]:
            print(line, file=sys.stderr)
        sys.stdout.write(dump_config_text(cfg))
        return ExitCode.OK
    if a.export or a.eval_only:
        for line in loaded.translation + [f"warning: {w}" for w in loaded.warnings]:
            print(line, file=sys.stderr)
        return _eval_or_export(a, cfg, outdir, argv)

    if cfg.TRAINING.BATCH_SIZE % world:
        raise UsageError(f"TRAINING.BATCH_SIZE {cfg.TRAINING.BATCH_SIZE} does not divide by "
                         f"{world} processes")
    _check_data_paths(cfg)
    resume: Optional[Path] = None
    ckpt: Optional[dict] = None
    if a.resume and a.resume != "auto":  # reads no run directory: checked before the lock
        resume = Path(a.resume)
        if not resume.is_file():
            raise UsageError(f"--resume: checkpoint not found: {resume}")
        ckpt = read_resume_file(resume)
        # An official checkpoint names no model: the architecture check happens on load.
        saved_model = None if is_official_checkpoint(ckpt) else ckpt["meta"].get("model")
        if saved_model is not None and saved_model != cfg.MODEL.NAME:
            raise UsageError(f"--resume: {resume} is a {saved_model} checkpoint but "
                             f"MODEL.NAME is {cfg.MODEL.NAME}")
    # One writer per run directory: the lock comes before anything reads or writes it (the
    # outdir rules below included), and is held until the run (every worker) has ended.
    writer = _writes_run_dir(a)
    held = [lock_run_dir(outdir, argv)] if writer else []
    launched = False
    try:
        plan = _prepare_run(a, argv, loaded, cfg, outdir, resume, ckpt, world, held)
        if plan is None:
            return ExitCode.OK
        launched = True
        return launch_training(a, *plan)
    finally:
        for lock in held:  # not launched: nothing written, so remove what the lock created
            lock.release(discard=not launched)


def _prepare_run(a: argparse.Namespace, argv: Sequence[str], loaded, cfg, outdir: Path,
                 resume: Optional[Path], ckpt: Optional[dict], world: int, held: list):
    """The outdir rules (``--resume``, ``--force``), after the lock: ``held`` is the lock on
    ``outdir`` when this process is the writer, else empty. Returns ``launch_training``'s arguments
    after ``a`` (config, outdir, resume point, log preamble), or None: nothing to do."""
    exists = has_run_content(outdir)  # the lock file alone is not a run
    if a.resume:
        saved = RunDir(outdir).config
        if a.resume == "auto":
            if exists:
                resume, ckpt = newest_valid_checkpoint(RunDir(outdir).checkpoints, cfg.MODEL.NAME)
            if resume is None:
                print(f"no checkpoint in {outdir}; starting from the beginning", file=sys.stderr)
        if resume is not None and saved.is_file():
            saved_cfg = load_our_config(saved)
            new_cfg = apply_overrides(saved_cfg, _overrides_in_our_format(a, loaded, world))
            check_resume_overrides(saved_cfg, new_cfg)
            cfg = new_cfg
        if resume is not None and checkpoint_finished(ckpt):
            if not RunDir(outdir).weights.is_file():  # it stopped writing them (disk full)
                weights = write_final_outputs(ckpt, outdir)
                print(f"{outdir}: the run had finished ({resume.name}) but not written its final "
                      f"outputs; wrote {weights.name} and metrics.json from it")
                return None
            print(f"{outdir}: the run already finished ({resume.name}); nothing to do")
            return None
    elif exists:
        if not a.force:
            raise UsageError(f"--outdir {outdir} already exists; use --resume auto to continue it "
                             "or --force to move it aside")
        if held:
            # Locked (by us) while it moves, so a live run's directory is never moved; the lock
            # file goes with it. The new directory is locked before the old one is let go.
            moved = move_aside(outdir)
            print(f"moved the existing {outdir} to {moved}", file=sys.stderr)
            if a.keep_previous is not None:
                for gone in prune_moved_aside(outdir, a.keep_previous):
                    print(f"deleted the older previous run {gone} (--keep-previous "
                          f"{a.keep_previous})", file=sys.stderr)
            old = held.pop()
            try:
                held.append(lock_run_dir(outdir, argv))
            finally:
                old.release()
    preamble = [f"resnest-train {_describe_args(a, world)}"] + loaded.translation
    return cfg, outdir, resume, preamble


def _describe_args(a: argparse.Namespace, world: int) -> str:
    """The resolved arguments, for the top of the log."""
    flags = {k: v for k, v in sorted(vars(a).items())
             if v not in (None, False, []) and k != "overrides"}
    text = " ".join(f"--{k.replace('_', '-')} {v}" if v is not True else f"--{k.replace('_', '-')}"
                    for k, v in flags.items())
    over = " ".join(a.overrides)
    return f"arguments: {text}{' ' + over if over else ''} (world size {world})"


def _overrides_in_our_format(a: argparse.Namespace, loaded, world: int) -> List[str]:
    """The command line's overrides as KEY=VALUE of our schema. For our format they are the
    overrides themselves; for an official config, what they change after translation (an
    official TRAINING.BATCH_SIZE=16 is per GPU, not the global batch of the saved config)."""
    if loaded.format != "official":
        return list(a.overrides)
    plain = read_config(a.config_file, (), world_size=world).config
    return [f"{key}={json.dumps(new)}" for key, _, new in diff_configs(plain, loaded.config)]


def _check_data_paths(cfg) -> None:
    """Find missing dataset roots before any process is spawned (the config already checked
    the dataset name)."""
    from ..data.shard_cache import is_url, local_path
    name = cfg.DATA.DATASET
    if name in ("imagefolder", "imagenet", "shards", "parquet", "cifar10", "cifar100"):
        root = cfg.DATA.ROOT
        if not root:
            raise DataError(f"DATA.ROOT: dataset {name!r} needs a root directory")
        if name in ("shards", "parquet") and is_url(root):  # fsspec: checked when opened
            return
        if name in ("shards", "parquet"):
            root = local_path(root)
        if not Path(root).is_dir() and not (name.startswith("cifar") and cfg.DATA.DOWNLOAD):
            raise DataError(f"DATA.ROOT: directory not found: {root}")


def _eval_or_export(a: argparse.Namespace, cfg, outdir: Path, argv: Sequence[str] = ()) -> int:
    what = None
    if not a.resume or a.resume == "auto":
        try:
            path, what = find_run_weights(outdir, cfg.MODEL.NAME)
        except UsageError as e:
            flag = "--export" if a.export else "--eval-only"
            raise UsageError(f"{flag}: {e}") from None
    else:
        path = Path(a.resume)
        if not path.is_file():
            raise UsageError(f"--resume: file not found: {path}")
    out = export_path(a.export, outdir, path) if a.export else None  # refused before any output
    if out is not None:
        if what is not None:
            print(f"exporting {what} {path}", file=sys.stderr)
        export_weights(cfg, path, out)
        print(f"exported {path} to {out}")
        return ExitCode.OK
    # --eval-only writes OUTDIR/eval_metrics.json: the run directory's lock first (--export
    # writes outside it and only reads it, so it takes none).
    lock = lock_run_dir(outdir, argv) if _writes_run_dir(a) else None
    written, report = False, None
    try:
        if what is not None:
            print(f"evaluating {what} {path}", file=sys.stderr)
        m = evaluate(cfg, path)
        print(validation_line(m["top1"], m["top5"]))
        # The evaluation's own file: never the training run's metrics.json.
        target = RunDir(outdir).eval_metrics
        write_text_or_fail(target, json.dumps({"top1": float(m["top1"]),
                                               "top5": float(m["top5"])}) + "\n")
        written = True
        if a.report:  # a second pass over the val split, under the same lock
            report = write_report(outdir, weights=path, cfg=cfg)
    finally:
        if lock is not None:
            lock.release(discard=not written)
    print(f"wrote {target}")
    if report is not None:
        print(f"wrote {report}")
    return ExitCode.OK


def main(argv: Optional[List[str]] = None) -> int:
    """Console entry point; returns the exit status."""
    return console_main(run_cli, argv)
