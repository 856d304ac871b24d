"""Float tolerances in units of the compared values' precision.

Two code paths that round differently (a fused kernel and a for-loop, another summation order,
another library's kernels) agree only to within the roundings each makes: a few units of
``eps(dtype) * magnitude``. A tolerance below one such unit passes or fails with the CPU's vector
code path (issue 25: fused and for-loop AdamW one ulp apart, 1.49e-8 for values in [0.125, 0.25),
against an atol of 1e-8).
"""
from __future__ import annotations

from typing import Optional

import torch


def eps(dtype: torch.dtype = torch.float32) -> float:
    """The spacing of ``dtype``'s values in [1, 2): one ulp of a value x is at most eps * |x|
    (float32 1.19e-7, float64 2.22e-16, bfloat16 7.81e-3, float16 9.77e-4)."""
    return torch.finfo(dtype).eps


def assert_close_ulps(actual: torch.Tensor, expected: torch.Tensor, ulps: float,
                      scale: Optional[float] = None, msg: Optional[str] = None) -> None:
    """Elementwise ``|actual - expected| <= ulps * eps * (|expected| + scale)``, eps of
    ``expected``'s dtype: at least ``ulps`` units in the last place of each value.

    ``ulps``: the roundings (at most one unit each) by which the two computations may differ;
    never below 1. ``scale``: the magnitude of what an element near zero was computed from (an
    optimizer step's size, the largest logit), whose roundings its own magnitude does not bound.
    """
    if ulps < 1:
        raise ValueError(f"ulps={ulps}: a tolerance below one unit is below the values' precision")
    e = eps(expected.dtype)
    torch.testing.assert_close(actual, expected, rtol=ulps * e, atol=ulps * e * (scale or 0.0),
                               msg=msg)
