"""How a config key is declared: a dataclass field that carries its documentation and its rules.

:func:`spec` makes the field; the rules it can carry are a range or length check
(:class:`Check`), a set of choices, aliases, a hint for type errors, a map for the booleans
YAML 1.1 makes of ``on``/``off``, or a normaliser that replaces the generic type check for the
few keys whose values are not of one type (``DATA.RAND_AUG``, ``MODEL.PRETRAINED``,
``MODEL.CHANNELS_LAST``). The checking itself is :mod:`.validation`'s.
"""
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

from .errors import ConfigError, type_name

__all__ = ["SCHEDULE_ALIASES"]


@dataclass(frozen=True)
class Check:
    """A value rule: ``ok(value)``, and ``text`` that completes "expected an integer ...",
    e.g. ">= 1" or "in [0, 1)"."""

    ok: Callable[[Any], bool]
    text: str


def at_least(lo: float) -> Check:
    return Check(lambda v: v >= lo, f">= {lo}")


def above(lo: float) -> Check:
    return Check(lambda v: v > lo, f"> {lo}")


def within(lo: float, hi: float, lo_closed: bool = True, hi_closed: bool = False) -> Check:
    def ok(v: Any) -> bool:
        return (v >= lo if lo_closed else v > lo) and (v <= hi if hi_closed else v < hi)
    text = f"in {'[' if lo_closed else '('}{lo}, {hi}{']' if hi_closed else ')'}"
    return Check(ok, text)


PROB = within(0, 1, True, True)        # [0, 1]
PROB_OPEN = within(0, 1, True, False)  # [0, 1)
EMA = Check(lambda v: v == 0 or 0 < v < 1, "that is 0 (off) or in (0, 1)")
SEED_RANGE = within(0, 2 ** 32, True, False)
NONEMPTY = Check(lambda v: len(v) > 0, "(non-empty)")
BETAS = Check(lambda v: len(v) == 2 and all(0 <= b < 1 for b in v),
              "(two values, each in [0, 1))")


def spec(default: Any, doc: str, check: Optional[Check] = None,
         choices: Optional[Tuple[str, ...]] = None, hint: Optional[str] = None,
         bool_map: Optional[Dict[bool, str]] = None,
         normalize: Optional[Callable[[str, Any], Any]] = None,
         aliases: Optional[Dict[str, str]] = None, allowed: Optional[str] = None) -> Any:
    """A dataclass field carrying its documentation and validation rules.

    ``hint`` is appended to type errors; ``bool_map`` turns the booleans that YAML 1.1 makes of
    unquoted ``on``/``off`` back into strings; ``aliases`` maps other names of a choice to it
    before the check; ``normalize(key, value)`` replaces the generic type check (it returns the
    clean value or raises ConfigError), and ``allowed`` then says in words what it accepts
    (for the keys table).
    """
    md = dict(doc=doc, check=check, choices=choices, hint=hint, bool_map=bool_map,
              normalize=normalize, aliases=aliases, allowed=allowed)
    if isinstance(default, list):
        frozen = tuple(default)
        return field(default_factory=lambda: list(frozen), metadata=md)
    return field(default=default, metadata=md)


# ---------------------------------------------------------------------------------------------
# Keys whose values are not of one type
# ---------------------------------------------------------------------------------------------

RAND_AUG_MAX_MAGNITUDE = 30
_RAND_AUG_RE = re.compile(r"^\s*(\d+)\s*,\s*(\d+)\s*$")
_RAND_AUG_EXPECTED = ('null or a string "N,M" (N ops >= 1, magnitude M in '
                      f'[0, {RAND_AUG_MAX_MAGNITUDE}]), e.g. "2,9"')


def normalize_rand_aug(key: str, value: Any) -> Optional[str]:
    """``"N,M"`` from ``"N,M"``, ``"N, M"`` or ``[N, M]``; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected {_RAND_AUG_EXPECTED}, got {value!r} (bool); the "
                          'official RAND_AUG: true was RandAugment with 2 ops at magnitude 12, '
                          'write "2,12" (null = off)', key=key)
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in value)):
        n, m = value
    elif isinstance(value, str) and _RAND_AUG_RE.match(value):
        n, m = (int(x) for x in _RAND_AUG_RE.match(value).groups())
    else:
        raise ConfigError(f"{key}: expected {_RAND_AUG_EXPECTED}, got {value!r}", key=key)
    if n < 1 or not 0 <= m <= RAND_AUG_MAX_MAGNITUDE:
        raise ConfigError(f"{key}: expected {_RAND_AUG_EXPECTED}, got {value!r}", key=key)
    return f"{n},{m}"


def normalize_auto_bool(key: str, value: Any) -> Any:
    """true, false or the string ``auto``."""
    if isinstance(value, bool) or value == "auto":
        return value
    raise ConfigError(f"{key}: expected true, false or 'auto', got {value!r} "
                      f"({type_name(value)})", key=key)


#: ``MODEL.COMPILE``'s strings: torch.compile's modes (true means ``default``).
COMPILE_MODES = ("default", "max-autotune", "reduce-overhead")


def normalize_compile(key: str, value: Any) -> Any:
    """false, true (torch.compile's default mode) or one of :data:`COMPILE_MODES`."""
    if isinstance(value, bool) or value in COMPILE_MODES:
        return value
    raise ConfigError(f"{key}: expected false, true or one of {', '.join(COMPILE_MODES)}, got "
                      f"{value!r} ({type_name(value)})", key=key)


def compile_mode(value: Any) -> Any:
    """torch.compile's ``mode`` for a ``MODEL.COMPILE`` value; None: do not compile."""
    if value is False or value is None:
        return None
    return "default" if value is True else value


def normalize_pretrained(key: str, value: Any) -> Any:
    """True (the published weights), a non-empty path, or None (false means None)."""
    if value is None or value is False:
        return None
    if value is True:
        return True
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str) and value:
        return value
    raise ConfigError(f"{key}: expected true (the published weights), a weights file path or "
                      f"null, got {value!r} ({type_name(value)})", key=key)


#: Other libraries' names of our schedules (same meaning): the ResNeSt article's and timm's.
SCHEDULE_ALIASES = {"cosine": "cos", "multistep": "step"}
