"""Fixtures for the data tests."""
import pytest

from tests.support.data import make_folder
from tests.support.remote import S3Server, set_env


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path, {"train": {"cat": 3, "dog": 2, "emu": 2},
                                  "val": {"cat": 1, "dog": 2}})


@pytest.fixture
def s3(monkeypatch):
    """moto's S3 server on 127.0.0.1, the environment pointing at it (stopped after the test)."""
    server = S3Server()
    set_env(monkeypatch, server.env)
    yield server
    server.stop()
