"""Resolve ``TRAINING.AMP: auto`` and ``MODEL.CHANNELS_LAST: auto`` for the device at hand."""
from __future__ import annotations

import functools
from typing import Optional, Tuple, Union

import torch

__all__ = ["resolve_amp", "resolve_channels_last", "cpu_has_native_bf16", "amp_warning"]


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 arithmetic (AVX512-BF16 or AMX), read from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _device_type(device: Union[str, torch.device, None]) -> str:
    return torch.device(device).type if device is not None else (
        "cuda" if torch.cuda.is_available() else "cpu")


def resolve_amp(setting: str, device: Union[str, torch.device, None] = None) -> Tuple[str, str]:
    """``(off|fp16|bf16, why)``. ``auto``: bf16 on CUDA devices that support it, fp16 with loss
    scaling on older CUDA devices, off on CPU (autocast there is slower without native bf16)."""
    if setting != "auto":
        return setting, "as set"
    if _device_type(device) == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: this CUDA device supports bf16"
        return "fp16", "auto: this CUDA device has no bf16, fp16 with loss scaling"
    return "off", "auto: off on CPU"


def resolve_channels_last(setting: Union[bool, str],
                          device: Union[str, torch.device, None] = None) -> Tuple[bool, str]:
    """``(on?, why)``. ``auto``: on for CUDA (tensor-core convolutions want NHWC) and on CPU,
    where it was measured faster for these models (resnest14 at 32 px: ~1.25x with 2 threads)."""
    if setting != "auto":
        return bool(setting), "as set"
    kind = _device_type(device)
    return True, f"auto: on for {kind.upper() if kind == 'cuda' else 'CPU'}"


def amp_warning(setting: str, device: Union[str, torch.device, None] = None) -> Optional[str]:
    """A one-line warning for mixed precision that will be slow here, else None."""
    if setting in ("bf16", "fp16") and _device_type(device) == "cpu" and not cpu_has_native_bf16():
        return (f"TRAINING.AMP {setting} on a CPU without native bf16/fp16 arithmetic (no "
                "AVX512-BF16/AMX): autocast is emulated and much slower than fp32 here (a "
                "resnest50 step was 10-12x slower); use TRAINING.AMP off or auto")
    return None
