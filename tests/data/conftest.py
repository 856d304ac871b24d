"""Fixtures for the data tests."""
import pytest

from tests.support.data import make_folder


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path, {"train": {"cat": 3, "dog": 2, "emu": 2},
                                  "val": {"cat": 1, "dog": 2}})
