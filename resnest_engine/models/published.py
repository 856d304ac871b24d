"""The official published ResNeSt weights, fetched by name into the torch hub cache.

``torch.hub.load_state_dict_from_url(check_hash=True)`` downloads with a progress bar, verifies
that the file's sha256 starts with the 8 hex digits in its name (the official naming), and caches
it under ``torch.hub.get_dir()/checkpoints``; a wrong hash leaves nothing in the cache. The file
is loaded with ``weights_only=True``. ``RESNEST_WEIGHTS_URL`` replaces the official release prefix
(a local mirror for clusters without internet).
"""
from __future__ import annotations

import os
from typing import Dict

import torch

from ..errors import one_line
from ..storage.files import load_error_reason
from .weights import WeightsError, strip_prefixes

__all__ = ["OFFICIAL_WEIGHTS_URL", "PUBLISHED_WEIGHTS", "WEIGHTS_URL_ENV", "published_url",
           "published_cache_path", "load_published_state_dict"]

OFFICIAL_WEIGHTS_URL = "https://github.com/zhanghang1989/ResNeSt/releases/download/weights_step1"
WEIGHTS_URL_ENV = "RESNEST_WEIGHTS_URL"

#: Variant -> first 8 hex digits of the published file's sha256 (part of its file name).
PUBLISHED_WEIGHTS: Dict[str, str] = {
    "resnest50": "528c19ca", "resnest101": "22405ba7", "resnest200": "75117900",
    "resnest269": "0cc87c48",
    "resnest50_fast_1s1x64d": "d8fbf808", "resnest50_fast_2s1x64d": "44938639",
    "resnest50_fast_4s1x64d": "f74f3fc3", "resnest50_fast_1s2x40d": "32830b84",
    "resnest50_fast_2s2x40d": "9d126481", "resnest50_fast_4s2x40d": "41d14ed0",
    "resnest50_fast_1s4x24d": "d4a4f76f",
}


def _file_name(name: str) -> str:
    if name not in PUBLISHED_WEIGHTS:
        have = ", ".join(sorted(PUBLISHED_WEIGHTS))
        raise WeightsError(f"{name} has no published weights (published: {have}); pass a local "
                           f"file instead (MODEL.PRETRAINED: /path/to/weights.pth, e.g. timm's "
                           f"converted weights saved with torch.save)")
    return f"{name}-{PUBLISHED_WEIGHTS[name]}.pth"


def published_url(name: str) -> str:
    """Where the weights of ``name`` are fetched from (``RESNEST_WEIGHTS_URL`` if set)."""
    base = os.environ.get(WEIGHTS_URL_ENV) or OFFICIAL_WEIGHTS_URL
    return f"{base.rstrip('/')}/{_file_name(name)}"


def published_cache_path(name: str) -> str:
    """The torch hub cache file of ``name``'s weights (where to place it by hand)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", _file_name(name))


def load_published_state_dict(name: str, progress: bool = True) -> Dict[str, torch.Tensor]:
    """The published state_dict of ``name``: from the cache, else downloaded and verified.

    Raises :class:`WeightsError` (one line) for a variant without weights, an unreachable URL
    (naming the URL and the cache path where the file can be placed by hand) or a bad hash.
    """
    url, cache = published_url(name), published_cache_path(name)
    try:
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=progress,
                                                   check_hash=True, weights_only=True)
    except RuntimeError as e:
        if "invalid hash" in str(e):
            raise WeightsError(f"{url}: the downloaded file's sha256 does not start with "
                               f"{PUBLISHED_WEIGHTS[name]} (corrupt or not the published file); "
                               "nothing was cached") from None
        raise WeightsError(f"cannot load the published weights {cache}: "
                           f"{one_line(e, first_line=True)}") from None
    except OSError as e:  # URLError, HTTPError, connection refused, no route, DNS
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)
        raise WeightsError(f"cannot download {url} ({reason}); without network, place the file "
                           f"at {cache} (or set {WEIGHTS_URL_ENV} to a mirror)") from None
    except Exception as e:  # weights_only refusal of a file that is not plain weights
        raise WeightsError(f"cannot load the published weights {cache}: {load_error_reason(e)}"
                           ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return strip_prefixes(state)
