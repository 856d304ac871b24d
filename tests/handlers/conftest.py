"""Fixtures for the handlers tests."""
import pytest

from handler_helpers import make_loader, make_tiny_model


@pytest.fixture
def tiny_model():
    return make_tiny_model


@pytest.fixture
def loader():
    return make_loader
