"""Fixtures for the data tests."""
import pytest

from tests.data.data_helpers import make_folder


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path, {"train": {"cat": 3, "dog": 2, "emu": 2},
                                  "val": {"cat": 1, "dog": 2}})
