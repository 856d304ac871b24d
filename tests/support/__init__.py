"""Helpers shared by the tests: fixtures of files, tiny models, CLI runs, fault injection."""
