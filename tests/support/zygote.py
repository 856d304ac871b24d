"""A fork server for the tests' command-line runs: ``python -m resnest_engine.cli ...`` (and the
other ``resnest_engine`` commands) as forks of one process that imported torch, torchvision,
ignite and the engine once, instead of fresh interpreters that import them again.

Why by hand: each fresh interpreter spends about 3.5 CPU-seconds importing before it does
anything, and the suite starts about fifty of them; ``multiprocessing``'s forkserver (what
``--nproc-per-node`` uses for its workers) runs a Python function, not a command line with its
own pipes, working directory, environment and exit status, so it cannot stand in for
``subprocess``. What a test sees is a ``subprocess.Popen``-like object: the child's real pid
(signals, ``/proc``, ``pgrep -P`` work as on a fresh process), its stdout/stderr pipes and its
exit status (negative for a signal, as ``Popen`` reports it).

A child is a fresh process in every way the tests look at: the request's environment, working
directory and ``sys.argv``; default signal handlers; NumPy's global RNG reseeded from the OS;
``sitecustomize`` (the fault-injection plugin, tests/fault_site) run again under the new
environment, before the engine is imported again when it installs a fault; the command run as ``__main__`` by ``runpy`` as ``python -m`` does, and the
interpreter's normal exit (atexit handlers, non-daemon threads joined). A request whose
environment differs from the server's in a variable read when a library is loaded (``OMP_*``,
``TORCH*``, ``LD_*``, ``PYTHON*``, ...) runs as a fresh interpreter instead, and so does every
request when ``RESNEST_TEST_FRESH_PROCESSES=1`` (the whole suite as fresh processes).
"""
from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

PIPE = subprocess.PIPE
FRESH_ENV = "RESNEST_TEST_FRESH_PROCESSES"
# Variables a library reads when it is loaded (libgomp, torch, the interpreter, the allocator):
# a forked child would keep the server's values, so requests that change one run fresh.
_LOAD_TIME_PREFIXES = ("OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_", "NUMEXPR_", "TORCH",
                       "PYTORCH_", "CUDA_", "NVIDIA_", "LD_", "PYTHON", "MALLOC", "TF_")
# Imported once in the server: what every command's start-up imports.
_PRELOAD = ("resnest_engine.cli", "resnest_engine.cli.train", "resnest_engine.workflows.train",
            "resnest_engine.workflows.evaluate", "resnest_engine.workflows.predict",
            "resnest_engine.workflows.average", "resnest_engine.workflows.shards",
            "yaml", "numpy")


# ---------------------------------------------------------------------------------------------
# The server (``python -m tests.support.zygote SOCKET``)

def _serve(path: str):
    """Accept requests until the parent goes; returns the request in a forked child."""
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    children: dict[int, socket.socket] = {}
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    while os.getppid() == parent:
        for _key, _ in sel.select(timeout=0.05):
            conn, _ = listener.accept()
            msg, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
            request = json.loads(msg.decode())
            pid = os.fork()
            if pid == 0:
                sel.close()
                listener.close()
                conn.close()
                for c in children.values():
                    c.close()
                for target, fd in enumerate(fds):
                    os.dup2(fd, target)
                    os.close(fd)
                return request
            for fd in fds:
                os.close(fd)
            conn.sendall(f"{pid}\n".encode())
            children[pid] = conn
        while children:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = children.pop(pid, None)
            if conn is not None:
                cpu = usage.ru_utime + usage.ru_stime
                with contextlib.suppress(OSError):
                    conn.sendall(f"{os.waitstatus_to_exitcode(status)} {cpu:.3f}\n".encode())
                conn.close()
    return None


def _run_request(request) -> int:
    """In the forked child: become ``python -m MODULE ARGS`` under the request's environment."""
    import importlib
    import runpy

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[0] = request["cwd"]
    import numpy as np
    np.random.seed()  # a fresh interpreter's global RNG is seeded from the OS, not inherited
    if any(k.startswith("RESNEST_ENGINE_") for k in request["env"]):
        # Fault injection (tests/support/fault_injection.py) patches the engine before it is
        # imported, as sitecustomize does in a fresh process: forget the server's copy of the
        # engine so that this child imports it again after the patches.
        for name in [m for m in sys.modules if m.split(".")[0] == "resnest_engine"
                     or m.startswith("tests.support.fault_injection")]:
            del sys.modules[name]
    if "sitecustomize" in sys.modules:
        importlib.reload(sys.modules["sitecustomize"])
    sys.argv = [request["module"], *request["args"]]
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    return 0


def _server_main(path: str, preload) -> None:
    import importlib
    # Die with the test process that started us (Linux), as a fresh child would not outlive it.
    with contextlib.suppress(OSError):
        import ctypes
        ctypes.CDLL("libc.so.6").prctl(1, int(signal.SIGTERM))
    for name in preload:
        importlib.import_module(name)
    # What the preload made stays out of the garbage collector's sight (gc.freeze, as CPython's
    # docs advise before fork): a child's collections would otherwise walk, and so copy-on-write,
    # every page of it. A resnest-train run of the tests' tiny config: 2.9 CPU-s to 2.0.
    gc.collect()
    gc.freeze()
    request = _serve(path)
    if request is not None:
        sys.exit(_run_request(request))


# ---------------------------------------------------------------------------------------------
# The client

class ZygoteProcess:
    """The part of :class:`subprocess.Popen` the tests use, for a forked command."""

    def __init__(self, conn: socket.socket, pid: int, stdout, stderr, args):
        self.args = args
        self.pid = pid
        self.stdout, self.stderr = stdout, stderr
        self.returncode = None
        self.cpu_seconds = 0.0
        self._conn = conn
        self._buf = b""

    def _read_status(self, timeout):
        self._conn.settimeout(timeout)
        try:
            while not self._buf.endswith(b"\n"):
                chunk = self._conn.recv(64)
                if not chunk:
                    raise RuntimeError(f"the test fork server went away while pid {self.pid} ran")
                self._buf += chunk
        except (socket.timeout, BlockingIOError):
            return None
        code, cpu = self._buf.decode().split()
        self.returncode, self.cpu_seconds = int(code), float(cpu)
        _record_cpu(self.cpu_seconds)
        self._conn.close()
        return self.returncode

    def poll(self):
        if self.returncode is None:
            self._read_status(0)
        return self.returncode

    def wait(self, timeout=None):
        if self.returncode is None and self._read_status(timeout) is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, sig):
        if self.returncode is None:
            with contextlib.suppress(OSError):
                os.kill(self.pid, sig)

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout=None):
        """Read stdout and stderr to their ends, then wait (as ``Popen.communicate``)."""
        out, threads = {}, []
        for name in ("stdout", "stderr"):
            stream = getattr(self, name)
            if stream is None:
                out[name] = None
                continue
            t = threading.Thread(target=lambda n=name, s=stream: out.__setitem__(n, s.read()),
                                 daemon=True)
            t.start()
            threads.append(t)
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        for name in ("stdout", "stderr"):
            if getattr(self, name) is not None:
                getattr(self, name).close()
        return out["stdout"], out["stderr"]


_server = None
_socket_dir = None
_stop_registered = False
_lock = threading.Lock()
#: CPU seconds of the forked commands that ended in this process (the CPU log of tests/conftest.py:
#: they are not this process's children, so ``RUSAGE_CHILDREN`` does not see them).
forked_cpu_seconds = 0.0


def _record_cpu(seconds):
    global forked_cpu_seconds
    forked_cpu_seconds += seconds
    if _server is not None:
        _server.reported_cpu += seconds  # what the running server's commands reported


def _start_server(env):
    global _server, _socket_dir, _stop_registered
    if not _stop_registered:
        atexit.register(_stop_server)
        _stop_registered = True
    _socket_dir = tempfile.mkdtemp(prefix="resnest-zygote-")
    path = os.path.join(_socket_dir, "sock")
    _server = subprocess.Popen([sys.executable, "-m", "tests.support.zygote", path, *_PRELOAD],
                               stdin=subprocess.DEVNULL, stdout=PIPE, env=env,
                               cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    if _server.stdout.readline() != b"ready\n":
        raise RuntimeError(f"the test fork server did not start (status {_server.wait()})")
    _server.base_env = dict(env)
    _server.path = path
    _server.reported_cpu = 0.0


def _stop_server():
    import shutil
    global _server, _socket_dir
    if _server is not None and _server.poll() is None:
        _server.terminate()
        with contextlib.suppress(OSError):
            _server.wait(10)
        # Reaped, the server adds to RUSAGE_CHILDREN its own CPU and that of every command it
        # waited for, which the commands reported already: counted once, the restart's own cost
        # (its imports) is what is left for the test that caused it.
        _record_cpu(-_server.reported_cpu)
    if _socket_dir:
        shutil.rmtree(_socket_dir, ignore_errors=True)
    _server = _socket_dir = None


def _base_env():
    """The server's environment: a CLI test's (``cli_env``) as it is now, whatever the request.
    Without fault-injection variables: the server must not install faults (its children would
    inherit them); a child that asks for one installs it (sitecustomize)."""
    from tests.support.cli import cli_env
    return {k: v for k, v in cli_env().items() if not k.startswith("RESNEST_ENGINE_")}


def _load_time_changes(a, b):
    return sorted(k for k in set(a) | set(b)
                  if a.get(k) != b.get(k) and k.startswith(_LOAD_TIME_PREFIXES))


def _forkable(env, base) -> bool:
    """Whether a command with environment ``env`` can be a fork of a server started with
    ``base``."""
    if os.environ.get(FRESH_ENV) == "1" or not hasattr(socket, "send_fds") or \
            not hasattr(os, "fork"):
        return False
    return not _load_time_changes(env, base)


def popen_module(module, *args, env, cwd=None):
    """``subprocess.Popen([python, "-m", module, *args], stdout=PIPE, stderr=PIPE, text=True)``,
    forked from the test fork server when the environment allows (see the module docstring),
    else a fresh interpreter."""
    args = [str(a) for a in args]
    cwd = str(cwd or os.getcwd())
    cmd = [sys.executable, "-m", module, *args]
    base = _base_env()
    if not _forkable(env, base):
        return subprocess.Popen(cmd, stdout=PIPE, stderr=PIPE, text=True, env=env, cwd=cwd,
                                stdin=subprocess.DEVNULL)
    with _lock:
        # (Re)started with today's cli_env(): an in-process compile sets TORCH_WARM_POOL and
        # KMP_DUPLICATE_LIB_OK in this process's environment, and so in every later request.
        if _server is None or _server.poll() is not None or \
                _load_time_changes(_server.base_env, base):
            _stop_server()
            _start_server(base)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    child_fds = [os.open(os.devnull, os.O_RDONLY), out_w, err_w]  # the child's 0, 1, 2
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(_server.path)
        request = {"module": module, "args": args, "env": dict(env), "cwd": cwd}
        socket.send_fds(conn, [json.dumps(request).encode()], child_fds)
        line = b""
        while not line.endswith(b"\n"):
            chunk = conn.recv(1)
            if not chunk:
                raise RuntimeError("the test fork server closed the connection")
            line += chunk
    finally:
        for fd in child_fds:
            os.close(fd)
    streams = [os.fdopen(fd, "r", encoding="utf-8", errors="replace") for fd in (out_r, err_r)]
    return ZygoteProcess(conn, int(line), *streams, cmd)


def run_module(module, *args, env, cwd=None, timeout=None):
    """``subprocess.run([python, "-m", module, *args], capture_output=True, text=True)`` through
    :func:`popen_module`; a timeout kills the child and raises ``TimeoutExpired``."""
    proc = popen_module(module, *args, env=env, cwd=cwd)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


if __name__ == "__main__":
    _server_main(sys.argv[1], sys.argv[2:])
