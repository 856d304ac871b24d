"""Shared fixtures: tiny models and loaders for the engine and handler tests."""
import logging
import os

import pytest
import torch

from resnest_engine.handlers import setup_logger
from tests.support.tiny_models import make_loader, make_tiny_model


@pytest.fixture
def tiny_model():
    return make_tiny_model


@pytest.fixture
def loader():
    return make_loader


@pytest.fixture
def log_file(tmp_path):
    """``setup_logger`` to ``tmp_path / "log.txt"`` (no console), removed afterwards."""
    path = tmp_path / "log.txt"
    setup_logger(path, stream=False)
    yield path
    log = logging.getLogger("resnest_engine")
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()


@pytest.fixture(autouse=True, scope="module")
def _single_threaded():
    """In-process tests run single-threaded (RESNEST_TEST_THREADS to change): their tensors are
    small, and on a shared 2-core machine an oversubscribed OpenMP pool spin-waits (a resnest14
    step at 32 px took 4.4 s with 2 threads against 0.95 s with 1). CLI subprocesses get
    OMP_NUM_THREADS=1 from ``cli_env``."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("RESNEST_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _environ_restored():
    """os.environ as before each test. Libraries set variables in it as they work (torch.export
    and inductor: TORCHINDUCTOR_CACHE_DIR, TORCH_WARM_POOL, KMP_DUPLICATE_LIB_OK); one left
    behind would make the next CLI test restart the fork server (tests/support/zygote.py
    restarts it when a variable read at load time changes), a torch import each time."""
    before = dict(os.environ)
    yield
    for name in set(os.environ) - set(before):
        del os.environ[name]
    os.environ.update(before)


def pytest_collection_modifyitems(config, items):
    """Slow tests first (stable order otherwise): with `make test`'s work-stealing xdist workers
    the longest tests start early instead of ending the run on one busy worker."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# scikit-learn sets these when it is imported (for its own OpenMP); its first import in a test
# would change the environment the CLI tests' fork server was started with (KMP_* is read at
# load time), and the server would restart, a torch import each time. Set as scikit-learn sets
# them, first.
os.environ.setdefault("KMP_DUPLICATE_LIB_OK", "True")
os.environ.setdefault("KMP_INIT_AT_FORK", "FALSE")

# RESNEST_TEST_CPU_LOG=FILE: each test's CPU seconds (this process, the processes it waited for
# and the commands tests/support/zygote.py forked for it, with their DDP workers) appended to
# FILE, to see where `make test`'s CPU-minutes go (the suite's budget is CPU time: 2 cores share
# it). Processes nobody waits for (fork-server workers) are missed: a cgroup sees them all.
_CPU_LOG = os.environ.get("RESNEST_TEST_CPU_LOG")


def _cpu_seconds():
    import resource
    from tests.support import zygote
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return (own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
            + zygote.forked_cpu_seconds)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not _CPU_LOG:
        yield
        return
    start = _cpu_seconds()
    yield
    with open(_CPU_LOG, "a") as f:
        f.write(f"{_cpu_seconds() - start:.2f}\t{item.nodeid}\n")
