"""Fixtures for the engine tests."""
import pytest

from engine_helpers import make_loader, make_tiny_model


@pytest.fixture
def tiny_model():
    return make_tiny_model


@pytest.fixture
def loader():
    return make_loader
