"""The schema: defaults, field documentation, plain dicts, the error type."""
import pytest
import yaml

from resnest_engine.config import (Config, ConfigError, apply_overrides, config_from_dict,
                                   config_to_dict, effective_lr, load_config, validate_config)
from resnest_engine.config.schema import ALL_KEYS, key_field
from resnest_engine.config.validation import expected


def test_defaults_are_valid():
    cfg = load_config()
    assert cfg == Config() == config_from_dict({}) == validate_config(Config())
    # the default LR is the official recipe's 0.1 for a batch of 256, unscaled at 256
    assert effective_lr(cfg) == pytest.approx(0.1)


def test_list_defaults_are_not_shared():
    a, b = Config(), Config()
    a.OPTIMIZER.BETAS.append(1.0)
    assert b.OPTIMIZER.BETAS == [0.9, 0.999]


def test_config_error_is_value_error_with_key():
    with pytest.raises(ValueError) as info:
        apply_overrides(Config(), ["TRAINING.EPOCHS=0"])
    assert isinstance(info.value, ConfigError) and info.value.key == "TRAINING.EPOCHS"


def test_every_key_is_documented_and_of_a_type_the_checks_know():
    for key in ALL_KEYS:
        f = key_field(key)
        assert f.metadata.get("doc"), key
        assert expected(f).startswith(("a ", "an ", "one of", "null or")), key


def test_config_to_dict_is_plain():
    d = config_to_dict(Config())
    assert list(d) == ["SEED", "MODEL", "DATA", "TRAINING", "OPTIMIZER", "LOGGING"]
    assert yaml.safe_load(yaml.safe_dump(d)) == d
    assert config_from_dict(d) == Config()
