"""Unknown keys: the closest valid key, and our equivalent of keys named differently elsewhere.

A key that is not in the schema is always an error. The message names what was probably meant:
the same key in another section, a close spelling, or, for the keys other ResNeSt and GluonCV
configs use whose meaning differs here (per-GPU LR, ``LAST_GAMMA``, ``BASE_SIZE``...), the key of
ours that does the job, so such a YAML can never silently change meaning.
"""
import difflib
from typing import Dict, Iterable, Optional

from .errors import ConfigError
from .schema import FIELDS, SECTIONS, TOP_SCALARS

__all__ = ["RENAMED_KEYS", "suggest", "unknown_key_error"]

_BN_WD = "use OPTIMIZER.DISABLE_BN_WD (bool, default true: no weight decay on BN and biases)"
_DROPBLOCK = ("use MODEL.DROPBLOCK_PROB (float in [0, 1): target drop probability, ramped "
              "linearly from 0 over training; block size 3)")
#: Keys of other ResNeSt/GluonCV configs, scripts and forks, or in the wrong section -> our key
#: that does the job.
RENAMED_KEYS: Dict[str, str] = {
    "TRAINING.LAST_GAMMA": "use MODEL.ZERO_INIT_LAST (bool, default true: zero-init the last "
                           "BN gamma of each block)",
    "DATA.BASE_SIZE": "use DATA.CROP_SIZE and DATA.EVAL_CROP_FRACTION (eval resize = CROP_SIZE "
                      "/ EVAL_CROP_FRACTION; BASE_SIZE 256 with CROP_SIZE 224 is 0.875)",
    "TRAINING.WORKERS": "use DATA.WORKERS (DataLoader workers per process)",
    "TRAINING.START_EPOCHS": "not a setting here: resume from a checkpoint, which stores its "
                             "epoch",
    "MODEL.LAST_GAMMA": "use MODEL.ZERO_INIT_LAST (bool, default true)",
    "TRAINING.LR": "use OPTIMIZER.LR (the LR for a batch of 256, scaled by "
                   "TRAINING.BATCH_SIZE / 256; not per GPU)",
    "TRAINING.NO_BN_WD": _BN_WD,
    "TRAINING.DISABLE_BN_WD": _BN_WD,
    "OPTIMIZER.NO_BN_WD": _BN_WD,
    "OPTIMIZER.NO_WD": _BN_WD,
    "TRAINING.LR_SCHEDULER": "use OPTIMIZER.LR_SCHEDULER (cos/step/linear/poly)",
    "TRAINING.LR_MODE": "use OPTIMIZER.LR_SCHEDULER (cos/step/linear/poly)",
    "OPTIMIZER.LR_MODE": "use OPTIMIZER.LR_SCHEDULER (cos/step/linear/poly)",
    "TRAINING.WARMUP_EPOCHS": "use OPTIMIZER.WARMUP_EPOCHS",
    "MODEL.DROP_BLOCK": _DROPBLOCK,
    "MODEL.DROPBLOCK": _DROPBLOCK,
    "MODEL.DROP_BLOCK_PROB": _DROPBLOCK,
    "TRAINING.DROPBLOCK_PROB": _DROPBLOCK,
    "DATA.MIXUP_ALPHA": "use DATA.MIXUP (it is the mixup alpha; 0 = off)",
    "DATA.CUTMIX_ALPHA": "use DATA.CUTMIX (it is the cutmix alpha; 0 = off)",
    "TRAINING.MIXUP": "use DATA.MIXUP (the mixup alpha; 0 = off)",
    "TRAINING.LABEL_SMOOTHING": "use DATA.LABEL_SMOOTHING",
    "DATA.TEST_BATCH_SIZE": "use TRAINING.TEST_BATCH_SIZE (global eval batch)",
    "DATA.BATCH_SIZE": "use TRAINING.BATCH_SIZE (global batch per optimizer step)",
    "TRAINING.PER_GPU_BATCH_SIZE": "use TRAINING.BATCH_SIZE (global batch per optimizer step "
                                   "= per-GPU batch x number of GPUs)",
    "OPTIMIZER.NESTEROV": "use OPTIMIZER.NAME: nesterov (or sgd)",
    "OPTIMIZER.LR_DECAY": "use OPTIMIZER.GAMMA",
    "OPTIMIZER.LR_DECAY_EPOCH": "use OPTIMIZER.STEPS (a list of milestone epochs)",
    "OPTIMIZER.LR_STEPS": "use OPTIMIZER.STEPS (a list of milestone epochs)",
    "OPTIMIZER.MILESTONES": "use OPTIMIZER.STEPS (a list of milestone epochs)",
    "TRAINING.FP16": "use TRAINING.AMP (off/fp16/bf16)",
    "TRAINING.MIXED_PRECISION": "use TRAINING.AMP (off/fp16/bf16)",
    "TRAINING.DTYPE": "use TRAINING.AMP (off/fp16/bf16)",
    "TRAINING.SEED": "use the top-level SEED",
    "DATA.AUTOAUGMENT": "use DATA.AUTO_AUG (bool) or DATA.RAND_AUG (\"N,M\")",
    "DATA.AUTO_AUGMENT": "use DATA.AUTO_AUG (bool) or DATA.RAND_AUG (\"N,M\")",
}


def suggest(word: str, options: Iterable[str]) -> Optional[str]:
    """The option ``word`` probably means (case-insensitive, close spelling), or None."""
    options = list(options)
    upper = {o.upper(): o for o in options}
    if word.upper() in upper:
        return upper[word.upper()]
    hits = difflib.get_close_matches(word.upper(), list(upper), n=1, cutoff=0.6)
    return upper[hits[0]] if hits else None


def unknown_key_error(dotted: str, section: Optional[str], key: str) -> ConfigError:
    """The error for ``dotted`` (``section`` None for a top-level name), naming the key that was
    probably meant."""
    if dotted in RENAMED_KEYS:
        return ConfigError(f"{dotted}: unknown key; {RENAMED_KEYS[dotted]}", key=dotted)
    if section is None:
        where = [f"{s}.{key.upper()}" for s, fs in FIELDS.items() if key.upper() in fs]
        if where:
            return ConfigError(f"{dotted}: unknown top-level key; did you mean {where[0]}?",
                               key=dotted)
        guess = suggest(key, list(TOP_SCALARS) + list(SECTIONS))
        valid = ", ".join(list(TOP_SCALARS) + list(SECTIONS))
        tail = f"did you mean {guess}?" if guess else f"valid: {valid}"
        return ConfigError(f"{dotted}: unknown section or key; {tail}", key=dotted)
    up = key.upper()
    where = [] if up in FIELDS[section] else [
        f"{s}.{up}" for s, fs in FIELDS.items() if up in fs and s != section]
    if up in TOP_SCALARS:
        where.insert(0, up)
    if where:
        return ConfigError(f"{dotted}: unknown key; did you mean {where[0]}?", key=dotted)
    guess = suggest(key, FIELDS[section])
    if guess:
        return ConfigError(f"{dotted}: unknown key; did you mean {section}.{guess}?",
                           key=dotted)
    return ConfigError(f"{dotted}: unknown key; valid keys of {section}: "
                       f"{', '.join(FIELDS[section])}", key=dotted)
