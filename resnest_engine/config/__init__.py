"""Typed, strictly validated configuration for the recipe runner.

A config is ``SEED`` plus the sections ``MODEL``, ``DATA``, ``TRAINING``, ``OPTIMIZER``
and ``LOGGING``: a tree of dataclasses whose
attribute names are the UPPER_CASE keys, so ``cfg.TRAINING.EPOCHS`` reads like the YAML.

Sources, in order: the dataclass defaults, a YAML file (which may inherit from others through
``_BASE_``), then ``KEY=VALUE`` overrides. Everything is checked before a :class:`Config` is
returned: unknown keys (with a suggestion), types, ranges, enum values and cross-field rules.
Every problem is a :class:`ConfigError` whose one-line message starts with the dotted key or the
file path. A YAML file must have the ``FORMAT: resnest-engine/1`` line (one without it is in
another format: :mod:`resnest_engine.official` reads the official ResNeSt config). See
docs/configuration.md.

Modules, one concept each:

* :mod:`.schema`: the section dataclasses and their keys; :mod:`.fields`: how a key is declared
  (documentation, rules);
* :mod:`.validation`: type and range checks, cross-field rules, warnings;
  :mod:`.unknown_keys`: suggestions for unknown and renamed keys;
* :mod:`.yaml_io`: YAML files, ``_BASE_`` chains, overrides, writing;
  :mod:`.loading`: reading a config;
* :mod:`.derived`: effective LR and per-process batches; :mod:`.resume`: what a resume may change;
* :mod:`.reference`: the generated keys table (``python -m resnest_engine.config.reference``).
"""
from .derived import effective_lr, eval_batch_per_process, train_micro_batch
from .errors import ConfigError
from .fields import SCHEDULE_ALIASES
from .loading import LoadedConfig, apply_overrides, load_config, read_config
from .resume import (NONDETERMINISTIC_SAFE_KEYS, RESUME_SAFE_KEYS, TRAJECTORY_KEYS,
                     check_resume_overrides, diff_configs)
from .schema import (FORMAT_KEY, FORMAT_MARKER, Config, DataConfig, LoggingConfig, ModelConfig,
                     OptimizerConfig, TrainingConfig, config_to_dict)
from .validation import config_from_dict, config_warnings, validate_config
from .yaml_io import dump_config, dump_config_text

__all__ = [
    # errors and schema
    "ConfigError", "Config", "ModelConfig", "DataConfig", "TrainingConfig", "OptimizerConfig",
    "LoggingConfig", "FORMAT_KEY", "FORMAT_MARKER", "SCHEDULE_ALIASES",
    # reading, checking, writing
    "load_config", "read_config", "LoadedConfig", "apply_overrides", "config_from_dict",
    "config_to_dict", "validate_config", "config_warnings", "dump_config", "dump_config_text",
    # derived values
    "effective_lr", "train_micro_batch", "eval_batch_per_process",
    # resuming
    "diff_configs", "check_resume_overrides", "TRAJECTORY_KEYS", "RESUME_SAFE_KEYS",
    "NONDETERMINISTIC_SAFE_KEYS",
]
