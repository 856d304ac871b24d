"""Loaded by every Python process started with tests/fault_site on PYTHONPATH (see
tests/fault_injection.py): installs the faults the environment asks for, nothing otherwise."""
import os

if os.environ.get("RESNEST_ENGINE_KILL_AT_ITER") or os.environ.get("RESNEST_ENGINE_KILL_IN_SAVE"):
    from tests.fault_injection import install

    install()
