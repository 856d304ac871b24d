"""Reading a config: the file (with ``_BASE_``), then ``KEY=VALUE`` overrides.

Sources, in order: the schema's defaults, a YAML file, then overrides; the result is checked
(:mod:`.validation`) before a :class:`.Config` is returned. The file must have the ``FORMAT:
resnest-engine/1`` line; a file without it is in another format, which its own reader
translates into a :class:`LoadedConfig`.
"""
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

from .errors import ConfigError
from .schema import FORMAT_KEY, FORMAT_MARKER, Config, config_to_dict
from .validation import build_config, config_warnings
from .yaml_io import OURS, apply_to_dict, load_tree

__all__ = ["LoadedConfig", "read_config", "load_config", "apply_overrides"]


@dataclass
class LoadedConfig:
    """What a config reader found: the config, the file's format (``"resnest-engine"`` for
    ours), the translation of a file in another format (lines to log; empty for ours) and
    warnings."""

    config: Config
    format: str
    translation: List[str]
    warnings: List[str]


def read_config(path: Union[str, "os.PathLike[str]"], overrides: Sequence[str] = ()
                ) -> LoadedConfig:
    """Read a YAML config in our format, then ``KEY=VALUE`` overrides.

    The file (and its ``_BASE_`` files) must have the ``FORMAT: resnest-engine/1`` line; a file
    without it is a :class:`.ConfigError`.
    """
    path = os.fspath(path)
    data, origins, fmt = load_tree(path)
    if fmt != OURS:
        raise ConfigError(f"{path}: no '{FORMAT_KEY}: {FORMAT_MARKER}' line: not a "
                          "resnest-engine config (add the line if it is one)", path=path)
    data = apply_to_dict(data, overrides, origins)
    cfg = build_config(data, origins)
    return LoadedConfig(cfg, "resnest-engine", [], config_warnings(cfg))


def load_config(path: Optional[Union[str, "os.PathLike[str]"]] = None,
                overrides: Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file ``path`` (see :func:`read_config`), then overrides.

    Overrides are ``KEY=VALUE`` strings (``TRAINING.EPOCHS=5``, ``SEED=3``,
    ``OPTIMIZER.STEPS=[30,60]``); VALUE is read as YAML (an empty value, ``null``, ``~`` or
    ``None`` is null). Without ``path``: our defaults plus the overrides.
    """
    if path is None:
        origins: Dict[str, str] = {}
        return build_config(apply_to_dict({}, overrides, origins), origins)
    return read_config(path, overrides).config


def apply_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """A new, validated Config: ``cfg`` with ``KEY=VALUE`` overrides applied (cfg unchanged)."""
    origins: Dict[str, str] = {}
    data = apply_to_dict(config_to_dict(cfg), overrides, origins)
    return build_config(data, origins)
