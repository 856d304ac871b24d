"""Option objects made from the schema: a setting is declared once, in :mod:`.schema`.

The builders take plain Python option objects (``DataOptions``, ``StandardOptions``) with
lower-case fields, so a Python user writes ``DataOptions(dataset="digits", crop_size=32)``. Those
classes are not written out a second time: :func:`options_from` makes each one from the schema's
declarations of the keys it names (``"DATA.CROP_SIZE"`` becomes ``crop_size``, with the key's
default, documentation and check), followed by the class's own fields, which are values that are
not config keys (the model variant's mean/std, an output directory). Constructing one checks every
schema-made field with the same rule that checks the YAML key (:func:`.validation.convert`).
This is the spirit of Detectron2's ``@configurable``, done with dataclasses: the config maps onto
the same object a Python user builds (:mod:`resnest_engine.workflows.from_config` does that mapping).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple, Type

from .errors import ConfigError
from .schema import ALL_KEYS, key_field
from .validation import convert

__all__ = ["options_from", "option_keys", "option_values"]

#: Attribute of a made class: option field name -> dotted schema key.
_KEYS_ATTR = "__option_keys__"


def option_name(dotted: str) -> str:
    """``"DATA.CROP_SIZE"`` -> ``"crop_size"``."""
    return dotted.rsplit(".", 1)[-1].lower()


def _expand(keys: Iterable[str], exclude: Iterable[str]) -> Tuple[str, ...]:
    out = []
    for k in keys:
        if k.endswith(".*"):
            out += [d for d in ALL_KEYS if d.startswith(k[:-1])]
        else:
            key_field(k)  # KeyError for a key the schema lacks
            out.append(k)
    skip = set(exclude)
    return tuple(k for k in out if k not in skip)


def options_from(*keys: str, exclude: Iterable[str] = (), error: Type[Exception] = ValueError,
                 adapt: Optional[Mapping[str, Callable[[Any], Any]]] = None) -> Callable[[type], type]:
    """Class decorator: a dataclass whose first fields are the schema ``keys`` (dotted;
    ``"DATA.*"`` for a section), lower-cased, then the class's own annotated fields.

    Each schema-made field has the key's default and metadata; a value given to the constructor
    is checked and normalised by the key's rule and a bad one raises ``error`` with a one-line
    message that starts with the lower-cased dotted key (``data.crop_size: expected an integer
    >= 1, got 0``). ``adapt`` maps a field to a function applied to the checked value (the form
    the library uses, e.g. ``"N,M"`` -> ``(n, m)``). A ``__post_init__`` of the class runs after.
    """
    adapt = dict(adapt or {})

    def make(cls: type) -> type:
        dotted = _expand(keys, exclude)
        names = {option_name(k): k for k in dotted}
        fields = []
        for name, key in names.items():
            f = key_field(key)
            kw: Dict[str, Any] = dict(metadata={**f.metadata, "key": key})
            if f.default_factory is not dataclasses.MISSING:
                kw["default_factory"] = f.default_factory
            else:
                kw["default"] = f.default
            fields.append((name, f.type, dataclasses.field(**kw)))
        own = cls.__dict__.get("__annotations__", {})
        for name, tp in own.items():
            if name in names:
                raise TypeError(f"{cls.__name__}.{name} restates the schema key {names[name]}")
            value = cls.__dict__.get(name, dataclasses.MISSING)
            fields.append((name, tp, value if isinstance(value, dataclasses.Field)
                           else dataclasses.field(default=value)))
        namespace = {k: v for k, v in cls.__dict__.items()
                     if k not in own and k not in ("__dict__", "__weakref__", "__annotations__")}
        user_post_init = namespace.pop("__post_init__", None)

        def __post_init__(self) -> None:
            for name, key in names.items():
                try:
                    value = convert(key.lower(), key_field(key), getattr(self, name))
                except ConfigError as e:
                    raise error(str(e)) from None
                if name in adapt and value is not None:
                    value = adapt[name](value)
                object.__setattr__(self, name, value)
            if user_post_init is not None:
                user_post_init(self)

        namespace["__post_init__"] = __post_init__
        namespace[_KEYS_ATTR] = dict(names)
        made = dataclasses.make_dataclass(cls.__name__, fields, bases=cls.__bases__,
                                          namespace=namespace)
        made.__module__, made.__qualname__ = cls.__module__, cls.__qualname__
        return made

    return make


def option_keys(options_cls: type) -> Dict[str, str]:
    """Option field name -> the dotted schema key it was made from (own fields are absent)."""
    return dict(getattr(options_cls, _KEYS_ATTR))


def option_values(options_cls: type, cfg: Any) -> Dict[str, Any]:
    """The values of ``cfg`` (a :class:`.Config`) for each schema-made field of ``options_cls``:
    the generic half of mapping a config onto an options object."""
    out = {}
    for name, key in option_keys(options_cls).items():
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)
        out[name] = node
    return out
