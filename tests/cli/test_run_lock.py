"""One writer per run directory (issue 13, part 1): a second writer fails at once, exit 2, with
the holder named; a dead holder never blocks; --force never moves a live run's directory."""
import json
import os
import signal
import subprocess
import time

import pytest
import yaml

from tests.support.cli import TINY, cli_env, merge, popen_cli, run_main
from resnest_engine.storage.run_lock import (LOCK_NAME, RunDirLock, RunDirLockedError, has_run_content,
                                     read_holder)

# 6 iterations an epoch, 2 epochs: the winner of a race holds the lock for seconds, far longer
# than the start-up skew of two processes started together.
RACE = merge(TINY, {"DATA": {"SYNTHETIC_SIZE": 96}, "OPTIMIZER": {"WARMUP_EPOCHS": 0}})
START_LINE = "resnest-train arguments"


def _config(tmp_path, cfg=TINY):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _assert_in_use(r, holder_pid, out):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith(f"error: --outdir {out} is in use by another run (host "), lines[0]
    assert f"pid {holder_pid}, started " in lines[0] and "resnest-train --config-file" in lines[0]
    assert lines[0].endswith("wait for it or use another --outdir"), lines[0]


def _assert_one_run(out, epochs=2):
    log = (out / "log.txt").read_text()
    assert log.count(START_LINE) == 1, log
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [LOCK_NAME, "checkpoints", "classes.json", "config.yaml", "log.txt", "metrics.json",
         "model_weights.pt", "model_weights.pt.checksum"])
    assert (out / LOCK_NAME).read_text() == ""  # released: the holder record is emptied


def _stopped_live_run(tmp_path, out):
    """A run that holds ``out`` and has written its first resume point, stopped (SIGSTOP) so
    that the racing start meets it however slowly that start comes up."""
    live = popen_cli("--config-file", _config(tmp_path), "--outdir", out)
    deadline = time.monotonic() + 120
    while not list((out / "checkpoints").glob("resume-*.pt")):
        assert live.poll() is None, live.communicate()
        assert time.monotonic() < deadline, "the live run wrote no resume point"
        time.sleep(0.05)
    os.kill(live.pid, signal.SIGSTOP)
    assert read_holder(out)["pid"] == live.pid
    return live


def _finish(live):
    os.kill(live.pid, signal.SIGCONT)
    stdout, stderr = live.communicate(timeout=240)
    assert live.returncode == 0, stderr
    return stdout


@pytest.mark.slow  # resnest-train processes
def test_two_simultaneous_starts_one_wins(tmp_path):
    cfg, out = _config(tmp_path, RACE), tmp_path / "new" / "run"
    procs = [popen_cli("--config-file", cfg, "--outdir", out) for _ in range(2)]
    ended = {}
    deadline = time.monotonic() + 240
    while len(ended) < 2 and time.monotonic() < deadline:
        for p in procs:
            if p.pid not in ended and p.poll() is not None:
                ended[p.pid] = time.monotonic()
        time.sleep(0.05)
    results = {p.pid: (p.returncode, *p.communicate()) for p in procs}
    codes = sorted(code for code, _, _ in results.values())
    assert codes == [0, 2], results
    winner = next(p for p in procs if p.returncode == 0)
    loser = next(p for p in procs if p.returncode == 2)
    _assert_in_use(subprocess.CompletedProcess([], 2, *results[loser.pid][1:]), winner.pid, out)
    assert ended[loser.pid] < ended[winner.pid], "the loser waited for the winner"
    assert results[loser.pid][1] == ""
    _assert_one_run(out)


@pytest.mark.slow  # resnest-train processes
def test_resume_force_and_eval_racing_a_live_run(tmp_path):
    out = tmp_path / "run"
    live = _stopped_live_run(tmp_path, out)
    try:
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        # A requeued copy of the job: refused before it reads or writes anything.
        r = run_main("--config-file", _config(tmp_path), "--outdir", out, "--resume", "auto")
        _assert_in_use(r, live.pid, out)
        # --force never moves a directory a live run holds.
        r = run_main("--config-file", _config(tmp_path), "--outdir", out, "--force")
        _assert_in_use(r, live.pid, out)
        assert not list(tmp_path.glob("run.bak-*"))
        # --eval-only writes eval_metrics.json into the run directory: refused the same way.
        r = run_main("--config-file", _config(tmp_path), "--outdir", out, "--eval-only")
        _assert_in_use(r, live.pid, out)
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    finally:
        _finish(live)
    _assert_one_run(out)
    # Once the run has ended, --force moves it aside (lock file and all) and trains afresh.
    r = run_main("--config-file", _config(tmp_path), "--outdir", out, "--force",
                 "TRAINING.EPOCHS=1")
    assert r.returncode == 0, r.stderr
    moved = list(tmp_path.glob("run.bak-*"))
    assert len(moved) == 1 and (moved[0] / LOCK_NAME).is_file()
    assert (moved[0] / "log.txt").read_text().count(START_LINE) == 1
    assert (out / "log.txt").read_text().count(START_LINE) == 1


@pytest.mark.slow  # resnest-train processes
def test_a_sigkilled_run_never_blocks_the_next_start(tmp_path):
    out = tmp_path / "run"
    # A DataLoader worker too: a forked child must not keep the dead run's lock alive.
    cfg = _config(tmp_path, merge(TINY, {"DATA": {"WORKERS": 1}, "TRAINING": {"EPOCHS": 2}}))
    env = dict(cli_env(), RESNEST_ENGINE_KILL_AT_ITER="4")  # 3 iterations an epoch
    killed = popen_cli("--config-file", cfg, "--outdir", out, env=env)
    killed.communicate(timeout=240)
    assert killed.returncode == -signal.SIGKILL
    assert read_holder(out)["pid"] == killed.pid  # the record stays; the OS lock does not
    r = run_main("--config-file", cfg, "--outdir", out, "--resume", "auto")
    assert r.returncode == 0, r.stderr
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]


def test_run_dir_lock_unit(tmp_path):
    d = tmp_path / "a" / "run"
    first = RunDirLock(d, command="resnest-train --config-file x.yaml").acquire()
    assert first.locked and d.is_dir() and not has_run_content(d)
    holder = read_holder(d)
    assert holder["pid"] == os.getpid() and holder["command"] == "resnest-train --config-file x.yaml"
    with pytest.raises(RunDirLockedError) as e:  # another open file description: refused
        RunDirLock(d, label=f"--outdir {d}").acquire()
    assert e.value.holder["pid"] == os.getpid()
    msg = str(e.value)
    assert msg.startswith(f"--outdir {d} is in use by another run (host ")
    assert f"pid {os.getpid()}, started " in msg and ": resnest-train --config-file x.yaml)" in msg
    # A forked child shares the lock's file description but does not keep the lock.
    r_fd, w_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child: past the at-fork hooks once fork() returns
        os.write(w_fd, b"x")
        time.sleep(5)
        os._exit(0)
    os.close(w_fd)
    assert os.read(r_fd, 1) == b"x"
    os.close(r_fd)
    try:
        first.release()
        assert (d / LOCK_NAME).read_text() == ""
        with RunDirLock(d) as second:  # through, while the forked child is still alive
            assert second.locked and read_holder(d)["pid"] == os.getpid()
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    # A lock taken on a directory that then moves (--force) does not hold the new one.
    moved = RunDirLock(d).acquire()
    d.rename(tmp_path / "moved")
    with RunDirLock(d):
        pass
    moved.release()
    # discard: nothing was written, so what the lock created goes again.
    fresh = RunDirLock(tmp_path / "fresh").acquire()
    fresh.release(discard=True)
    assert not (tmp_path / "fresh").exists()
    (tmp_path / "afile").write_text("")
    with pytest.raises(Exception, match="not a directory"):
        RunDirLock(tmp_path / "afile").acquire()


def test_a_file_system_without_locks_warns_and_goes_on(tmp_path, monkeypatch, capsys):
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    monkeypatch.setattr(fcntl, "flock", no_locks)
    lock = RunDirLock(tmp_path / "run", label="--outdir run").acquire()
    assert not lock.locked
    assert "warning: cannot lock --outdir run (No locks available)" in capsys.readouterr().err
    lock.release()
