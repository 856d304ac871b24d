"""``resnest-train``: argument parsing, run-directory rules, distributed launch, error reporting.

User errors (config, paths, flags, unusable checkpoints) end with one line on stderr and exit
status 2; a NaN/Inf loss exits 3; an interrupted run (SIGTERM/SIGINT, resume point written) 4;
other failures (e.g. a checkpoint that cannot be written) 1.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import signal
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from .errors import one_line
from .exit_codes import ExitCode

__all__ = ["UsageError", "build_parser", "console_main", "default_nproc_per_node", "export_path",
           "find_run_weights", "main", "parse_dist_url", "resolve_launch_args",
           "resolve_official_flags", "run_cli"]


class UsageError(ValueError):
    """A bad command line."""


def _user_errors():
    from .config import ConfigError
    from .data import DataError
    from .handlers.checkpoint import CheckpointError
    from .models.registry import UnknownModelError
    from .models.weights import WeightsError
    from .run_lock import RunDirError
    return (ConfigError, DataError, CheckpointError, UnknownModelError, WeightsError, UsageError,
            RunDirError)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="resnest-train", description="Train or evaluate a ResNeSt recipe.",
        epilog="Trailing KEY=VALUE arguments override config keys, e.g. TRAINING.EPOCHS=5.")
    p.add_argument("--config-file", required=True, help="YAML recipe")
    p.add_argument("--outdir", help="run directory (default: output/<config file stem>)")
    p.add_argument("--resume", help="checkpoint path, or 'auto' for the newest valid one in --outdir")
    p.add_argument("--eval-only", action="store_true",
                   help="evaluate --resume's weights (default: the --outdir run's final, best or "
                   "newest weights), write OUTDIR/eval_metrics.json and exit")
    p.add_argument("--export", metavar="NAME",
                   help="write --resume's weights (default: the --outdir run's final, best or newest "
                   "weights) and exit: NAME.pth when NAME has no suffix (the official habit), .pt/.pth "
                   "a state_dict, .pt2 a torch.export program")
    p.add_argument("--force", action="store_true",
                   help="move an existing --outdir aside to DIR.bak-<timestamp> and start afresh")
    p.add_argument("--nproc-per-node", type=int, help="processes to spawn on this node "
                   "(default: one per visible GPU when there are several, else this one)")
    p.add_argument("--nnodes", "--world-size", dest="nnodes", type=int,
                   help="number of nodes (--world-size: the official script's name)")
    p.add_argument("--node-rank", type=int, help="this node's rank")
    p.add_argument("--rank", type=int, help="the official script's name for --node-rank")
    p.add_argument("--master-addr", help="address of the rank-0 node")
    p.add_argument("--master-port", type=int, help="port of the rank-0 node")
    p.add_argument("--dist-url", metavar="tcp://HOST:PORT",
                   help="the official script's way to give --master-addr and --master-port")
    p.add_argument("--backend", choices=("gloo", "nccl"), help="default: nccl on GPUs, else gloo")
    p.add_argument("--dist-backend", choices=("gloo", "nccl"),
                   help="the official script's name for --backend")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (our format, YAML) on stdout and the "
                   "translation of an official config on stderr; start and write nothing")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    return p


def _check_dist_flags(a: argparse.Namespace) -> None:
    if a.nproc_per_node is not None and a.nproc_per_node < 1:
        raise UsageError(f"--nproc-per-node must be >= 1, got {a.nproc_per_node}")
    if a.nnodes is not None and a.nnodes < 1:
        raise UsageError(f"--nnodes must be >= 1, got {a.nnodes}")
    nnodes = a.nnodes or 1
    if a.node_rank is not None and not 0 <= a.node_rank < nnodes:
        raise UsageError(f"--node-rank must be in [0, {nnodes - 1}] for --nnodes {nnodes}, "
                         f"got {a.node_rank}")
    if nnodes > 1:
        if a.nproc_per_node is None:
            raise UsageError("--nnodes > 1 needs --nproc-per-node")
        if a.node_rank is None or a.master_addr is None or a.master_port is None:
            raise UsageError("--nnodes > 1 needs --node-rank, --master-addr and --master-port")
    if a.master_port is not None and not 0 < a.master_port < 65536:
        raise UsageError(f"--master-port must be in 1..65535, got {a.master_port}")


def parse_dist_url(url: str) -> Tuple[str, int]:
    """``tcp://HOST:PORT`` (the official ``--dist-url``) -> ``(HOST, PORT)``; a :class:`UsageError`
    naming ``--dist-url`` and the expected form for anything else."""
    bad = UsageError(f"--dist-url must be tcp://HOST:PORT with a port in 1..65535, got {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number or is out of range
        raise bad from None
    if (parts.scheme != "tcp" or not parts.hostname or port is None or not 0 < port < 65536
            or parts.path not in ("", "/") or parts.query or parts.fragment
            or parts.username is not None):
        raise bad
    return parts.hostname, port


def _merge_alias(a: argparse.Namespace, dest: str, flag: str, value, alias: str) -> None:
    """Set ``a.<dest>`` (spelt ``flag``) from the official spelling ``alias``; both given with
    different values is a :class:`UsageError` naming both."""
    if value is None:
        return
    ours = getattr(a, dest)
    if ours is not None and ours != value:
        raise UsageError(f"{alias} and {flag} disagree: {alias} gives {value}, {flag} {ours}; "
                         "pass one of them")
    setattr(a, dest, value)


def resolve_official_flags(a: argparse.Namespace) -> argparse.Namespace:
    """Fold the official script's launch flags into ours: ``--rank`` -> ``node_rank``,
    ``--dist-url tcp://HOST:PORT`` -> ``master_addr``/``master_port``, ``--dist-backend`` ->
    ``backend`` (``--world-size`` is parsed as ``--nnodes`` already)."""
    _merge_alias(a, "node_rank", "--node-rank", a.rank, "--rank")
    if a.dist_url is not None:
        host, port = parse_dist_url(a.dist_url)
        _merge_alias(a, "master_addr", "--master-addr", host, f"--dist-url {a.dist_url}")
        _merge_alias(a, "master_port", "--master-port", port, f"--dist-url {a.dist_url}")
    _merge_alias(a, "backend", "--backend", a.dist_backend, "--dist-backend")
    return a


def default_nproc_per_node(a: argparse.Namespace) -> Optional[int]:
    """Processes to start on this node: ``--nproc-per-node`` when given; else, like the official
    script, one per visible CUDA device when there are several (or any, for a multi-node run) and
    this is not a torchrun worker nor a task of a multi-task ``srun``; else ``None`` (one process,
    this one)."""
    if a.nproc_per_node is not None or _under_torchrun() or _under_slurm():
        return a.nproc_per_node
    import torch
    if not torch.cuda.is_available():
        return None
    count = torch.cuda.device_count()
    if count > 1 or (count >= 1 and (a.nnodes or 1) > 1):
        return count
    return None


def resolve_launch_args(a: argparse.Namespace, spawn: bool = True) -> argparse.Namespace:
    """Official flags folded in, the process count resolved (``spawn``: a training launch, which
    defaults to one process per GPU), then the consistency rules. Afterwards ``a.nproc_per_node``
    is the count that will be started (``None``: this process only) and :func:`_world_size` gives
    the world size."""
    resolve_official_flags(a)
    if _under_slurm():
        _check_slurm_flags(a)
    if spawn and a.nproc_per_node is None:
        n = default_nproc_per_node(a)
        if n is not None:
            devices, procs = ("device", "process") if n == 1 else ("devices", "processes")
            print(f"found {n} CUDA {devices}: starting {n} {procs} (one per GPU; "
                  "--nproc-per-node 1 for one)", file=sys.stderr)
        a.nproc_per_node = n
    _check_dist_flags(a)
    return a


def _under_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"))


def _slurm_ntasks() -> int:
    try:
        return int(os.environ.get("SLURM_NTASKS", "1"))
    except ValueError:
        return 1


def _under_slurm() -> bool:
    """This process is one task of a multi-task SLURM step (``srun``, one task per GPU), not a
    torchrun worker: the world is ``SLURM_NTASKS`` tasks, this one is global rank
    ``SLURM_PROCID``, and ignite's ``idist.initialize`` derives the rendezvous from SLURM's
    variables. A single-task job (``SLURM_NTASKS=1``) is a plain launch."""
    return ("SLURM_PROCID" in os.environ and "SLURM_JOB_ID" in os.environ
            and _slurm_ntasks() > 1 and not _under_torchrun())


def _check_slurm_flags(a: argparse.Namespace) -> None:
    """Under ``srun`` each task is one process and SLURM gives the ranks and the rendezvous:
    launch flags that would say otherwise are a :class:`UsageError`."""
    given = [flag for flag, bad in (
        ("--nproc-per-node", a.nproc_per_node not in (None, 1)),
        ("--nnodes/--world-size", a.nnodes not in (None, 1)),
        ("--node-rank/--rank", a.node_rank is not None),
        ("--master-addr", a.master_addr is not None),
        ("--master-port", a.master_port is not None)) if bad]
    if given:
        raise UsageError(f"{', '.join(given)}: not with srun; each SLURM task is one process and "
                         f"SLURM gives the ranks and the rendezvous (SLURM_NTASKS="
                         f"{_slurm_ntasks()}): ask srun for one task per GPU instead")


def _launcher_rank_world() -> Optional[Tuple[int, int]]:
    """``(global rank, world size)`` as the launcher's environment gives them: torchrun's
    ``RANK``/``WORLD_SIZE``, srun's ``SLURM_PROCID``/``SLURM_NTASKS``; None for a plain launch
    (this process starts the others)."""
    if _under_torchrun():
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if _under_slurm():
        return int(os.environ["SLURM_PROCID"]), _slurm_ntasks()
    return None


def _writes_run_dir(a: argparse.Namespace) -> bool:
    """Whether this process is the one that holds the run-directory lock: under ``torchrun``
    (every process runs :func:`run_cli`) global rank 0; otherwise the launcher of node rank 0,
    which holds it until its workers end (they are its children and die with it). Under ``srun``
    (every task runs :func:`run_cli`) the task with ``SLURM_PROCID`` 0."""
    given = _launcher_rank_world()
    return (given[0] if given is not None else a.node_rank or 0) == 0


def _lock_run_dir(outdir: Path, argv: Sequence[str]):
    """Take ``outdir``'s lock (creating it): a held one is a user error naming the holder."""
    import shlex

    from .run_lock import RunDirLock
    return RunDirLock(outdir, command="resnest-train " + shlex.join(map(str, argv)),
                      label=f"--outdir {outdir}").acquire()


def _world_size(a: argparse.Namespace) -> int:
    """Processes of the whole run; ``a`` must have gone through :func:`resolve_launch_args`."""
    given = _launcher_rank_world()
    return given[1] if given is not None else (a.nproc_per_node or 1) * (a.nnodes or 1)


def _set_parent_death_signal() -> None:
    """Die with the launcher: a spawned worker must not keep training after SIGKILL of its parent."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _newest_valid_checkpoint(ckpt_dir: Path, model_name: str) -> Tuple[Optional[Path], Optional[dict]]:
    """The newest resume point that loads and is for ``model_name``, and its contents."""
    from .handlers.checkpoint import list_checkpoints
    return _first_loadable(list_checkpoints(ckpt_dir), model_name)


def _first_loadable(paths, model_name: str) -> Tuple[Optional[Path], Optional[dict]]:
    """The first of ``paths`` that loads and is for ``model_name`` (others: a warning each)."""
    from .handlers.checkpoint import CheckpointError, read_checkpoint
    for path in paths:
        try:
            ckpt = read_checkpoint(path)
        except CheckpointError as e:
            print(f"warning: skipping {path}: {e}", file=sys.stderr)
            continue
        if ckpt["meta"].get("model") != model_name:
            print(f"warning: skipping {path}: it is for {ckpt['meta'].get('model')}", file=sys.stderr)
            continue
        return path, ckpt
    return None, None


def _move_aside(outdir: Path) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = outdir.with_name(f"{outdir.name}.bak-{stamp}")
    n = 1
    while target.exists():
        target = outdir.with_name(f"{outdir.name}.bak-{stamp}-{n}")
        n += 1
    outdir.rename(target)
    return target


def _worker(local_rank: int, cfg_dict: dict, outdir: str, resume: Optional[str],
            preamble: Sequence[str] = ()) -> None:
    """Body of every process; ends with ``sys.exit(code)`` so the launcher sees the status."""
    _set_parent_death_signal()
    import logging

    import ignite.distributed as idist

    # ignite's engines log every exception before re-raising it; the CLI reports errors itself.
    logging.getLogger("ignite.engine").setLevel(logging.CRITICAL)

    from .config import config_from_dict
    from .handlers.checkpoint import CheckpointWriteError
    from .run import train
    code = ExitCode.FAILED
    try:
        result = train(config_from_dict(cfg_dict), Path(outdir), Path(resume) if resume else None,
                       preamble)
        code = result.exit_code
    except (CheckpointWriteError, OSError) as e:  # a failure of the machine, not the user's input
        print(f"error: {one_line(e)}", file=sys.stderr)
        code = ExitCode.FAILED
    except _user_errors() as e:
        if idist.get_rank() == 0:
            print(f"error: {one_line(e)}", file=sys.stderr)
        code = ExitCode.USER_ERROR
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


def _launch(a: argparse.Namespace, cfg, outdir: Path, resume: Optional[Path],
            preamble: Sequence[str] = ()) -> int:
    import datetime as dt

    import ignite.distributed as idist
    import torch

    from .config import config_to_dict
    cfg_dict = config_to_dict(cfg)
    timeout = dt.timedelta(seconds=cfg.TRAINING.DIST_TIMEOUT)
    backend = a.backend or ("nccl" if torch.cuda.is_available() else "gloo")
    args = (cfg_dict, str(outdir), str(resume) if resume else None, list(preamble))
    if _under_torchrun() or _under_slurm():
        # idist.Parallel initialises a torchrun launch without a timeout; do it ourselves. Under
        # srun, ignite sets RANK/LOCAL_RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT from SLURM's
        # variables (MASTER_ADDR: the first node of SLURM_JOB_NODELIST; MASTER_PORT: 15000 +
        # the last 4 digits of SLURM_JOB_ID). The rendezvous waits for every rank, so no rank
        # writes the run directory before all have done their checks of it.
        idist.initialize(backend, timeout=timeout)
        try:
            _worker(idist.get_local_rank(), *args)
        except SystemExit as e:
            return int(e.code or 0)
        finally:
            if idist.get_world_size() > 1:
                idist.finalize()
        return ExitCode.OK
    if a.nproc_per_node is None:
        try:
            _worker(0, *args)
        except SystemExit as e:
            return int(e.code or 0)
        return ExitCode.OK
    from torch.multiprocessing import ProcessExitedException

    def _forward(signum, _frame):
        # Pre-emption reaches the launcher: pass it on so every worker writes its resume point.
        import multiprocessing
        for child in multiprocessing.active_children():
            os.kill(child.pid, signum)

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    try:
        with idist.Parallel(backend=backend, nproc_per_node=a.nproc_per_node, nnodes=a.nnodes,
                            node_rank=a.node_rank, master_addr=a.master_addr,
                            master_port=a.master_port, timeout=timeout) as parallel:
            parallel.run(_worker, *args)
    except ProcessExitedException as e:
        return e.exit_code if e.exit_code and e.exit_code > 0 else ExitCode.FAILED
    return ExitCode.OK


def _finished(ckpt: dict) -> bool:
    from .handlers.official_checkpoint import is_official_checkpoint
    if is_official_checkpoint(ckpt):
        return False  # its run length is the config's; loading it refuses a finished one
    t = ckpt["trainer"]
    return t.get("max_epochs") is not None and t["iteration"] >= t["max_epochs"] * t["epoch_length"]


def run_cli(argv: Sequence[str]) -> int:
    a = build_parser().parse_args(argv)
    resolve_launch_args(a, spawn=not (a.export or a.eval_only))
    from .config import dump_config_text, read_config
    world = _world_size(a)
    loaded = read_config(a.config_file, a.overrides, world_size=world)
    cfg = loaded.config
    outdir = Path(a.outdir) if a.outdir else Path("output") / Path(a.config_file).stem

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
        from .handlers.checkpoint import read_checkpoint
        from .handlers.official_checkpoint import is_official_checkpoint
        ckpt = read_checkpoint(resume, allow_official=True)
        # An official checkpoint names no model: the architecture check happens on load.
        saved_model = None if is_official_checkpoint(ckpt) else ckpt["meta"].get("model")
        if saved_model is not None and saved_model != cfg.MODEL.NAME:
            raise UsageError(f"--resume: {resume} is a {saved_model} checkpoint but "
                             f"MODEL.NAME is {cfg.MODEL.NAME}")
    # One writer per run directory: the lock comes before anything reads or writes it (the
    # outdir rules below included), and is held until the run (every worker) has ended.
    writer = _writes_run_dir(a)
    held = [_lock_run_dir(outdir, argv)] if writer else []
    launched = False
    try:
        plan = _prepare_run(a, argv, loaded, cfg, outdir, resume, ckpt, world, held)
        if plan is None:
            return ExitCode.OK
        launched = True
        return _launch(a, *plan)
    finally:
        for lock in held:  # not launched: nothing written, so remove what the lock created
            lock.release(discard=not launched)


def _prepare_run(a: argparse.Namespace, argv: Sequence[str], loaded, cfg, outdir: Path,
                 resume: Optional[Path], ckpt: Optional[dict], world: int, held: list):
    """The outdir rules (``--resume``, ``--force``), after the lock: ``held`` is the lock on
    ``outdir`` when this process is the writer, else empty. Returns ``_launch``'s arguments
    after ``a`` (config, outdir, resume point, log preamble), or None: nothing to do."""
    from .config import apply_overrides, check_resume_overrides, load_config
    from .run_lock import has_run_content
    exists = has_run_content(outdir)  # the lock file alone is not a run
    if a.resume:
        saved = outdir / "config.yaml"
        if a.resume == "auto":
            if exists:
                resume, ckpt = _newest_valid_checkpoint(outdir / "checkpoints", cfg.MODEL.NAME)
            if resume is None:
                print(f"no checkpoint in {outdir}; starting from the beginning", file=sys.stderr)
        if resume is not None and saved.is_file():
            saved_cfg = load_config(saved)
            new_cfg = apply_overrides(saved_cfg, _overrides_in_our_format(a, loaded, world))
            check_resume_overrides(saved_cfg, new_cfg)
            cfg = new_cfg
        if resume is not None and _finished(ckpt):
            print(f"{outdir}: the run already finished ({resume.name}); nothing to do")
            return None
    elif exists:
        if not a.force:
            raise UsageError(f"--outdir {outdir} already exists; use --resume auto to continue it "
                             "or --force to move it aside")
        if held:
            # Locked (by us) while it moves, so a live run's directory is never moved; the lock
            # file goes with it. The new directory is locked before the old one is let go.
            moved = _move_aside(outdir)
            print(f"moved the existing {outdir} to {moved}", file=sys.stderr)
            old = held.pop()
            try:
                held.append(_lock_run_dir(outdir, argv))
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
    import json

    from .config import diff_configs, load_config
    plain = load_config(a.config_file, (), world_size=world)
    return [f"{key}={json.dumps(new)}" for key, _, new in diff_configs(plain, loaded.config)]


def _check_data_paths(cfg) -> None:
    """Find missing dataset roots before any process is spawned (the config already checked
    the dataset name)."""
    from .data import DataError
    name = cfg.DATA.DATASET
    if name in ("imagefolder", "imagenet", "cifar10", "cifar100"):
        root = cfg.DATA.ROOT
        if not root:
            raise DataError(f"DATA.ROOT: dataset {name!r} needs a root directory")
        if not Path(root).is_dir() and not (name.startswith("cifar") and cfg.DATA.DOWNLOAD):
            raise DataError(f"DATA.ROOT: directory not found: {root}")


# Files of a run directory that --export must never replace (checkpoints/ and tb/ as a whole too).
_RUN_FILES = ("model_weights.pt", "metrics.json", "eval_metrics.json", "config.yaml", "log.txt",
              "classes.json")
_RUN_DIRS = ("checkpoints", "tb")


def _best_checkpoints(ckpt_dir: Path) -> List[Path]:
    """``best-e{epoch}-top1={score}.pt`` files, highest score first (newest epoch on ties)."""
    from .handlers.checkpoint import BEST_PREFIX

    def key(p: Path) -> Tuple[float, str]:
        try:
            score = float(p.stem.rsplit("top1=", 1)[1])
        except (IndexError, ValueError):
            score = float("-inf")
        return score, p.stem
    return sorted(ckpt_dir.glob(f"{BEST_PREFIX}*.pt"), key=key, reverse=True)


def find_run_weights(outdir: Path, model_name: str) -> Tuple[Path, str]:
    """The weights of the run in ``outdir`` and what they are: the final weights
    (``model_weights.pt``), else the best checkpoint, else the newest valid resume point."""
    final = outdir / "model_weights.pt"
    if final.is_file():
        return final, "final weights"
    best, _ = _first_loadable(_best_checkpoints(outdir / "checkpoints"), model_name)
    if best is not None:
        return best, "best checkpoint"
    found, _ = _newest_valid_checkpoint(outdir / "checkpoints", model_name)
    if found is not None:
        return found, "newest resume point"
    raise UsageError(f"no trained weights in {outdir} (no model_weights.pt, best or resume "
                     "checkpoint); train first or pass --resume PATH")


def export_path(name: str, outdir: Path, source: Path) -> Path:
    """Where ``--export NAME`` writes: ``NAME.pth`` when NAME has no suffix (as the official
    script does), else NAME. Never a file of the run directory nor the weights being read."""
    if not name or name.endswith(("/", os.sep)) or Path(name).is_dir():
        raise UsageError(f"--export: {name!r} is not a file name")
    out = Path(name)
    if not out.suffix:
        out = out.with_name(out.name + ".pth")
    if not out.parent.is_dir():
        raise UsageError(f"--export: directory not found: {out.parent}")
    target, run = out.resolve(), outdir.resolve()
    if (target in [run / f for f in _RUN_FILES]
            or any(target.is_relative_to(run / d) for d in _RUN_DIRS)):
        raise UsageError(f"--export: {out} is a file of the run directory {outdir}; "
                         "export somewhere else")
    if target == source.resolve():
        raise UsageError(f"--export: {out} is the file being exported; export somewhere else")
    return out


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` so that it is either the old file or the complete new one."""
    from .files import atomic_write_text
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise UsageError(f"cannot write {path}: {reason}") from None


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
        from .export import export_weights
        export_weights(cfg, path, out)
        print(f"exported {path} to {out}")
        return ExitCode.OK
    # --eval-only writes OUTDIR/eval_metrics.json: the run directory's lock first (--export
    # writes outside it and only reads it, so it takes none).
    lock = _lock_run_dir(outdir, argv) if _writes_run_dir(a) else None
    written = False
    try:
        if what is not None:
            print(f"evaluating {what} {path}", file=sys.stderr)
        from .evaluate import evaluate
        m = evaluate(cfg, path)
        print(f"Validation: Top1: {m['top1']:.3f} | Top5: {m['top5']:.3f}")
        # The official script's eval output, under its own name: never the training run's
        # metrics.json.
        target = outdir / "eval_metrics.json"
        _atomic_write_text(target, json.dumps({"top1": float(m["top1"]),
                                               "top5": float(m["top5"])}) + "\n")
        written = True
    finally:
        if lock is not None:
            lock.release(discard=not written)
    print(f"wrote {target}")
    return ExitCode.OK


def console_main(body: Callable[[List[str]], int], argv: Optional[Sequence[str]],
                 user_errors: Tuple[type, ...] = ()) -> int:
    """Run a console command's ``body(argv)`` with the shared exit statuses: a user error (bad
    input) is one ``error:`` line and 2, a failed write 1, Ctrl-C 130."""
    from .handlers.checkpoint import CheckpointWriteError
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return body(argv)
    except CheckpointWriteError as e:  # a failure of the machine (disk full), not of the input
        print(f"error: {one_line(e)}", file=sys.stderr)
        return ExitCode.FAILED
    except (*_user_errors(), *user_errors) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return ExitCode.USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.KEYBOARD_INTERRUPT


def main(argv: Optional[List[str]] = None) -> int:
    """Console entry point; returns the exit status."""
    return console_main(run_cli, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
