"""Config text: reading YAML files (with ``_BASE_`` chains), ``KEY=VALUE`` overrides, writing.

The loader is PyYAML's safe loader with two changes: a duplicate key is an error, and ``1e-4``
is a float (YAML 1.1 reads it as a string). Every problem is a :class:`.ConfigError` naming the
file (``path:line:column`` for syntax errors). What this module returns are plain mappings and
where each key came from; checking them is :mod:`.validation`'s job.
"""
import os
import re
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

import yaml

from ..storage.files import atomic_write_text
from .errors import ConfigError, type_name
from .schema import FORMAT_KEY, FORMAT_MARKER, TOP_SCALARS, Config, config_to_dict

__all__ = ["dump_config", "dump_config_text"]

# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

# PyYAML (YAML 1.1) reads 1e-4 and 1.0e5 as strings; read and write them as floats.
_SCI_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _DuplicateKey(yaml.constructor.ConstructorError):
    pass


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (str, int, float, bool)) and key in seen:
                    raise _DuplicateKey(None, None, f"duplicate key {key!r}",
                                        key_node.start_mark)
                if isinstance(key, (str, int, float, bool)):
                    seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data,
                                                         flow_style=True))


for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _SCI_FLOAT, list("-+0123456789"))


def _read_yaml(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise ConfigError(f"{path}: cannot read config file ({reason})", path=path) from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        kind = "" if isinstance(e, _DuplicateKey) else "YAML syntax error: "
        problem = e.problem or e.context or "invalid YAML"
        raise ConfigError(f"{where}: {kind}{problem}", path=path) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: YAML error: {e}", path=path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections at the top level, "
                          f"got {type_name(data)}", path=path)
    return data


def _merge(base: Dict[str, Any], child: Mapping[str, Any]) -> Dict[str, Any]:
    """Deep merge, child wins; an empty child section (``MODEL:``) keeps the base section."""
    out = dict(base)
    for k, v in child.items():
        if isinstance(out.get(k), Mapping) and isinstance(v, Mapping):
            out[k] = _merge(dict(out[k]), v)
        elif v is None and isinstance(out.get(k), Mapping):
            continue
        else:
            out[k] = v
    return out


def _leaf_origins(data: Mapping[str, Any], src: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for k, v in data.items():
        out[str(k)] = src
        if isinstance(v, Mapping):
            for kk in v:
                out[f"{k}.{kk}"] = src
    return out


#: :func:`load_tree`'s format of a file with the FORMAT marker; a file without it is
#: ``UNMARKED`` (another format, which :func:`.loading.read_config` does not read).
OURS, UNMARKED = "ours", "unmarked"


def _file_format(path: str, data: Dict[str, Any]) -> str:
    """``OURS`` for a file with the FORMAT marker, ``UNMARKED`` without (marker removed)."""
    if FORMAT_KEY not in data:
        return UNMARKED
    marker = data.pop(FORMAT_KEY)
    if marker != FORMAT_MARKER:
        raise ConfigError(f"{path}: {FORMAT_KEY}: expected {FORMAT_MARKER!r}, got {marker!r}",
                          path=path, key=FORMAT_KEY)
    return OURS


def load_tree(path: str, stack: Tuple[str, ...] = ()
              ) -> Tuple[Dict[str, Any], Dict[str, str], str]:
    """The merged mapping of ``path`` and its ``_BASE_`` files, where each key came from, and
    the format (``OURS`` or ``UNMARKED``), which every file of the chain must share.
    ``stack`` holds the files that include this one (to find cycles)."""
    real = os.path.realpath(path)
    if real in stack:
        chain = " -> ".join(list(stack[stack.index(real):]) + [real])
        raise ConfigError(f"{path}: _BASE_ cycle: {chain}", path=path)
    data = _read_yaml(path)
    fmt = _file_format(path, data)
    bases = data.pop("_BASE_", None)
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(f"{path}: _BASE_ must be a path (or a list of paths) relative to "
                          f"this file, got {bases!r}", path=path)
    merged: Dict[str, Any] = {}
    origins: Dict[str, str] = {}
    for base in bases:
        base_path = os.path.join(os.path.dirname(path), os.path.expanduser(base))
        if not os.path.isfile(base_path):
            raise ConfigError(f"{path}: _BASE_ file not found: {base_path}", path=path)
        b_data, b_origins, b_fmt = load_tree(base_path, stack + (real,))
        if b_fmt != fmt:
            has, lacks = (path, base_path) if fmt == OURS else (base_path, path)
            raise ConfigError(f"{path}: mixes the two config formats: {has} has the "
                              f"'{FORMAT_KEY}: {FORMAT_MARKER}' line and its _BASE_ chain "
                              f"file {lacks} does not; give every file of the chain the same "
                              "format", path=path)
        merged = _merge(merged, b_data)
        origins.update(b_origins)
    merged = _merge(merged, data)
    origins.update(_leaf_origins(data, path))
    return merged, origins, fmt


# ---------------------------------------------------------------------------------------------
# Overrides
# ---------------------------------------------------------------------------------------------

def parse_override(item: Any) -> Tuple[List[str], Any]:
    """``"TRAINING.EPOCHS=5"`` -> ``(["TRAINING", "EPOCHS"], 5)``: the value is read as YAML;
    empty, ``null``, ``~`` and ``None`` are None."""
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. TRAINING.EPOCHS=5",
                          key=str(item))
    key, _, text = item.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"override {item!r}: empty key; expected KEY=VALUE, e.g. "
                          "TRAINING.EPOCHS=5", key=key)
    if text.strip() == "None":
        return parts, None
    try:
        value = yaml.load(text, Loader=_Loader) if text.strip() else None
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"override {item!r}: cannot parse the value as YAML ({problem})",
                          key=key) from None
    return parts, value


def apply_to_dict(data: Dict[str, Any], overrides: Sequence[str],
                  origins: Dict[str, str]) -> Dict[str, Any]:
    """A copy of ``data`` with the overrides applied in order (a section override merges into
    the section); ``origins`` gets "override '...'" for every key they set."""
    if isinstance(overrides, str):
        overrides = [overrides]
    data = dict(data)
    for item in overrides:
        parts, value = parse_override(item)
        dotted = ".".join(parts)
        if len(parts) > 2:
            raise ConfigError(f"{dotted}: unknown key (keys are SEED or SECTION.KEY); from "
                              f"override {item!r}", key=dotted)
        if len(parts) == 1:
            if isinstance(value, Mapping) and isinstance(data.get(parts[0]), Mapping):
                data[parts[0]] = _merge(dict(data[parts[0]]), value)
            else:
                data[parts[0]] = value
            origins.update(_leaf_origins({parts[0]: value}, f"override {item!r}"))
            continue
        sec, key = parts
        if sec in TOP_SCALARS:
            raise ConfigError(f"{dotted}: unknown key; {sec} is a top-level value, write "
                              f"{sec}=VALUE (from override {item!r})", key=dotted)
        if data.get(sec) is None:
            data[sec] = {}
        if isinstance(data[sec], Mapping):
            data[sec] = dict(data[sec])
            data[sec][key] = value
            origins[dotted] = f"override {item!r}"
    return data


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def dump_config_text(cfg: Config) -> str:
    """The full config as YAML text in our format, FORMAT line first (what ``config.yaml`` and
    ``--print-config`` hold)."""
    text = yaml.dump(config_to_dict(cfg), Dumper=_Dumper, sort_keys=False,
                     default_flow_style=False, allow_unicode=True)
    return ("# resnest_engine config (complete); load with resnest_engine.config.load_config\n"
            f"{FORMAT_KEY}: {FORMAT_MARKER}\n{text}")


def dump_config(cfg: Config, path: Union[str, "os.PathLike[str]"]) -> None:
    """Write the full config as YAML (atomically); ``load_config(path)`` gives an equal Config."""
    atomic_write_text(os.fspath(path), dump_config_text(cfg))
