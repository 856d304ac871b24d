"""Helpers of the config tests: config files in either format, and one-line errors."""
import pathlib

import pytest

from resnest_engine.config import ConfigError

MARKER = "FORMAT: resnest-engine/1\n"


def write(path: pathlib.Path, text: str, official: bool = False) -> pathlib.Path:
    """A config file in our format (the FORMAT line first), or as written when ``official``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if official else MARKER + text)
    return path


def error(fn, *args, **kwargs) -> str:
    """The message of the ConfigError ``fn`` raises, checked to be one line."""
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    return msg
