"""Shared helpers of the CLI tests."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

TINY = {
    "FORMAT": "resnest-engine/1",
    "SEED": 0,
    "MODEL": {"NAME": "resnest14"},
    "DATA": {"DATASET": "synthetic", "IMAGE_SIZE": 32, "CROP_SIZE": 32, "SYNTHETIC_SIZE": 48,
             "SYNTHETIC_CLASSES": 4, "SMALL_IMAGE": True, "COLOR_JITTER": 0.0,
             "PCA_LIGHTING": 0.0, "WORKERS": 0},
    "TRAINING": {"EPOCHS": 2, "BATCH_SIZE": 16, "TEST_BATCH_SIZE": 16, "DETERMINISTIC": True},
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


def cli_env():
    env = dict(os.environ)
    # tests/fault_site: the fault-injection plugin (tests/fault_injection.py), inert unless a
    # RESNEST_ENGINE_KILL_* variable is set.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests" / "fault_site"),
                                         env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_cli(*args, cwd=None, timeout=240, env=None):
    """Run ``resnest-train`` (as ``python -m resnest_engine.cli``) and capture its output."""
    return subprocess.run([sys.executable, "-m", "resnest_engine.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env=env or cli_env())


def run_main(*args):
    """Call ``resnest_engine.cli.main`` in this process (no interpreter start-up per call), with
    stdout/stderr captured; returns the same shape as ``run_cli``. For errors that stop a run
    before training; the real console behaviour is covered by ``run_cli`` tests."""
    import contextlib
    import io

    from resnest_engine.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse
            code = e.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def assert_user_error(r, *needles):
    """Exit status 2 and exactly one ``error: ...`` line on stderr holding every needle."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("W")]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
