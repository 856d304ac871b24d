"""RNG states as tensors and plain types, so checkpoints load with ``weights_only=True``.

NumPy's state is a tuple holding an ndarray, which the weights-only unpickler refuses; it is
stored as a tensor here and rebuilt on load instead of allowlisting NumPy globals.
"""
from __future__ import annotations

import random
from typing import Any, Dict, List

import numpy as np
import torch

__all__ = ["decode_ignite_rng_states", "decode_numpy_state", "decode_python_state",
           "encode_ignite_rng_states", "encode_numpy_state", "encode_python_state",
           "get_rng_state", "set_rng_state"]


def encode_python_state(state: tuple) -> Dict[str, Any]:
    version, internal, gauss = state
    return {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss}


def decode_python_state(d: Dict[str, Any]) -> tuple:
    return (d["version"], tuple(int(v) for v in d["state"].tolist()), d["gauss"])


def encode_numpy_state(state: tuple) -> Dict[str, Any]:
    name, keys, pos, has_gauss, cached = state
    return {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def decode_numpy_state(d: Dict[str, Any]) -> tuple:
    return (d["name"], d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"],
            d["cached_gaussian"])


def get_rng_state() -> Dict[str, Any]:
    """Python, NumPy, torch CPU and (when present) CUDA generator states."""
    state = {"python": encode_python_state(random.getstate()),
             "numpy": encode_numpy_state(np.random.get_state()),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    random.setstate(decode_python_state(state["python"]))
    np.random.set_state(decode_numpy_state(state["numpy"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def encode_ignite_rng_states(states: List[Any]) -> Dict[str, Any]:
    """ignite DeterministicEngine's ``[random, torch, numpy]`` list to plain types."""
    out = {"python": encode_python_state(states[0]), "torch": states[1]}
    if len(states) > 2:
        out["numpy"] = encode_numpy_state(states[2])
    return out


def decode_ignite_rng_states(d: Dict[str, Any]) -> List[Any]:
    out = [decode_python_state(d["python"]), d["torch"]]
    if "numpy" in d:
        out.append(decode_numpy_state(d["numpy"]))
    return out
