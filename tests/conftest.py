"""Shared fixtures: tiny models and loaders for the engine and handler tests."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/tiny_models.py

from tiny_models import make_loader, make_tiny_model  # noqa: E402


@pytest.fixture
def tiny_model():
    return make_tiny_model


@pytest.fixture
def loader():
    return make_loader
