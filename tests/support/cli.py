"""Shared helpers of the CLI tests."""
import contextlib
import ctypes
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.support import zygote

REPO = Path(__file__).resolve().parents[2]

TINY = {
    "FORMAT": "resnest-engine/1",
    "SEED": 0,
    "MODEL": {"NAME": "resnest14"},
    "DATA": {"DATASET": "synthetic", "IMAGE_SIZE": 32, "CROP_SIZE": 32, "SYNTHETIC_SIZE": 48,
             "SYNTHETIC_CLASSES": 4, "SMALL_IMAGE": True, "COLOR_JITTER": 0.0,
             "PCA_LIGHTING": 0.0, "WORKERS": 0},
    # no best checkpoint (a 69 MB file a run); the tests of best files ask for one
    "TRAINING": {"EPOCHS": 2, "BATCH_SIZE": 16, "TEST_BATCH_SIZE": 16, "DETERMINISTIC": True,
                 "KEEP_BEST": 0},
    "OPTIMIZER": {"LR": 0.4, "WARMUP_EPOCHS": 1},
    "LOGGING": {"LOG_EVERY": 1, "TENSORBOARD": False},
}


def merge(base, extra):
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in (extra or {}).items():
        if isinstance(v, dict):
            out.setdefault(k, {}).update(v)
        else:
            out[k] = v
    return out


def free_port():
    """A TCP port nobody listens on now (the OS's choice, so parallel test workers differ)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env():
    """The environment of a CLI subprocess. ``MASTER_PORT`` is a free port: a
    ``--nproc-per-node`` launch without ``--master-port`` uses it instead of ignite's fixed
    2222, which two tests running at once (``make test``'s xdist workers) would both bind."""
    env = dict(os.environ)
    env["MASTER_PORT"] = str(free_port())
    # tests/fault_site: the fault-injection plugin (tests/support/fault_injection.py), inert unless a
    # RESNEST_ENGINE_KILL_* variable is set.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests" / "fault_site"),
                                         env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_cli(*args, cwd=None, timeout=240, env=None, module="resnest_engine.cli"):
    """Run ``resnest-train`` (as ``python -m resnest_engine.cli``; another command with
    ``module``) and capture its output. The process is a fork of the tests' fork server
    (tests/support/zygote.py), which imported the engine once."""
    return zygote.run_module(module, *args, cwd=cwd, timeout=timeout, env=env or cli_env())


def popen_cli(*args, env=None, cwd=None, module="resnest_engine.cli"):
    """``resnest-train ARGS`` started with stdout/stderr pipes (a ``Popen``-like object): for
    tests that signal or watch a running command."""
    return zygote.popen_module(module, *args, env=env or cli_env(), cwd=cwd)


def run_main(*args):
    """Call ``resnest_engine.cli.main`` in this process (no interpreter start-up per call), with
    stdout/stderr captured; returns the same shape as ``run_cli``. For errors, and for small
    runs whose console behaviour is not the point (that is covered by ``run_cli`` tests). What
    a run changes in the process is put back afterwards (``process_state_restored``)."""
    import io

    from resnest_engine.cli import main
    out, err = io.StringIO(), io.StringIO()
    with process_state_restored(), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse
            code = e.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def _pdeathsig(value=None):
    """This process's parent-death signal (Linux prctl); set it to ``value`` if given."""
    if not sys.platform.startswith("linux"):
        return 0
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if value is not None:
        libc.prctl(1, int(value))  # PR_SET_PDEATHSIG
        return value
    sig = ctypes.c_int(0)
    libc.prctl(2, ctypes.byref(sig))  # PR_GET_PDEATHSIG
    return sig.value


@contextlib.contextmanager
def process_state_restored():
    """Undo what an in-process ``resnest-train`` leaves behind, so later tests in the same
    process see the state they would have seen without it: deterministic-algorithms mode, the
    thread count, the Python/NumPy/torch RNGs, SIGTERM/SIGINT handlers, the ``resnest_engine``
    and ``ignite`` loggers (the run's log-file handler closed) and the parent-death signal the
    CLI's worker sets."""
    import logging
    import random
    import signal

    import numpy as np
    import torch

    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    threads = torch.get_num_threads()
    rng = random.getstate(), np.random.get_state(), torch.get_rng_state()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    loggers = {}
    for name in ("resnest_engine", "ignite", "ignite.engine"):
        log = logging.getLogger(name)
        loggers[name] = (log, log.level, log.propagate, list(log.handlers))
    pdeathsig = _pdeathsig()
    try:
        yield
    finally:
        _pdeathsig(pdeathsig)
        for log, level, propagate, before in loggers.values():
            for h in list(log.handlers):
                if h not in before:
                    log.removeHandler(h)
                    h.close()
            for h in before:
                if h not in log.handlers:
                    log.addHandler(h)
            log.setLevel(level)
            log.propagate = propagate
        for s, h in handlers.items():
            if h is not None:  # None: not set from Python, nothing to put back
                signal.signal(s, h)
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])


def assert_user_error(r, *needles):
    """Exit status 2 and exactly one ``error: ...`` line on stderr holding every needle."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("W")]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


#: Overrides of recipes/digits.yaml for one short epoch: the "same weights as the folder" runs.
DIGITS_ONE_EPOCH = ["TRAINING.EPOCHS=1", "OPTIMIZER.WARMUP_EPOCHS=0", "TRAINING.BATCH_SIZE=32",
                    "TRAINING.TEST_BATCH_SIZE=50", "TRAINING.VAL_EVERY=1",
                    "TRAINING.CKPT_EVERY=1", "LOGGING.TENSORBOARD=false"]


def train_digits_one_epoch(outdir, *overrides):
    """recipes/digits.yaml with :data:`DIGITS_ONE_EPOCH` and ``overrides``, in this process,
    into ``outdir``; returns the final weights."""
    import torch
    r = run_main("--config-file", REPO / "recipes" / "digits.yaml", "--outdir", outdir,
                 *DIGITS_ONE_EPOCH, *overrides)
    assert r.returncode == 0, r.stderr
    return torch.load(Path(outdir) / "model_weights.pt", weights_only=True)


def assert_same_weights(a, b):
    """Two state dicts hold the same tensors under the same names, bitwise."""
    import torch
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"weights differ: {differ[:5]}"


def assert_same_result(a, b):
    """Run directories ``a`` and ``b`` end with bitwise the same weights and metrics.json."""
    import json

    import torch
    assert_same_weights(torch.load(Path(a) / "model_weights.pt", weights_only=True),
                        torch.load(Path(b) / "model_weights.pt", weights_only=True))
    assert json.loads((Path(a) / "metrics.json").read_text()) == \
        json.loads((Path(b) / "metrics.json").read_text())
