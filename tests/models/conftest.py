"""Model tests: single-threaded, as every in-process test (see tests/conftest.py)."""
