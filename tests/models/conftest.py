"""Model tests run single-threaded by default.

Their tensors are small (64x64 inputs, batch <= 3), where intra-op threading gains little, and
on a shared CPU an oversubscribed OpenMP pool spin-waits: the reference comparisons took 54 s
with 2 threads against 14 s with 1 on a 2-core machine under load. Set RESNEST_TEST_THREADS to
use more.
"""
from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _model_test_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("RESNEST_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(before)
