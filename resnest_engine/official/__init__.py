"""The official ResNeSt ``train.py``'s formats: everything resnest-engine knows about them.

The rest of the library knows only its own formats; this package reads the official ones into
them and says how ours keep to the official log:

* :mod:`.config`: the official YAML config (a file without the ``FORMAT: resnest-engine/1``
  line), translated into our schema for the run's world size; :func:`read_config` /
  :func:`load_config` read a config of either format;
* :mod:`.checkpoint`: the official ``checkpoint_N.pth``: :func:`read_resume_file` (ours or
  official), :func:`is_official_checkpoint`, :func:`load_official_checkpoint` (weights, SGD
  momentum, the trainer and LR schedule at the next epoch);
* :mod:`.log_format`: the official log lines, which our text log starts with.
"""
from .checkpoint import is_official_checkpoint, load_official_checkpoint, read_resume_file
from .config import (OFFICIAL_DEFAULTS, OFFICIAL_KEYS, OFFICIAL_ONLY_KEYS, OFFICIAL_RESNET_NAMES,
                     load_config, read_config, translate_official)
from .log_format import BATCH_LINE, EPOCH_LINE, VALIDATION_LINE

# What docs/configuration.md and docs/migrating.md teach. The rest stays in its module:
# .checkpoint (official_epochs_done), .config (official_flat), .log_format (validation_line).
__all__ = [
    # checkpoints
    "is_official_checkpoint", "load_official_checkpoint", "read_resume_file",
    # configs
    "OFFICIAL_DEFAULTS", "OFFICIAL_KEYS", "OFFICIAL_ONLY_KEYS", "OFFICIAL_RESNET_NAMES",
    "load_config", "read_config", "translate_official",
    # log lines
    "BATCH_LINE", "EPOCH_LINE", "VALIDATION_LINE",
]
