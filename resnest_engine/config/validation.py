"""Checking a config: types, ranges, choices, then the rules between keys.

:func:`build_config` turns a nested mapping in our format into a :class:`.Config` or raises a
one-line :class:`.ConfigError` that starts with the dotted key: unknown names first (with a
suggestion, :mod:`.unknown_keys`), then each value against its field (:func:`convert`), then the
cross-field rules and the names of the model and dataset against their registries. Where a
value came from (file or override) is appended when the caller knows it.
"""
import dataclasses
import math
import os
from typing import (Any, Callable, Dict, List, Mapping, Optional, Tuple, Union, get_args,
                    get_origin)

from .derived import effective_lr
from .errors import ConfigError, type_name
from .fields import NONEMPTY
from .schema import (FIELDS, FORMAT_KEY, FORMAT_MARKER, SECTIONS, TOP_SCALARS, Config,
                     config_to_dict)
from .unknown_keys import suggest, unknown_key_error

__all__ = ["check_one_policy", "config_from_dict", "convert", "register_names", "validate_config",
           "config_warnings"]


def flat_keys(data: Mapping[str, Any]) -> List[str]:
    """The dotted keys of a nested mapping (``SEED``, ``MODEL.NAME``...), in its order."""
    out = []
    for k, v in data.items():
        if isinstance(v, Mapping):
            out += [f"{k}.{kk}" for kk in v]
        else:
            out.append(str(k))
    return out


_TYPE_WORDS = {int: ("an integer", "integers"), float: ("a number", "numbers"),
               bool: ("a boolean", "booleans"), str: ("a string", "strings")}


def _unwrap(tp: Any) -> Tuple[Any, bool]:
    if get_origin(tp) is Union:
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def expected(f: dataclasses.Field) -> str:
    """What a field accepts, in words: "an integer >= 1", "null or one of 'deep', ..."."""
    tp, optional = _unwrap(f.type)
    md = f.metadata
    if md.get("choices"):
        text = "one of " + ", ".join(repr(c) for c in md["choices"])
    elif get_origin(tp) in (list, List):
        text = f"a list of {_TYPE_WORDS[get_args(tp)[0]][1]}"
    else:
        text = _TYPE_WORDS[tp][0]
    check = md.get("check")
    if check is not None and check is not NONEMPTY:
        text += f" {check.text}"
    elif check is NONEMPTY and tp is str:
        text = "a non-empty string"
    return f"null or {text}" if optional else text


def _scalar(tp: type, value: Any) -> Tuple[bool, Any]:
    """Convert ``value`` to ``tp``; (False, None) when it has the wrong type."""
    if tp is bool:
        return isinstance(value, bool), value
    if isinstance(value, bool):
        return False, None
    if tp is int:
        return isinstance(value, int), value
    if tp is float:
        if isinstance(value, (int, float)):
            return True, float(value)
        return False, None
    if tp is str:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        return isinstance(value, str), value
    raise TypeError(tp)  # pragma: no cover - schema error


def convert(dotted: str, f: dataclasses.Field, value: Any) -> Any:
    """``value`` checked against the field of key ``dotted`` and converted to its type (an int
    for a float key becomes a float, a path a string, a choice's alias the choice)."""
    md = f.metadata
    if md.get("normalize"):
        return md["normalize"](dotted, value)
    tp, optional = _unwrap(f.type)

    def bad(extra: str = "", show_type: bool = True) -> ConfigError:
        got = f"{value!r} ({type_name(value)})" if show_type else repr(value)
        return ConfigError(f"{dotted}: expected {expected(f)}, got {got}{extra}", key=dotted)

    if value is None:
        if optional:
            return None
        raise bad()
    if isinstance(value, str) and value in (md.get("aliases") or {}):
        value = md["aliases"][value]
    if isinstance(value, bool) and md.get("bool_map") and value in md["bool_map"]:
        value = md["bool_map"][value]
    hint = f"; {md['hint']}" if md.get("hint") else ""
    if get_origin(tp) in (list, List):
        elem = get_args(tp)[0]
        if not isinstance(value, (list, tuple)):
            raise bad(hint)
        out = []
        for item in value:
            ok, conv = _scalar(elem, item)
            if not ok or (isinstance(conv, float) and not math.isfinite(conv)):
                raise bad(hint)
            out.append(conv)
        value = out
    else:
        ok, conv = _scalar(tp, value)
        if not ok:
            raise bad(hint)
        if isinstance(conv, float) and not math.isfinite(conv):
            raise bad(" (not finite)", show_type=False)
        value = conv
    choices = md.get("choices")
    if choices and value not in choices:
        guess = suggest(value, choices)
        raise bad(f"; did you mean {guess!r}?" if guess else "", show_type=False)
    check = md.get("check")
    if check is not None and not check.ok(value):
        raise bad(show_type=False)
    return value


def _check_registered(key: str, value: str, names: Callable[[], List[str]], what: str) -> None:
    known = names()
    if value not in known:
        guess = suggest(value, known)
        tail = f"did you mean {guess!r}?" if guess else f"known: {', '.join(known)}"
        raise ConfigError(f"{key}: unknown {what} {value!r}; {tail}", key=key)


#: Dotted key -> (the registry's names, what they name). The registries declare themselves
#: (models/registry.py, data/datasets.py) so that config imports neither: they build on config.
_REGISTRIES: Dict[str, Tuple[Callable[[], List[str]], str]] = {}


def register_names(key: str, names: Callable[[], List[str]], what: str) -> None:
    """Check ``key``'s value against ``names()`` (a registry's live list) in every config."""
    _REGISTRIES[key] = (names, what)


def _check_names(cfg: Config) -> None:
    """MODEL.NAME, DATA.DATASET (and any other registered key) against their registries."""
    for key, (names, what) in _REGISTRIES.items():
        section, leaf = key.split(".")
        _check_registered(key, getattr(getattr(cfg, section), leaf), names, what)


def _cross_check(cfg: Config) -> None:
    t, o, d = cfg.TRAINING, cfg.OPTIMIZER, cfg.DATA
    _check_names(cfg)
    if t.BATCH_SIZE % t.GRAD_ACCUM:
        raise ConfigError(f"TRAINING.GRAD_ACCUM: must divide TRAINING.BATCH_SIZE "
                          f"({t.BATCH_SIZE}), got {t.GRAD_ACCUM}", key="TRAINING.GRAD_ACCUM")
    if o.LR_SCHEDULER == "step":
        if not o.STEPS:
            raise ConfigError("OPTIMIZER.STEPS: LR_SCHEDULER 'step' needs a non-empty list of "
                              "milestone epochs, e.g. [30, 60, 90]", key="OPTIMIZER.STEPS")
        if any(b <= a for a, b in zip(o.STEPS, o.STEPS[1:])):
            raise ConfigError(f"OPTIMIZER.STEPS: must be strictly increasing, got {o.STEPS}",
                              key="OPTIMIZER.STEPS")
        if o.STEPS[0] < 1 or o.STEPS[-1] >= t.EPOCHS:
            raise ConfigError(f"OPTIMIZER.STEPS: each milestone must be in [1, TRAINING.EPOCHS "
                              f"= {t.EPOCHS}), got {o.STEPS}", key="OPTIMIZER.STEPS")
    lr = effective_lr(cfg)
    if o.MIN_LR >= lr:
        raise ConfigError(f"OPTIMIZER.MIN_LR: must be below the effective LR ({lr:g} = LR x "
                          f"BATCH_SIZE / 256), got {o.MIN_LR:g}", key="OPTIMIZER.MIN_LR")
    if o.FUSED is True and o.FREEZE_BODY_EPOCHS > 0 and o.NAME != "adamw":
        # torch's fused SGD step fails once some momentum buffers exist and others do not,
        # which is what unfreezing the body does.
        raise ConfigError("OPTIMIZER.FUSED: true does not support OPTIMIZER.FREEZE_BODY_EPOCHS "
                          f"with {o.NAME} (torch's fused SGD cannot start parameters mid-run); "
                          "use auto", key="OPTIMIZER.FUSED")
    if o.FREEZE_BODY_EPOCHS >= t.EPOCHS:
        raise ConfigError(f"OPTIMIZER.FREEZE_BODY_EPOCHS: must be < TRAINING.EPOCHS ({t.EPOCHS}) "
                          f"or the body never trains, got {o.FREEZE_BODY_EPOCHS}",
                          key="OPTIMIZER.FREEZE_BODY_EPOCHS")
    if d.MIXUP_OFF_EPOCH >= t.EPOCHS:
        raise ConfigError(f"DATA.MIXUP_OFF_EPOCH: must be < TRAINING.EPOCHS ({t.EPOCHS}) "
                          f"(0 = never switch off), got {d.MIXUP_OFF_EPOCH}",
                          key="DATA.MIXUP_OFF_EPOCH")
    check_one_policy(d.RAND_AUG, d.AUTO_AUG, d.TRIVIAL_AUG)


def check_one_policy(rand_aug: Any, auto_aug: bool, trivial_aug: bool, lower: bool = False,
                     error: Callable[[str], Exception] = ConfigError) -> None:
    """The automatic augmentation policies exclude each other: raise ``error`` naming the second
    one switched on (keys lower-cased with ``lower``, as DataOptions names its fields)."""
    every = [k.lower() if lower else k for k in ("DATA.RAND_AUG", "DATA.AUTO_AUG",
                                                  "DATA.TRIVIAL_AUG")]
    on = [k for k, v in zip(every, (rand_aug is not None, auto_aug, trivial_aug)) if v]
    if len(on) > 1:
        message = (f"{on[1]}: only one of {', '.join(every[:2])} and {every[2]} may be enabled "
                   f"(choose at most one augmentation policy), got {' and '.join(on)}")
        raise ConfigError(message, key=on[1]) if error is ConfigError else error(message)


def build_config(data: Any, origins: Optional[Mapping[str, str]] = None) -> Config:
    """The checked Config of a nested mapping in our format; an error about a key found in
    ``origins`` (dotted key -> "path" or "override '...'") says where the value came from."""
    try:
        return _build_unsourced(data)
    except ConfigError as e:
        src = (origins or {}).get(e.key or "")
        if src is None:
            raise
        raise ConfigError(f"{e} (from {src})", key=e.key, path=e.path) from None


def _build_unsourced(data: Any) -> Config:
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: expected a mapping of sections, got {type_name(data)}")
    # Unknown names first, so a foreign key is reported before any value.
    if FORMAT_KEY in data:
        if data[FORMAT_KEY] != FORMAT_MARKER:
            raise ConfigError(f"{FORMAT_KEY}: expected {FORMAT_MARKER!r}, got "
                              f"{data[FORMAT_KEY]!r}", key=FORMAT_KEY)
        data = {k: v for k, v in data.items() if k != FORMAT_KEY}
    for name, value in data.items():
        if not isinstance(name, str):
            raise ConfigError(f"config: keys must be strings, got {name!r}", key=str(name))
        if name == "_BASE_":
            raise ConfigError("_BASE_: only allowed at the top of a YAML file", key="_BASE_")
        if name in TOP_SCALARS:
            continue
        if name not in SECTIONS:
            raise unknown_key_error(name, None, name)
        if value is not None and not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a mapping of keys, got {value!r} "
                              f"({type_name(value)})", key=name)
        for key in value or {}:
            if not isinstance(key, str):
                raise ConfigError(f"{name}: keys must be strings, got {key!r}", key=name)
            if key not in FIELDS[name]:
                raise unknown_key_error(f"{name}.{key}", name, key)
    kwargs: Dict[str, Any] = {}
    for name, value in data.items():
        if name in TOP_SCALARS:
            kwargs[name] = convert(name, TOP_SCALARS[name], value)
            continue
        sec = {k: convert(f"{name}.{k}", FIELDS[name][k], v) for k, v in (value or {}).items()}
        kwargs[name] = SECTIONS[name](**sec)
    cfg = Config(**kwargs)
    _cross_check(cfg)
    return cfg


def config_from_dict(d: Mapping) -> Config:
    """Build and validate a Config from a (partial) nested mapping in our format (an optional
    ``FORMAT`` key must be the marker); missing keys get defaults."""
    return build_config(d)


def validate_config(cfg: Config) -> Config:
    """Re-validate a Config built or mutated in Python; returns a fresh, checked copy."""
    if not isinstance(cfg, Config):
        raise ConfigError(f"config: expected a Config, got {type_name(cfg)}")
    return build_config(config_to_dict(cfg))


def config_warnings(cfg: Config) -> List[str]:
    """One-line warnings about settings that run, but not as written."""
    out = []
    t, o = cfg.TRAINING, cfg.OPTIMIZER
    if o.WARMUP_EPOCHS >= t.EPOCHS:
        out.append(f"OPTIMIZER.WARMUP_EPOCHS {o.WARMUP_EPOCHS} >= TRAINING.EPOCHS {t.EPOCHS}: the "
                   "warmup is cut to the run (the LR follows the warmup line and never reaches "
                   "its peak; no decay)")
    return out
