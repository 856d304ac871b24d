"""Starting the processes of a run: one process, spawned workers (one per GPU by default),
torchrun workers or SLURM tasks; which process writes the run directory; the world size."""
from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import logging
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence, Tuple

import ignite.distributed as idist
import torch
from torch.multiprocessing import ProcessExitedException

from ..config import config_from_dict, config_to_dict
from ..handlers.interrupt import defer_signals
from .exit_codes import ExitCode, exit_status
from ..workflows.train import Outcome, train
from .args import _check_dist_flags, resolve_official_flags
from .console import UsageError, report_error

__all__ = ["default_nproc_per_node", "resolve_launch_args"]

#: The exit status of each way a training run ends.
OUTCOME_EXIT_STATUS = {Outcome.FINISHED: ExitCode.OK, Outcome.NAN: ExitCode.NAN,
                       Outcome.INTERRUPTED: ExitCode.INTERRUPTED, Outcome.UNFINISHED: ExitCode.FAILED}


def default_nproc_per_node(a: argparse.Namespace) -> Optional[int]:
    """Processes to start on this node: ``--nproc-per-node`` when given; else, like the official
    script, one per visible CUDA device when there are several (or any, for a multi-node run) and
    this is not a torchrun worker nor a task of a multi-task ``srun``; else ``None`` (one process,
    this one)."""
    if a.nproc_per_node is not None or _under_torchrun() or _under_slurm():
        return a.nproc_per_node
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


def _die_with(pid: int) -> None:
    """SIGKILL this process as soon as process ``pid`` (the launcher) has ended. A worker forked
    by the fork server is the server's child, so ``PR_SET_PDEATHSIG`` ties it to the server,
    which outlives a killed launcher for a while; a thread waits on the launcher itself."""
    def watch() -> None:
        try:
            poller = select.poll()
            poller.register(os.pidfd_open(pid), select.POLLIN)
            poller.poll()  # readable once the process has ended
        except (AttributeError, OSError):  # no pidfd (old kernel, not Linux): poll the pid
            while True:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    pass
                time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def _worker(local_rank: int, cfg_dict: dict, outdir: str, resume: Optional[str],
            preamble: Sequence[str] = (), launcher_pid: Optional[int] = None,
            environ: Optional[dict] = None) -> None:
    """Body of every process; ends with ``sys.exit(code)`` so the launcher sees the status.
    ``launcher_pid``: the process that started this one (the worker dies with it);
    ``environ``: the launcher's environment at the launch (a fork server's children inherit the
    server's, which is the one of the launcher's first launch)."""
    _set_parent_death_signal()
    if launcher_pid is not None:
        _die_with(launcher_pid)
        defer_signals()  # a pre-emption passed on during start-up: a resume point, not death
    if environ is not None and environ != dict(os.environ):
        os.environ.clear()
        os.environ.update(environ)
    # ignite's engines log every exception before re-raising it; the CLI reports errors itself.
    logging.getLogger("ignite.engine").setLevel(logging.CRITICAL)
    code = ExitCode.FAILED
    try:
        result = train(config_from_dict(cfg_dict), Path(outdir), Path(resume) if resume else None,
                       preamble)
        code = OUTCOME_EXIT_STATUS[result.outcome]
    except Exception as e:
        # A machine failure can be one rank's own (its disk, its worker): every rank says it.
        # Bad input is the same on every rank: rank 0 says it.
        code = report_error(e, show=exit_status(e) == ExitCode.FAILED or idist.get_rank() == 0)
        if code is None:
            raise
    # ignite's spawn wrapper destroys the process group only when this function returns, and
    # the exit below skips that: finalize here, on every launch path (after it, the world size
    # is 1 and the callers' own finalize is a no-op).
    distributed = idist.get_world_size() > 1
    if distributed:
        idist.finalize()
    sys.stdout.flush()
    sys.stderr.flush()
    if distributed and multiprocessing.parent_process() is not None:
        exit_distributed_process(code)
    sys.exit(code)


def exit_distributed_process(code: int) -> None:
    """End a process of a multi-process run once its files are written and its group destroyed,
    without the interpreter's teardown. In loaded test runs a DDP process that had finished its
    work aborted now and then in that teardown, inside C++ ("terminate called without an active
    exception", status -6), and the launch reported a finished run as failed. Everything the run
    writes is closed or waited for by then (the background checkpoint writer at the run's end);
    the log handlers are flushed and closed here."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code))


def worker_start_method() -> str:
    """How ``--nproc-per-node`` starts its workers: ``forkserver`` where the platform has it,
    with this module (torch, torchvision, ignite, the engine) imported once in the fork server,
    so each worker starts as a fork of it instead of importing everything again as ``spawn``'s
    fresh interpreters do (about 4 CPU-seconds each). Safe with CUDA: the server never
    initialises it. Elsewhere ``spawn``, ignite's default."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    multiprocessing.get_context("forkserver").set_forkserver_preload([__name__])
    return "forkserver"


def launch_training(a: argparse.Namespace, cfg, outdir: Path, resume: Optional[Path],
            preamble: Sequence[str] = ()) -> int:
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
        distributed = idist.get_world_size() > 1
        try:
            _worker(idist.get_local_rank(), *args)
        except SystemExit as e:
            if distributed:  # a torchrun/srun rank: a process of its own (see exit_distributed_process)
                exit_distributed_process(int(e.code or 0))
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

    def _forward(signum, _frame):
        # Pre-emption reaches the launcher: pass it on so every worker writes its resume point.
        for child in multiprocessing.active_children():
            os.kill(child.pid, signum)

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    try:
        with idist.Parallel(backend=backend, nproc_per_node=a.nproc_per_node, nnodes=a.nnodes,
                            node_rank=a.node_rank, master_addr=a.master_addr,
                            master_port=a.master_port, timeout=timeout,
                            start_method=worker_start_method()) as parallel:
            parallel.run(_worker, *args, os.getpid(), dict(os.environ))
    except ProcessExitedException as e:
        return e.exit_code if e.exit_code and e.exit_code > 0 else ExitCode.FAILED
    return ExitCode.OK
