"""Reading a config of either format: the file (with ``_BASE_``), then ``KEY=VALUE`` overrides.

Sources, in order: the schema's defaults, a YAML file, then overrides; the result is checked
(:mod:`.validation`) before a :class:`.Config` is returned. A file with the ``FORMAT:
resnest-engine/1`` line is ours; a file without it is an official ResNeSt config, translated
with its official meaning for the run's world size (:mod:`.official`).
"""
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Union

from .errors import ConfigError
from .official import OFFICIAL_KEYS, official_flat, translate_official
from .schema import FORMAT_KEY, FORMAT_MARKER, Config, config_to_dict
from .validation import build_config, config_warnings, flat_keys
from .yaml_io import apply_to_dict, load_tree, parse_override

__all__ = ["LoadedConfig", "read_config", "load_config", "apply_overrides"]


@dataclass
class LoadedConfig:
    """What :func:`read_config` found: the config, the file's format (``"resnest-engine"`` or
    ``"official"``), the translation of an official file (lines to log) and warnings."""

    config: Config
    format: str
    translation: List[str]
    warnings: List[str]


def _read_official(path: str, data: Dict[str, Any], overrides: Sequence[str],
                   world_size: int) -> LoadedConfig:
    flat = official_flat(path, data)
    ours_overrides: List[str] = []
    official_overrides: List[str] = []
    for item in ([overrides] if isinstance(overrides, str) else overrides):
        parts, value = parse_override(item)
        dotted = ".".join(parts)
        if dotted in OFFICIAL_KEYS:
            flat[dotted] = value
            official_overrides.append(item)
        else:
            ours_overrides.append(item)
    try:
        translated, lines = translate_official(flat, world_size)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}", path=path, key=getattr(e, "key", None)) from None
    origins = {k: path for k in flat_keys(translated)}
    data = apply_to_dict(translated, ours_overrides, origins)
    try:
        cfg = build_config(data, origins)
    except ConfigError as e:
        if str(e).startswith(path):
            raise
        raise ConfigError(f"{path} (official config, translated): {e}", key=e.key,
                          path=path) from None
    head = (f"official config {path} (no '{FORMAT_KEY}: {FORMAT_MARKER}' line), read with the "
            f"official meaning for {world_size} process{'es' if world_size != 1 else ''}:")
    lines = [head] + [f"  {ln}" for ln in lines]
    if official_overrides:
        lines.append(f"  overrides in the official meaning: {' '.join(official_overrides)}")
    if ours_overrides:
        lines.append(f"  overrides of resnest-engine keys: {' '.join(ours_overrides)}")
    return LoadedConfig(cfg, "official", lines, config_warnings(cfg))


def read_config(path: Union[str, "os.PathLike[str]"], overrides: Sequence[str] = (),
                world_size: int = 1) -> LoadedConfig:
    """Read a YAML config of either format, then ``KEY=VALUE`` overrides.

    A file with the ``FORMAT: resnest-engine/1`` line (and its ``_BASE_`` files, which must
    have it too) is ours. A file without it is an official ResNeSt config: its per-GPU batch
    sizes and LR are multiplied by ``world_size`` and every key takes its official default and
    meaning (see :mod:`resnest_engine.config.official`); overrides of official keys are read in
    the official meaning, other keys in ours.
    """
    path = os.fspath(path)
    data, origins, fmt = load_tree(path)
    if fmt == "official":
        return _read_official(path, data, overrides, world_size)
    data = apply_to_dict(data, overrides, origins)
    cfg = build_config(data, origins)
    return LoadedConfig(cfg, "resnest-engine", [], config_warnings(cfg))


def load_config(path: Optional[Union[str, "os.PathLike[str]"]] = None,
                overrides: Sequence[str] = (), world_size: int = 1) -> Config:
    """Defaults, then the YAML file ``path`` (either format, see :func:`read_config`), then
    overrides.

    Overrides are ``KEY=VALUE`` strings (``TRAINING.EPOCHS=5``, ``SEED=3``,
    ``OPTIMIZER.STEPS=[30,60]``); VALUE is read as YAML (an empty value, ``null``, ``~`` or
    ``None`` is null). Without ``path``: our defaults plus the overrides.
    """
    if path is None:
        origins: Dict[str, str] = {}
        return build_config(apply_to_dict({}, overrides, origins), origins)
    return read_config(path, overrides, world_size).config


def apply_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """A new, validated Config: ``cfg`` with ``KEY=VALUE`` overrides applied (cfg unchanged)."""
    origins: Dict[str, str] = {}
    data = apply_to_dict(config_to_dict(cfg), overrides, origins)
    return build_config(data, origins)
