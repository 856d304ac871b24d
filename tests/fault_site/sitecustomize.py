"""Loaded by every Python process started with tests/fault_site on PYTHONPATH (see
tests/support/fault_injection.py): installs the faults the environment asks for, nothing otherwise."""
import os

if any(os.environ.get(f"RESNEST_ENGINE_{k}") for k in ("KILL_AT_ITER", "KILL_IN_SAVE",
                                                         "FILL_DISK_BEFORE", "FILL_DISK_AT_ITER")):
    from tests.support.fault_injection import install

    install()
