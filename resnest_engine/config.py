"""Typed, strictly validated configuration for the recipe runner.

The layout follows the official ResNeSt config (``SEED`` plus the sections ``MODEL``, ``DATA``,
``TRAINING``, ``OPTIMIZER``; we add ``LOGGING``). A config is a tree of dataclasses whose
attribute names are the UPPER_CASE keys, so ``cfg.TRAINING.EPOCHS`` reads like the YAML.

Sources, in order: the dataclass defaults, a YAML file (which may inherit from others through
``_BASE_``), then ``KEY=VALUE`` overrides. Everything is checked before a :class:`Config` is
returned: unknown keys (with a suggestion), types, ranges, enum values and cross-field rules.
Every problem is a :class:`ConfigError` whose one-line message starts with the dotted key or the
file path. Keys of the official config whose meaning differs here (per-GPU batch and LR,
``LAST_GAMMA``, ``BASE_SIZE``...) are refused with a message that names our equivalent, so an
official YAML can never silently change meaning.

Semantics that differ from the official config:

* ``TRAINING.BATCH_SIZE`` is the GLOBAL batch per optimizer step (all processes and all
  ``GRAD_ACCUM`` micro-steps together); ``TRAINING.TEST_BATCH_SIZE`` is global as well.
* ``OPTIMIZER.LR`` is the learning rate for a batch of 256; the run uses
  ``LR * BATCH_SIZE / 256`` (:func:`effective_lr`). ``OPTIMIZER.MIN_LR`` is absolute.
* ``DATA.WORKERS`` is per process.
"""
import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from typing import (Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple,
                    Union, get_args, get_origin)

import yaml

__all__ = [
    "ConfigError", "Config", "ModelConfig", "DataConfig", "TrainingConfig", "OptimizerConfig",
    "LoggingConfig", "load_config", "config_from_dict", "config_to_dict", "dump_config",
    "apply_overrides", "diff_configs", "validate_config", "effective_lr", "train_micro_batch",
    "eval_batch_per_process", "TRAJECTORY_KEYS", "RESUME_SAFE_KEYS",
    "NONDETERMINISTIC_SAFE_KEYS", "check_resume_overrides", "FORMAT_KEY", "FORMAT_MARKER",
    "LoadedConfig", "read_config", "config_warnings", "dump_config_text", "SCHEDULE_ALIASES",
]

#: Top-level key and value that mark a YAML file as a resnest-engine config. A file without it is
#: read as an official ResNeSt config (see ``resnest_engine.config`` docs in README).
FORMAT_KEY = "FORMAT"
FORMAT_MARKER = "resnest-engine/1"


class ConfigError(ValueError):
    """An invalid config. The message is one line and starts with the dotted key or the path.

    ``key`` (dotted key) and ``path`` (config file) are set where they are known.
    """

    def __init__(self, message: str, *, key: Optional[str] = None,
                 path: Optional[str] = None) -> None:
        super().__init__(" ".join(str(message).split()))
        self.key = key
        self.path = path


# ----------------------------------------------------------------------------------------------
# Field declarations
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Check:
    ok: Callable[[Any], bool]
    text: str  # completes "expected an integer ...", e.g. ">= 1" or "in [0, 1)"


def _ge(lo: float) -> _Check:
    return _Check(lambda v: v >= lo, f">= {lo}")


def _gt(lo: float) -> _Check:
    return _Check(lambda v: v > lo, f"> {lo}")


def _within(lo: float, hi: float, lo_closed: bool = True, hi_closed: bool = False) -> _Check:
    def ok(v: Any) -> bool:
        return (v >= lo if lo_closed else v > lo) and (v <= hi if hi_closed else v < hi)
    text = f"in {'[' if lo_closed else '('}{lo}, {hi}{']' if hi_closed else ')'}"
    return _Check(ok, text)


_PROB = _within(0, 1, True, True)        # [0, 1]
_PROB_OPEN = _within(0, 1, True, False)  # [0, 1)
_EMA = _Check(lambda v: v == 0 or 0 < v < 1, "that is 0 (off) or in (0, 1)")
_SEED = _within(0, 2 ** 32, True, False)
_NONEMPTY = _Check(lambda v: len(v) > 0, "(non-empty)")
_BETAS = _Check(lambda v: len(v) == 2 and all(0 <= b < 1 for b in v),
                "(two values, each in [0, 1))")


def _f(default: Any, doc: str, check: Optional[_Check] = None,
       choices: Optional[Tuple[str, ...]] = None, hint: Optional[str] = None,
       bool_map: Optional[Dict[bool, str]] = None,
       normalize: Optional[Callable[[str, Any], Any]] = None) -> Any:
    """A dataclass field carrying its documentation and validation rules.

    ``hint`` is appended to type errors; ``bool_map`` turns the booleans that YAML 1.1 makes of
    unquoted ``on``/``off`` back into strings; ``normalize(key, value)`` replaces the generic
    type check (it returns the clean value or raises ConfigError).
    """
    md = dict(doc=doc, check=check, choices=choices, hint=hint, bool_map=bool_map,
              normalize=normalize)
    if isinstance(default, list):
        frozen = tuple(default)
        return field(default_factory=lambda: list(frozen), metadata=md)
    return field(default=default, metadata=md)


_RAND_AUG_MAX_MAGNITUDE = 30
_RAND_AUG_RE = re.compile(r"^\s*(\d+)\s*,\s*(\d+)\s*$")
_RAND_AUG_EXPECTED = ('null or a string "N,M" (N ops >= 1, magnitude M in '
                      f'[0, {_RAND_AUG_MAX_MAGNITUDE}]), e.g. "2,9"')


def _normalize_rand_aug(key: str, value: Any) -> Optional[str]:
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
    if n < 1 or not 0 <= m <= _RAND_AUG_MAX_MAGNITUDE:
        raise ConfigError(f"{key}: expected {_RAND_AUG_EXPECTED}, got {value!r}", key=key)
    return f"{n},{m}"


#: Other libraries' names of our schedules (same meaning): the ResNeSt article's and timm's.
SCHEDULE_ALIASES = {"cosine": "cos", "multistep": "step"}


def _normalize_schedule(key: str, value: Any) -> str:
    if isinstance(value, str) and value in SCHEDULE_ALIASES:
        value = SCHEDULE_ALIASES[value]
    f = _FIELDS["OPTIMIZER"]["LR_SCHEDULER"]
    return _convert(key, f, value, use_normalize=False)


def _normalize_auto_bool(key: str, value: Any) -> Any:
    if isinstance(value, bool) or value == "auto":
        return value
    raise ConfigError(f"{key}: expected true, false or 'auto', got {value!r} "
                      f"({_type_name(value)})", key=key)


def _normalize_pretrained(key: str, value: Any) -> Any:
    if value is None or value is False:
        return None
    if value is True:
        return True
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str) and value:
        return value
    raise ConfigError(f"{key}: expected true (the published weights), a weights file path or "
                      f"null, got {value!r} ({_type_name(value)})", key=key)


@dataclass
class ModelConfig:
    NAME: str = _f("resnest50", "Model variant, one of `resnest_engine.list_models()` "
                   "(e.g. resnest50, resnest101, resnet50d).", _NONEMPTY)
    NUM_CLASSES: Optional[int] = _f(None, "Classifier outputs; null = the dataset's number of "
                                    "classes.", _ge(1))
    FINAL_DROP: float = _f(0.0, "Dropout probability before the classifier (0 = off).",
                           _PROB_OPEN, hint="it is a probability, not a switch (0 = off), "
                           "e.g. 0.2")
    DROPBLOCK_PROB: float = _f(0.0, "Target DropBlock drop probability in stages 3-4, ramped "
                               "linearly from 0 over training (0 = off).", _PROB_OPEN)
    ZERO_INIT_LAST: bool = _f(True, "Zero-init the last BN gamma of each residual block "
                              "(official TRAINING.LAST_GAMMA).")
    STEM: Optional[str] = _f(None, "Stem override: null = the variant's; deep (3x3 convs), "
                             "basic (7x7), cifar (deep without stride/max-pool, for 32x32 "
                             "inputs).", choices=("deep", "basic", "cifar"))
    IN_CHANS: int = _f(3, "Input image channels.", _ge(1))
    PRETRAINED: Optional[str] = _f(None, "true: the variant's published weights (downloaded "
                                   "once into the torch hub cache, hash-checked; "
                                   "RESNEST_WEIGHTS_URL for a mirror); a path: a local weights "
                                   "file; null/false: random init.",
                                   normalize=lambda key, v: _normalize_pretrained(key, v))
    CHANNELS_LAST: bool = _f(False, "Use the channels_last memory format: true, false, or auto "
                             "(on for CUDA and CPU; the log states the choice).",
                             normalize=lambda key, v: _normalize_auto_bool(key, v))
    COMPILE: bool = _f(False, "Wrap the model with torch.compile.")
    SYNC_BN: bool = _f(False, "Convert BatchNorm to SyncBatchNorm in distributed runs.")
    GRAD_CHECKPOINTING: bool = _f(False, "Activation checkpointing (less memory, more "
                                  "compute).")


@dataclass
class DataConfig:
    DATASET: str = _f("imagenet", "Dataset, one of `resnest_engine.data.list_datasets()` "
                      "(cifar10, cifar100, digits, imagefolder, imagenet, synthetic).", _NONEMPTY)
    ROOT: Optional[str] = _f(None, "Dataset directory; null = the data module's default.",
                             _NONEMPTY)
    DOWNLOAD: bool = _f(False, "Download the dataset if missing (where supported).")
    CROP_SIZE: Optional[int] = _f(None, "Train/eval crop side in pixels; null = the variant's.",
                                  _ge(1))
    EVAL_CROP_FRACTION: Optional[float] = _f(
        None, "Eval: resize to CROP_SIZE / fraction, center-crop CROP_SIZE; null = the "
        "variant's (0.875 = official BASE_SIZE 256 with CROP_SIZE 224).",
        _within(0, 1, False, True))
    INTERPOLATION: Optional[str] = _f(None, "Resize interpolation; null = the variant's.",
                                      choices=("bilinear", "bicubic", "nearest"))
    CROP_STYLE: str = _f("auto", "auto: RandomResizedCrop + resize/center-crop below 320 px, "
                         "ERandomCrop/ECenterCrop (bicubic) from 320 (the published recipe); "
                         "ecrop: ERandomCrop/ECenterCrop at every size (the official torch "
                         "train.py).", choices=("auto", "ecrop"))
    IMAGE_SIZE: int = _f(32, "Image side for the digits/synthetic datasets.", _ge(1))
    HFLIP: bool = _f(True, "Random horizontal flip when training.")
    COLOR_JITTER: float = _f(0.4, "Brightness/contrast/saturation jitter strength (0 = off).",
                             _ge(0))
    PCA_LIGHTING: float = _f(0.1, "AlexNet-style PCA lighting noise std (0 = off).", _ge(0))
    RAND_AUG: Optional[str] = _f(None, 'RandAugment as "N,M": N ops at magnitude M in [0, 30] '
                                 '(null = off). The official RAND_AUG: true is "2,12".',
                                 normalize=_normalize_rand_aug)
    AUTO_AUG: bool = _f(False, "AutoAugment (ImageNet policy).")
    TRIVIAL_AUG: bool = _f(False, "TrivialAugmentWide.")
    RANDOM_ERASE: float = _f(0.0, "Random-erasing probability (0 = off).", _PROB)
    SMALL_IMAGE: bool = _f(False, "Pad-and-crop + flip preset for 32x32 data instead of the "
                           "ImageNet-style transforms.")
    LABEL_SMOOTHING: float = _f(0.0, "Label smoothing of the training loss.", _PROB_OPEN)
    MIXUP: float = _f(0.0, "Mixup alpha of Beta(alpha, alpha) (0 = off; official 0.2).",
                      _ge(0), hint="it is the Beta(alpha, alpha) alpha, not a switch "
                      "(0 = off), e.g. 0.2")
    CUTMIX: float = _f(0.0, "CutMix alpha of Beta(alpha, alpha) (0 = off).", _ge(0),
                       hint="it is the Beta(alpha, alpha) alpha, not a switch (0 = off), "
                       "e.g. 1.0")
    MIXUP_PROB: float = _f(1.0, "Probability that a batch gets mixup/cutmix.", _PROB)
    MIXUP_SWITCH_PROB: float = _f(0.5, "When MIXUP and CUTMIX are both on: probability of "
                                  "cutmix for a batch.", _PROB)
    MIXUP_OFF_EPOCH: int = _f(0, "Mixup/cutmix only in epochs 1..N, off from epoch N+1 on "
                              "(0 = never switch off); must be < TRAINING.EPOCHS.", _ge(0))
    AUG_REPEATS: int = _f(0, "Repeated augmentation: each image appears this many times per "
                          "epoch with different augmentations (>= 2 turns it on).", _ge(0))
    VAL_FRACTION: Optional[float] = _f(None, "Image folders: split one ROOT/<class>/ folder into "
                                       "train/val, this fraction of each class to val "
                                       "(stratified, fixed by SEED); null = ROOT/train + "
                                       "ROOT/val.", _within(0, 1, False, False))
    WORKERS: int = _f(4, "DataLoader workers PER PROCESS.", _ge(0))
    SKIP_CORRUPT: bool = _f(False, "Skip unreadable images instead of failing.")
    FAST_JPEG: bool = _f(False, "Faster (reduced-size) JPEG decoding; decoded pixels differ "
                         "slightly.")
    SYNTHETIC_SIZE: int = _f(1024, "Number of images of the synthetic dataset.", _ge(1))
    SYNTHETIC_CLASSES: int = _f(10, "Number of classes of the synthetic dataset.", _ge(1))


@dataclass
class TrainingConfig:
    EPOCHS: int = _f(270, "Training epochs.", _ge(1))
    BATCH_SIZE: int = _f(256, "GLOBAL batch per optimizer step (all processes x GRAD_ACCUM); "
                         "must divide by world size x GRAD_ACCUM.", _ge(1))
    TEST_BATCH_SIZE: int = _f(256, "GLOBAL eval batch, split across processes; must divide by "
                              "world size.", _ge(1))
    GRAD_ACCUM: int = _f(1, "Micro-steps per optimizer step; must divide BATCH_SIZE.", _ge(1))
    CLIP_GRAD: float = _f(0.0, "Max global gradient norm (0 = off).", _ge(0))
    AMP: str = _f("off", "Mixed precision: off, fp16 (with loss scaling), bf16, or auto (bf16 "
                  "on CUDA devices that support it, else fp16; off on CPU).",
                  choices=("off", "fp16", "bf16", "auto"), bool_map={False: "off"})
    EMA_DECAY: float = _f(0.0, "Decay of an exponential moving average of the weights "
                          "(0 = off).", _EMA)
    VAL_EVERY: int = _f(1, "Validate every this-many epochs (and after the last).", _ge(1))
    VAL_START: Optional[int] = _f(None, "First validated epoch, then every VAL_EVERY; null = "
                                  "VAL_EVERY (the official script: 1, i.e. epochs 1, 11, 21...).",
                                  _ge(1))
    CKPT_EVERY: int = _f(1, "Checkpoint every this-many epochs (0 = off).", _ge(0))
    CKPT_EVERY_ITERS: int = _f(0, "Also checkpoint every this-many iterations (0 = off).",
                               _ge(0))
    KEEP_CHECKPOINTS: int = _f(2, "Most recent checkpoints kept.", _ge(1))
    KEEP_BEST: int = _f(1, "Best checkpoints (by validation top-1) kept (0 = none).", _ge(0))
    DETERMINISTIC: bool = _f(False, "Deterministic algorithms (reproducible, slower).")
    DIST_TIMEOUT: int = _f(1800, "Timeout of collective operations, in seconds.", _ge(1))
    NAN_CHECK_EVERY: int = _f(1, "Check that the loss is finite every this-many iterations.",
                              _ge(1))


@dataclass
class OptimizerConfig:
    NAME: str = _f("nesterov", "sgd (momentum), nesterov (SGD with Nesterov momentum) or "
                   "adamw.", choices=("sgd", "nesterov", "adamw"))
    LR: float = _f(0.1, "Learning rate for a batch of 256; the run uses LR x BATCH_SIZE / 256.",
                   _gt(0))
    LR_SCHEDULER: str = _f("cos", "cos, step, linear or poly (decay after warmup, per "
                           "iteration); also cosine, multistep (timm names of cos, step).",
                           choices=("cos", "step", "linear", "poly"),
                           normalize=lambda key, v: _normalize_schedule(key, v))
    WARMUP_EPOCHS: int = _f(5, "Linear warmup epochs; at or above TRAINING.EPOCHS it is cut "
                            "to the run (with a warning).", _ge(0))
    WARMUP_START_FACTOR: float = _f(0.0, "Warmup starts at this fraction of the LR.", _PROB)
    MIN_LR: float = _f(0.0, "LR floor (absolute, not scaled); must be below the effective LR.",
                       _ge(0))
    STEPS: List[int] = _f([], "Milestone epochs of the step scheduler (increasing, each in "
                          "[1, EPOCHS)); required for step, ignored otherwise.")
    GAMMA: float = _f(0.1, "LR factor at each step milestone.", _within(0, 1, False, True))
    POLY_POWER: float = _f(0.9, "Exponent of the poly scheduler.", _gt(0))
    MOMENTUM: float = _f(0.9, "Momentum of sgd/nesterov.", _PROB_OPEN)
    WEIGHT_DECAY: float = _f(1e-4, "Weight decay (decoupled for adamw).", _ge(0))
    DISABLE_BN_WD: bool = _f(True, "No weight decay on BatchNorm parameters and biases.")
    BETAS: List[float] = _f([0.9, 0.999], "AdamW betas.", _BETAS)
    BODY_LR_SCALE: float = _f(1.0, "LR of everything but the classifier, as a fraction of the "
                              "classifier's (fine-tuning a pretrained body: e.g. 0.1).", _gt(0))
    FREEZE_BODY_EPOCHS: int = _f(0, "Fine-tuning: only the classifier trains in epochs 1..N, "
                                 "the body from epoch N+1 (0 = never frozen); < TRAINING.EPOCHS.",
                                 _ge(0))


@dataclass
class LoggingConfig:
    LOG_EVERY: int = _f(50, "Log training metrics every this-many iterations.", _ge(1))
    TENSORBOARD: bool = _f(True, "Write TensorBoard event files.")
    PROGRESS_BAR: str = _f("auto", "Progress bar: auto (only on a terminal), on or off.",
                           choices=("auto", "on", "off"), bool_map={True: "on", False: "off"})


@dataclass
class Config:
    SEED: int = _f(0, "Random seed of the run.", _SEED)
    MODEL: ModelConfig = field(default_factory=ModelConfig)
    DATA: DataConfig = field(default_factory=DataConfig)
    TRAINING: TrainingConfig = field(default_factory=TrainingConfig)
    OPTIMIZER: OptimizerConfig = field(default_factory=OptimizerConfig)
    LOGGING: LoggingConfig = field(default_factory=LoggingConfig)


_SECTIONS: Dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Config)
                              if f.default_factory is not dataclasses.MISSING}
_TOP_SCALARS: Dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(Config)
                                              if f.name not in _SECTIONS}
_FIELDS: Dict[str, Dict[str, dataclasses.Field]] = {
    sec: {f.name: f for f in dataclasses.fields(cls)} for sec, cls in _SECTIONS.items()}
_ALL_KEYS: Tuple[str, ...] = tuple(
    list(_TOP_SCALARS) + [f"{sec}.{k}" for sec, fs in _FIELDS.items() for k in fs])


# ----------------------------------------------------------------------------------------------
# Keys of the official ResNeSt / GluonCV configs that must not be read silently
# ----------------------------------------------------------------------------------------------

_BN_WD = "use OPTIMIZER.DISABLE_BN_WD (bool, default true: no weight decay on BN and biases)"
_DROPBLOCK = ("use MODEL.DROPBLOCK_PROB (float in [0, 1): target drop probability, ramped "
              "linearly from 0 over training; block size 3 as the official code)")
# Keys of the official ResNeSt torch config (resnest/torch/config.py) that we do not have: in a
# file with the FORMAT marker they are a mix of the two formats.
_OFFICIAL_KEYS: Dict[str, str] = {
    "TRAINING.LAST_GAMMA": "use MODEL.ZERO_INIT_LAST (bool, default true: zero-init the last "
                           "BN gamma of each block)",
    "DATA.BASE_SIZE": "use DATA.CROP_SIZE and DATA.EVAL_CROP_FRACTION (eval resize = CROP_SIZE "
                      "/ EVAL_CROP_FRACTION; BASE_SIZE 256 with CROP_SIZE 224 is 0.875)",
    "TRAINING.WORKERS": "use DATA.WORKERS (DataLoader workers per process)",
    "TRAINING.START_EPOCHS": "not a setting here: resume from a checkpoint, which stores its "
                             "epoch",
}
# Names used by other ResNeSt/GluonCV scripts and forks, or in the wrong section.
_RENAMED_KEYS: Dict[str, str] = {
    "MODEL.LAST_GAMMA": "use MODEL.ZERO_INIT_LAST (bool, default true)",
    "TRAINING.LR": "use OPTIMIZER.LR (the LR for a batch of 256, scaled by "
                   "TRAINING.BATCH_SIZE / 256; the official LR is per GPU)",
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


def _suggest(word: str, options: Iterable[str]) -> Optional[str]:
    options = list(options)
    upper = {o.upper(): o for o in options}
    if word.upper() in upper:
        return upper[word.upper()]
    hits = difflib.get_close_matches(word.upper(), list(upper), n=1, cutoff=0.6)
    return upper[hits[0]] if hits else None


def _unknown_key_error(dotted: str, section: Optional[str], key: str) -> ConfigError:
    if dotted in _OFFICIAL_KEYS:
        msg = (f"{dotted}: official ResNeSt key in a resnest-engine config; "
               f"{_OFFICIAL_KEYS[dotted]} (a file without the {FORMAT_KEY} line is read as an "
               "official config)")
        return ConfigError(msg, key=dotted)
    if dotted in _RENAMED_KEYS:
        return ConfigError(f"{dotted}: unknown key; {_RENAMED_KEYS[dotted]}", key=dotted)
    if section is None:
        where = [f"{s}.{key.upper()}" for s, fs in _FIELDS.items() if key.upper() in fs]
        if where:
            return ConfigError(f"{dotted}: unknown top-level key; did you mean {where[0]}?",
                               key=dotted)
        guess = _suggest(key, list(_TOP_SCALARS) + list(_SECTIONS))
        valid = ", ".join(list(_TOP_SCALARS) + list(_SECTIONS))
        tail = f"did you mean {guess}?" if guess else f"valid: {valid}"
        return ConfigError(f"{dotted}: unknown section or key; {tail}", key=dotted)
    up = key.upper()
    where = [] if up in _FIELDS[section] else [
        f"{s}.{up}" for s, fs in _FIELDS.items() if up in fs and s != section]
    if up in _TOP_SCALARS:
        where.insert(0, up)
    if where:
        return ConfigError(f"{dotted}: unknown key; did you mean {where[0]}?", key=dotted)
    guess = _suggest(key, _FIELDS[section])
    if guess:
        return ConfigError(f"{dotted}: unknown key; did you mean {section}.{guess}?",
                           key=dotted)
    return ConfigError(f"{dotted}: unknown key; valid keys of {section}: "
                       f"{', '.join(_FIELDS[section])}", key=dotted)


# ----------------------------------------------------------------------------------------------
# Value checking
# ----------------------------------------------------------------------------------------------

_TYPE_WORDS = {int: ("an integer", "integers"), float: ("a number", "numbers"),
               bool: ("a boolean", "booleans"), str: ("a string", "strings")}


def _unwrap(tp: Any) -> Tuple[Any, bool]:
    if get_origin(tp) is Union:
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _expected(f: dataclasses.Field) -> str:
    tp, optional = _unwrap(f.type)
    md = f.metadata
    if md.get("choices"):
        text = "one of " + ", ".join(repr(c) for c in md["choices"])
    elif get_origin(tp) in (list, List):
        text = f"a list of {_TYPE_WORDS[get_args(tp)[0]][1]}"
    else:
        text = _TYPE_WORDS[tp][0]
    check = md.get("check")
    if check is not None and check is not _NONEMPTY:
        text += f" {check.text}"
    elif check is _NONEMPTY and tp is str:
        text = "a non-empty string"
    return f"null or {text}" if optional else text


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


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


def _convert(dotted: str, f: dataclasses.Field, value: Any, use_normalize: bool = True) -> Any:
    md = f.metadata
    if use_normalize and md.get("normalize"):
        return md["normalize"](dotted, value)
    tp, optional = _unwrap(f.type)

    def bad(extra: str = "", show_type: bool = True) -> ConfigError:
        got = f"{value!r} ({_type_name(value)})" if show_type else repr(value)
        return ConfigError(f"{dotted}: expected {_expected(f)}, got {got}{extra}", key=dotted)

    if value is None:
        if optional:
            return None
        raise bad()
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
        guess = _suggest(value, choices)
        raise bad(f"; did you mean {guess!r}?" if guess else "", show_type=False)
    check = md.get("check")
    if check is not None and not check.ok(value):
        raise bad(show_type=False)
    return value


def _check_registered(key: str, value: str, names: Callable[[], List[str]], what: str) -> None:
    known = names()
    if value not in known:
        guess = _suggest(value, known)
        tail = f"did you mean {guess!r}?" if guess else f"known: {', '.join(known)}"
        raise ConfigError(f"{key}: unknown {what} {value!r}; {tail}", key=key)


def _check_names(cfg: "Config") -> None:
    """MODEL.NAME and DATA.DATASET against the live registries (imported lazily)."""
    try:
        from .models import list_models
    except ImportError:  # pragma: no cover - a broken package reports itself when used
        pass
    else:
        _check_registered("MODEL.NAME", cfg.MODEL.NAME, list_models, "model")
    try:
        from .data import list_datasets
    except ImportError:  # pragma: no cover
        pass
    else:
        _check_registered("DATA.DATASET", cfg.DATA.DATASET, list_datasets, "dataset")


def _cross_check(cfg: "Config") -> None:
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
    if o.FREEZE_BODY_EPOCHS >= t.EPOCHS:
        raise ConfigError(f"OPTIMIZER.FREEZE_BODY_EPOCHS: must be < TRAINING.EPOCHS ({t.EPOCHS}) "
                          f"or the body never trains, got {o.FREEZE_BODY_EPOCHS}",
                          key="OPTIMIZER.FREEZE_BODY_EPOCHS")
    if d.MIXUP_OFF_EPOCH >= t.EPOCHS:
        raise ConfigError(f"DATA.MIXUP_OFF_EPOCH: must be < TRAINING.EPOCHS ({t.EPOCHS}) "
                          f"(0 = never switch off), got {d.MIXUP_OFF_EPOCH}",
                          key="DATA.MIXUP_OFF_EPOCH")
    policies = [k for k, on in (("DATA.RAND_AUG", d.RAND_AUG is not None),
                                ("DATA.AUTO_AUG", d.AUTO_AUG),
                                ("DATA.TRIVIAL_AUG", d.TRIVIAL_AUG)) if on]
    if len(policies) > 1:
        raise ConfigError(f"{policies[1]}: only one of DATA.RAND_AUG, DATA.AUTO_AUG and "
                          f"DATA.TRIVIAL_AUG may be enabled, got {' and '.join(policies)}",
                          key=policies[1])


def _build(data: Any, origins: Optional[Mapping[str, str]] = None) -> "Config":
    try:
        return _build_unsourced(data)
    except ConfigError as e:
        src = (origins or {}).get(e.key or "")
        if src is None:
            raise
        raise ConfigError(f"{e} (from {src})", key=e.key, path=e.path) from None


def _build_unsourced(data: Any) -> "Config":
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: expected a mapping of sections, got {_type_name(data)}")
    # Unknown names first, so a foreign key is reported before any value.
    official = [k for k in _flat_keys(data) if k in _OFFICIAL_KEYS]
    if len(official) > 1:
        raise ConfigError(f"{official[0]}: official ResNeSt keys in a resnest-engine config "
                          f"({', '.join(official)}); {_OFFICIAL_KEYS[official[0]]} (a file "
                          f"without the {FORMAT_KEY} line is read as an official config)",
                          key=official[0])
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
        if name in _TOP_SCALARS:
            continue
        if name not in _SECTIONS:
            raise _unknown_key_error(name, None, name)
        if value is not None and not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a mapping of keys, got {value!r} "
                              f"({_type_name(value)})", key=name)
        for key in value or {}:
            if not isinstance(key, str):
                raise ConfigError(f"{name}: keys must be strings, got {key!r}", key=name)
            if key not in _FIELDS[name]:
                raise _unknown_key_error(f"{name}.{key}", name, key)
    kwargs: Dict[str, Any] = {}
    for name, value in data.items():
        if name in _TOP_SCALARS:
            kwargs[name] = _convert(name, _TOP_SCALARS[name], value)
            continue
        sec = {k: _convert(f"{name}.{k}", _FIELDS[name][k], v) for k, v in (value or {}).items()}
        kwargs[name] = _SECTIONS[name](**sec)
    cfg = Config(**kwargs)
    _cross_check(cfg)
    return cfg


# ----------------------------------------------------------------------------------------------
# YAML
# ----------------------------------------------------------------------------------------------

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
                          f"got {_type_name(data)}", path=path)
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


def _file_format(path: str, data: Dict[str, Any]) -> str:
    """``"ours"`` for a file with the FORMAT marker, ``"official"`` without (marker removed)."""
    if FORMAT_KEY not in data:
        return "official"
    marker = data.pop(FORMAT_KEY)
    if marker != FORMAT_MARKER:
        raise ConfigError(f"{path}: {FORMAT_KEY}: expected {FORMAT_MARKER!r}, got {marker!r}",
                          path=path, key=FORMAT_KEY)
    return "ours"


def _load_tree(path: str, stack: Tuple[str, ...]
               ) -> Tuple[Dict[str, Any], Dict[str, str], str]:
    """The merged mapping of ``path`` and its ``_BASE_`` files, where each key came from, and
    the format, which every file of the chain must share."""
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
        b_data, b_origins, b_fmt = _load_tree(base_path, stack + (real,))
        if b_fmt != fmt:
            has, lacks = (path, base_path) if fmt == "ours" else (base_path, path)
            raise ConfigError(f"{path}: mixes the two config formats: {has} has the "
                              f"'{FORMAT_KEY}: {FORMAT_MARKER}' line and its _BASE_ chain "
                              f"file {lacks} does not (an official config); give every file "
                              "of the chain the same format", path=path)
        merged = _merge(merged, b_data)
        origins.update(b_origins)
    merged = _merge(merged, data)
    origins.update(_leaf_origins(data, path))
    return merged, origins, fmt


# ----------------------------------------------------------------------------------------------
# Overrides
# ----------------------------------------------------------------------------------------------

def _parse_override(item: Any) -> Tuple[List[str], Any]:
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


def _apply_to_dict(data: Dict[str, Any], overrides: Sequence[str],
                   origins: Dict[str, str]) -> Dict[str, Any]:
    if isinstance(overrides, str):
        overrides = [overrides]
    data = dict(data)
    for item in overrides:
        parts, value = _parse_override(item)
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
        if sec in _TOP_SCALARS:
            raise ConfigError(f"{dotted}: unknown key; {sec} is a top-level value, write "
                              f"{sec}=VALUE (from override {item!r})", key=dotted)
        if data.get(sec) is None:
            data[sec] = {}
        if isinstance(data[sec], Mapping):
            data[sec] = dict(data[sec])
            data[sec][key] = value
            origins[dotted] = f"override {item!r}"
    return data


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------

def config_from_dict(d: Mapping) -> Config:
    """Build and validate a Config from a (partial) nested mapping in our format (an optional
    ``FORMAT`` key must be the marker); missing keys get defaults."""
    return _build(d)


def config_to_dict(cfg: Config) -> Dict[str, Any]:
    """Plain nested dict (SEED first, then the sections), YAML-serializable."""
    return dataclasses.asdict(cfg)


def validate_config(cfg: Config) -> Config:
    """Re-validate a Config built or mutated in Python; returns a fresh, checked copy."""
    if not isinstance(cfg, Config):
        raise ConfigError(f"config: expected a Config, got {_type_name(cfg)}")
    return _build(config_to_dict(cfg))


@dataclass
class LoadedConfig:
    """What :func:`read_config` found: the config, the file's format (``"resnest-engine"`` or
    ``"official"``), the translation of an official file (lines to log) and warnings."""

    config: Config
    format: str
    translation: List[str]
    warnings: List[str]


def _flat_keys(data: Mapping[str, Any]) -> List[str]:
    out = []
    for k, v in data.items():
        if isinstance(v, Mapping):
            out += [f"{k}.{kk}" for kk in v]
        else:
            out.append(str(k))
    return out


def _official_flat(path: str, data: Mapping[str, Any]) -> Dict[str, Any]:
    """The official file's keys as a dotted mapping, after checking every key is official."""
    from .config_official import OFFICIAL_KEYS
    flat: Dict[str, Any] = {}
    ours = []
    for name, value in data.items():
        if isinstance(value, Mapping):
            flat.update({f"{name}.{k}": v for k, v in value.items()})
        elif value is None and name in _SECTIONS:
            continue
        else:
            flat[str(name)] = value
    ours = [k for k in flat if k not in OFFICIAL_KEYS and k in _ALL_KEYS]
    if ours:
        raise ConfigError(f"{path}: mixes the two config formats: {', '.join(ours)} "
                          f"{'is a resnest-engine key' if len(ours) == 1 else 'are resnest-engine keys'}"
                          f" but the file has no '{FORMAT_KEY}: {FORMAT_MARKER}' line, so it is "
                          "read as an official ResNeSt config; add the line and use our keys "
                          "throughout, or use official keys only", path=path, key=ours[0])
    for k in flat:
        if k not in OFFICIAL_KEYS:
            guess = _suggest(k, OFFICIAL_KEYS)
            tail = f"; did you mean {guess}?" if guess else ""
            raise ConfigError(f"{path}: {k}: not a key of the official ResNeSt config (the file "
                              f"has no '{FORMAT_KEY}: {FORMAT_MARKER}' line){tail}",
                              path=path, key=k)
    return flat


def _read_official(path: str, data: Dict[str, Any], overrides: Sequence[str],
                   world_size: int) -> LoadedConfig:
    from .config_official import OFFICIAL_KEYS, translate_official
    flat = _official_flat(path, data)
    ours_overrides: List[str] = []
    official_overrides: List[str] = []
    for item in ([overrides] if isinstance(overrides, str) else overrides):
        parts, value = _parse_override(item)
        dotted = ".".join(parts)
        if dotted in OFFICIAL_KEYS:
            flat[dotted] = value
            official_overrides.append(item)
        else:
            ours_overrides.append(item)
    try:
        translated, lines = translate_official(flat, world_size)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}", path=path, key=getattr(e, "key", None)) from None
    origins = {k: path for k in _flat_keys(translated)}
    data = _apply_to_dict(translated, ours_overrides, origins)
    try:
        cfg = _build(data, origins)
    except ConfigError as e:
        if str(e).startswith(path):
            raise
        raise ConfigError(f"{path} (official config, translated): {e}", key=e.key,
                          path=path) from None
    head = (f"official config {path} (no '{FORMAT_KEY}: {FORMAT_MARKER}' line), read with the "
            f"official meaning for {world_size} process{'es' if world_size != 1 else ''}:")
    lines = [head] + [f"  {ln}" for ln in lines]
    if official_overrides:
        lines.append(f"  overrides in the official meaning: {' '.join(official_overrides)}")
    if ours_overrides:
        lines.append(f"  overrides of resnest-engine keys: {' '.join(ours_overrides)}")
    return LoadedConfig(cfg, "official", lines, config_warnings(cfg))


def read_config(path: Union[str, "os.PathLike[str]"], overrides: Sequence[str] = (),
                world_size: int = 1) -> LoadedConfig:
    """Read a YAML config of either format, then ``KEY=VALUE`` overrides.

    A file with the ``FORMAT: resnest-engine/1`` line (and its ``_BASE_`` files, which must
    have it too) is ours. A file without it is an official ResNeSt config: its per-GPU batch
    sizes and LR are multiplied by ``world_size`` and every key takes its official default and
    meaning (see :mod:`resnest_engine.config_official`); overrides of official keys are read in
    the official meaning, other keys in ours.
    """
    path = os.fspath(path)
    data, origins, fmt = _load_tree(path, ())
    if fmt == "official":
        return _read_official(path, data, overrides, world_size)
    data = _apply_to_dict(data, overrides, origins)
    cfg = _build(data, origins)
    return LoadedConfig(cfg, "resnest-engine", [], config_warnings(cfg))


def load_config(path: Optional[Union[str, "os.PathLike[str]"]] = None,
                overrides: Sequence[str] = (), world_size: int = 1) -> Config:
    """Defaults, then the YAML file ``path`` (either format, see :func:`read_config`), then
    overrides.

    Overrides are ``KEY=VALUE`` strings (``TRAINING.EPOCHS=5``, ``SEED=3``,
    ``OPTIMIZER.STEPS=[30,60]``); VALUE is read as YAML (an empty value, ``null``, ``~`` or
    ``None`` is null). Without ``path``: our defaults plus the overrides.
    """
    if path is None:
        origins: Dict[str, str] = {}
        return _build(_apply_to_dict({}, overrides, origins), origins)
    return read_config(path, overrides, world_size).config


def config_warnings(cfg: Config) -> List[str]:
    """One-line warnings about settings that run, but not as written."""
    out = []
    t, o = cfg.TRAINING, cfg.OPTIMIZER
    if o.WARMUP_EPOCHS >= t.EPOCHS:
        out.append(f"OPTIMIZER.WARMUP_EPOCHS {o.WARMUP_EPOCHS} >= TRAINING.EPOCHS {t.EPOCHS}: the "
                   "warmup is cut to the run (the LR follows the warmup line and never reaches "
                   "its peak; no decay)")
    return out


def apply_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """A new, validated Config: ``cfg`` with ``KEY=VALUE`` overrides applied (cfg unchanged)."""
    origins: Dict[str, str] = {}
    data = _apply_to_dict(config_to_dict(cfg), overrides, origins)
    return _build(data, origins)


def dump_config_text(cfg: Config) -> str:
    """The full config as YAML text in our format, FORMAT line first (what ``config.yaml`` and
    ``--print-config`` hold)."""
    text = yaml.dump(config_to_dict(cfg), Dumper=_Dumper, sort_keys=False,
                     default_flow_style=False, allow_unicode=True)
    return ("# resnest_engine config (complete); load with resnest_engine.config.load_config\n"
            f"{FORMAT_KEY}: {FORMAT_MARKER}\n{text}")


def dump_config(cfg: Config, path: Union[str, "os.PathLike[str]"]) -> None:
    """Write the full config as YAML (atomically); ``load_config(path)`` gives an equal Config."""
    from .files import atomic_write_text
    atomic_write_text(os.fspath(path), dump_config_text(cfg))


def _flat(cfg: Config) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in config_to_dict(cfg).items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


def diff_configs(a: Config, b: Config) -> List[Tuple[str, Any, Any]]:
    """``(dotted_key, value_in_a, value_in_b)`` for every key that differs, in schema order."""
    fa, fb = _flat(a), _flat(b)
    return [(k, fa[k], fb[k]) for k in _ALL_KEYS if fa[k] != fb[k]]


def effective_lr(cfg: Config) -> float:
    """The peak LR the run uses: ``OPTIMIZER.LR * TRAINING.BATCH_SIZE / 256``."""
    return cfg.OPTIMIZER.LR * cfg.TRAINING.BATCH_SIZE / 256


def train_micro_batch(cfg: Config, world_size: int = 1) -> int:
    """Samples per process per forward pass: BATCH_SIZE / (world_size * GRAD_ACCUM)."""
    div = world_size * cfg.TRAINING.GRAD_ACCUM
    if world_size < 1 or cfg.TRAINING.BATCH_SIZE % div:
        raise ConfigError(f"TRAINING.BATCH_SIZE: the global batch ({cfg.TRAINING.BATCH_SIZE}) "
                          f"must be divisible by world size ({world_size}) x "
                          f"TRAINING.GRAD_ACCUM ({cfg.TRAINING.GRAD_ACCUM})",
                          key="TRAINING.BATCH_SIZE")
    return cfg.TRAINING.BATCH_SIZE // div


def eval_batch_per_process(cfg: Config, world_size: int = 1) -> int:
    """Eval samples per process per forward pass: TEST_BATCH_SIZE / world_size."""
    if world_size < 1 or cfg.TRAINING.TEST_BATCH_SIZE % world_size:
        raise ConfigError(f"TRAINING.TEST_BATCH_SIZE: the global eval batch "
                          f"({cfg.TRAINING.TEST_BATCH_SIZE}) must be divisible by world size "
                          f"({world_size})", key="TRAINING.TEST_BATCH_SIZE")
    return cfg.TRAINING.TEST_BATCH_SIZE // world_size


# ----------------------------------------------------------------------------------------------
# Resume rules
# ----------------------------------------------------------------------------------------------

#: Keys that may change when resuming: they never change what the model sees or how it is
#: updated. (ROOT: same data elsewhere; WORKERS: every augmentation draw is keyed to (seed,
#: epoch, index) in resnest_engine.data, whatever process runs it; SKIP_CORRUPT: without it the
#: run would stop at the bad file; PRETRAINED: the checkpoint's weights replace it;
#: checkpoint/log cadence and eval batch: no effect on training.)
RESUME_SAFE_KEYS = frozenset(
    ["DATA.ROOT", "DATA.DOWNLOAD", "DATA.WORKERS", "DATA.SKIP_CORRUPT", "MODEL.PRETRAINED",
     "TRAINING.TEST_BATCH_SIZE", "TRAINING.DIST_TIMEOUT", "TRAINING.CKPT_EVERY",
     "TRAINING.CKPT_EVERY_ITERS", "TRAINING.KEEP_CHECKPOINTS", "TRAINING.KEEP_BEST",
     "TRAINING.NAN_CHECK_EVERY"]
    + [k for k in _ALL_KEYS if k.startswith("LOGGING.")])

#: Keys that change only the exact random/floating-point stream, not the distribution of the
#: run: each validation pass draws a DataLoader seed from the global CPU RNG that mixup/cutmix
#: also use (VAL_EVERY), kernel choice and compiled RNG (CHANNELS_LAST, COMPILE), switching
#: determinism on. They may change on resume only when the saved run was not
#: TRAINING.DETERMINISTIC.
NONDETERMINISTIC_SAFE_KEYS = frozenset(
    ["TRAINING.VAL_EVERY", "MODEL.CHANNELS_LAST", "MODEL.COMPILE", "TRAINING.DETERMINISTIC"])

#: Every key whose change can alter the training trajectory (all keys but RESUME_SAFE_KEYS).
TRAJECTORY_KEYS = frozenset(k for k in _ALL_KEYS if k not in RESUME_SAFE_KEYS)


def check_resume_overrides(saved: Config, new: Config, allow: Iterable[str] = ()) -> None:
    """Raise ConfigError if resuming ``saved`` with ``new`` would alter the trajectory.

    Changes to RESUME_SAFE_KEYS always pass; NONDETERMINISTIC_SAFE_KEYS pass when the saved run
    was not deterministic; ``allow`` lists further dotted keys (or ``SECTION.*``) the caller
    accepts explicitly (e.g. from a --force flag).
    """
    allowed = set()
    for pattern in allow:
        if pattern.endswith(".*") and pattern[:-2] in _SECTIONS:
            allowed.update(k for k in _ALL_KEYS if k.startswith(pattern[:-1]))
        elif pattern in _ALL_KEYS:
            allowed.add(pattern)
        else:
            guess = _suggest(pattern, _ALL_KEYS)
            tail = f"; did you mean {guess}?" if guess else ""
            raise ConfigError(f"{pattern}: unknown key in the resume allow-list{tail}",
                              key=pattern)
    lenient = not saved.TRAINING.DETERMINISTIC
    bad = [(k, a, b) for k, a, b in diff_configs(saved, new)
           if k in TRAJECTORY_KEYS and k not in allowed
           and not (lenient and k in NONDETERMINISTIC_SAFE_KEYS)]
    if bad:
        changes = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in bad)
        raise ConfigError(f"{bad[0][0]}: cannot resume with settings that change the training "
                          f"trajectory ({changes}); revert them or start a new run",
                          key=bad[0][0])
