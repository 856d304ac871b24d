"""The tests' fork server (tests/support/zygote.py) gives a command what a fresh interpreter
would: its arguments, working directory, environment, pipes, exit status and a signal's status."""
import json
import os
import signal
import subprocess

import pytest

from tests.support import zygote
from tests.support.cli import cli_env

PROBE = "tests.support.zygote_probe"


def test_a_forked_command_sees_its_own_arguments_cwd_environment_and_status(tmp_path):
    env = dict(cli_env(), ZYGOTE_PROBE="one")
    first = zygote.run_module(PROBE, 0, 3, env=env, cwd=tmp_path, timeout=60)
    second = zygote.run_module(PROBE, 0, 0, env=dict(env, ZYGOTE_PROBE="two"), cwd=tmp_path,
                               timeout=60)
    assert (first.returncode, second.returncode) == (3, 0)
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["argv"] == ["0", "3"] and a["cwd"] == str(tmp_path) and a["probe"] == "one"
    assert b["probe"] == "two" and a["pid"] != b["pid"]
    assert a["main"] == PROBE  # run as ``python -m`` runs it
    assert a["draw"] != b["draw"]  # NumPy's global RNG seeded from the OS in each, not inherited
    assert first.stderr == "to stderr\n"


def test_a_signal_gives_the_negative_signal_number_and_a_timeout_kills():
    proc = zygote.popen_module(PROBE, 60, 0, env=cli_env())
    assert json.loads(proc.stdout.readline())["pid"] == proc.pid  # the real pid: signals work
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with pytest.raises(subprocess.TimeoutExpired):
        zygote.run_module(PROBE, 60, 0, env=cli_env(), timeout=1)


@pytest.mark.skipif(os.environ.get(zygote.FRESH_ENV) == "1", reason="every command runs fresh")
def test_a_load_time_variable_means_a_fresh_interpreter_and_only_for_that_command():
    fresh = zygote.popen_module(PROBE, 0, 0, env=dict(cli_env(), OMP_NUM_THREADS="2"))
    assert isinstance(fresh, subprocess.Popen)
    assert fresh.communicate(timeout=60)[0] and fresh.returncode == 0
    # the server's environment is cli_env()'s whatever came first: the next command is forked
    forked = zygote.popen_module(PROBE, 0, 0, env=dict(cli_env(), SOMETHING_ELSE="x"))
    assert isinstance(forked, zygote.ZygoteProcess)
    assert forked.communicate(timeout=60)[0] and forked.returncode == 0


@pytest.fixture
def own_server(monkeypatch):
    """A server of this test's own that preloads only NumPy (the probe's import), so that its
    restarts cost no torch import; this worker's server is put back as it was afterwards (it was
    started with the environment the test restores, so later tests need no restart either)."""
    monkeypatch.setattr(zygote, "_server", None)
    monkeypatch.setattr(zygote, "_socket_dir", None)
    monkeypatch.setattr(zygote, "_PRELOAD", ("numpy",))
    yield
    zygote._stop_server()


@pytest.mark.skipif(os.environ.get(zygote.FRESH_ENV) == "1", reason="every command runs fresh")
def test_the_server_follows_a_load_time_variable_set_in_this_process(own_server, monkeypatch):
    """An in-process torch.compile sets TORCH_WARM_POOL and KMP_DUPLICATE_LIB_OK here: later
    commands (cli_env() copies this environment) are still forks, of a server restarted with it."""
    zygote.popen_module(PROBE, 0, 0, env=cli_env()).communicate(timeout=60)
    first = zygote._server.pid
    monkeypatch.setenv("TORCH_WARM_POOL", "0")
    proc = zygote.popen_module(PROBE, 0, 0, env=cli_env())
    assert zygote._server.pid != first and zygote._server.base_env["TORCH_WARM_POOL"] == "0"
    assert isinstance(proc, zygote.ZygoteProcess)
    assert proc.communicate(timeout=60)[0] and proc.returncode == 0
