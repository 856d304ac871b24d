"""The official ResNeSt config (``scripts/torch/train.py``'s fvcore schema), read with its meaning.

A YAML file without the ``FORMAT: resnest-engine/1`` line is an official config. Its 22 keys
and defaults are those of the official ``resnest/torch/config.py``; this module turns them into
our schema's values, world size included (the official ``BATCH_SIZE``, ``TEST_BATCH_SIZE`` and
``LR`` are per GPU), and returns the translation as short human-readable lines that the run
logs. What cannot be reproduced exactly is named there; what would change meaning silently
(``FINAL_DROP: true``, the ``step`` schedule the official script cannot run, ``START_EPOCHS``
without a checkpoint) is refused. Written by hand: no library knows this schema.

:func:`read_config` and :func:`load_config` read a file of either format: ours as
:func:`resnest_engine.config.read_config` does (but an official-only key in it, such as
``TRAINING.LAST_GAMMA``, is named as one), an official one translated for the run's world size.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..config.errors import ConfigError
from ..config.loading import LoadedConfig, read_config as read_our_config
from ..config.loading import load_config as load_our_config
from ..config.schema import ALL_KEYS, FORMAT_KEY, FORMAT_MARKER, SECTIONS, Config
from ..config.unknown_keys import RENAMED_KEYS, suggest
from ..config.validation import build_config, config_warnings, flat_keys
from ..config.yaml_io import OURS, apply_to_dict, load_tree, parse_override

__all__ = ["OFFICIAL_DEFAULTS", "OFFICIAL_KEYS", "OFFICIAL_ONLY_KEYS", "OFFICIAL_RESNET_NAMES",
           "load_config", "official_flat", "read_config", "translate_official"]

#: Every key of the official config and its default (resnest/torch/config.py).
OFFICIAL_DEFAULTS: Dict[str, Any] = {
    "SEED": 1,
    "DATA.DATASET": "ImageNet",
    "DATA.ROOT": "~/.encoding/data/ILSVRC2012",
    "DATA.BASE_SIZE": None,
    "DATA.CROP_SIZE": 224,
    "DATA.LABEL_SMOOTHING": 0.0,
    "DATA.MIXUP": 0.0,
    "DATA.RAND_AUG": False,
    "MODEL.NAME": "resnet50",
    "MODEL.FINAL_DROP": False,
    "TRAINING.BATCH_SIZE": 64,
    "TRAINING.TEST_BATCH_SIZE": 256,
    "TRAINING.LAST_GAMMA": False,
    "TRAINING.EPOCHS": 120,
    "TRAINING.START_EPOCHS": 0,
    "TRAINING.WORKERS": 4,
    "OPTIMIZER.LR": 0.025,
    "OPTIMIZER.LR_SCHEDULER": "cos",
    "OPTIMIZER.MOMENTUM": 0.9,
    "OPTIMIZER.WEIGHT_DECAY": 1e-4,
    "OPTIMIZER.DISABLE_BN_WD": False,
    "OPTIMIZER.WARMUP_EPOCHS": 0,
}
OFFICIAL_KEYS: Tuple[str, ...] = tuple(OFFICIAL_DEFAULTS)
#: The official keys our schema does not have (``DATA.BASE_SIZE``, ``TRAINING.LAST_GAMMA``,
#: ``TRAINING.START_EPOCHS``, ``TRAINING.WORKERS``): in a file with the FORMAT line they are a mix
#: of the two formats. The hint for each (our key that does the job) is the schema's own.
OFFICIAL_ONLY_KEYS: Tuple[str, ...] = tuple(k for k in OFFICIAL_KEYS if k not in ALL_KEYS)
#: An official config's ``MODEL.NAME`` resnet50/101/152 is the official repository's own ResNet
#: (every 3x3 conv a radix-1 split-attention conv, the official state_dict keys), registered
#: here as ``resnet{depth}_splat``; our ``resnet50`` is torchvision's.
OFFICIAL_RESNET_NAMES: Dict[str, str] = {"resnet50": "resnet50_splat",
                                         "resnet101": "resnet101_splat",
                                         "resnet152": "resnet152_splat"}

#: The official script validates after 0-based epochs 0, 10, 20, ... (1-based 1, 11, 21, ...).
OFFICIAL_VAL_EVERY = 10
OFFICIAL_LOG_EVERY = 100
_SCHEDULES = {"cos": "cos", "cosine": "cos", "poly": "poly"}


def _invalid(key: str, message: str) -> ConfigError:
    """The error of an official key's value: ``KEY: message``, naming the key."""
    return ConfigError(f"{key}: {message}", key=key)


def _int(key: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise _invalid(key, f"expected an integer >= {lo}, got {value!r}")
    return value


def _num(key: str, value: Any, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (positive and value <= 0):
        raise _invalid(key, f"expected a number{' > 0' if positive else ''}, got {value!r}")
    return float(value)


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _invalid(key, f"expected true or false, got {value!r}")
    return value


def official_flat(path: str, data: Mapping[str, Any]) -> Dict[str, Any]:
    """An official file's keys as a dotted mapping, after checking every key is official.

    A key of ours in it is a mix of the two formats, anything else a key the official config
    does not have (with the closest official key); both are ConfigErrors naming ``path``.
    """
    flat: Dict[str, Any] = {}
    for name, value in data.items():
        if isinstance(value, Mapping):
            flat.update({f"{name}.{k}": v for k, v in value.items()})
        elif value is None and name in SECTIONS:
            continue
        else:
            flat[str(name)] = value
    ours = [k for k in flat if k not in OFFICIAL_KEYS and k in ALL_KEYS]
    if ours:
        what = "is a resnest-engine key" if len(ours) == 1 else "are resnest-engine keys"
        raise ConfigError(f"{path}: mixes the two config formats: {', '.join(ours)} {what}"
                          f" but the file has no '{FORMAT_KEY}: {FORMAT_MARKER}' line, so it is "
                          "read as an official ResNeSt config; add the line and use our keys "
                          "throughout, or use official keys only", path=path, key=ours[0])
    for k in flat:
        if k not in OFFICIAL_KEYS:
            guess = suggest(k, OFFICIAL_KEYS)
            tail = f"; did you mean {guess}?" if guess else ""
            raise ConfigError(f"{path}: {k}: not a key of the official ResNeSt config (the file "
                              f"has no '{FORMAT_KEY}: {FORMAT_MARKER}' line){tail}",
                              path=path, key=k)
    return flat


def translate_official(flat: Mapping[str, Any], world_size: int
                       ) -> Tuple[Dict[str, Dict[str, Any]], List[str]]:
    """Official keys (dotted, as set in the file; missing keys take the official defaults) ->
    ``(our config as a nested dict, translation lines)`` for a run of ``world_size`` processes.

    Raises ``ValueError`` (message ``"KEY: ..."``, attribute ``key``) for values that have no
    faithful translation.
    """
    o = dict(OFFICIAL_DEFAULTS)
    o.update(flat)
    w = int(world_size)
    lines: List[str] = []
    approx: List[str] = []

    batch = _int("TRAINING.BATCH_SIZE", o["TRAINING.BATCH_SIZE"], 1)
    test_batch = _int("TRAINING.TEST_BATCH_SIZE", o["TRAINING.TEST_BATCH_SIZE"], 1)
    lr = _num("OPTIMIZER.LR", o["OPTIMIZER.LR"], positive=True)
    epochs = _int("TRAINING.EPOCHS", o["TRAINING.EPOCHS"], 1)
    warmup = _int("OPTIMIZER.WARMUP_EPOCHS", o["OPTIMIZER.WARMUP_EPOCHS"], 0)
    momentum = _num("OPTIMIZER.MOMENTUM", o["OPTIMIZER.MOMENTUM"])
    wd = _num("OPTIMIZER.WEIGHT_DECAY", o["OPTIMIZER.WEIGHT_DECAY"])
    no_bn_wd = _bool("OPTIMIZER.DISABLE_BN_WD", o["OPTIMIZER.DISABLE_BN_WD"])
    last_gamma = _bool("TRAINING.LAST_GAMMA", o["TRAINING.LAST_GAMMA"])

    start = o["TRAINING.START_EPOCHS"]
    if start != 0:
        raise _invalid("TRAINING.START_EPOCHS", f"{start!r}: starting part-way through the schedule "
                     "with fresh weights is not supported; resume from the official "
                     "checkpoint_N.pth with --resume (it continues at epoch N+1)")

    schedule = o["OPTIMIZER.LR_SCHEDULER"]
    if schedule == "step":
        raise _invalid("OPTIMIZER.LR_SCHEDULER", "'step' cannot run in the official script (its "
                     "scheduler needs lr_step, which train.py never passes); write a "
                     "resnest-engine config with OPTIMIZER.LR_SCHEDULER: step and "
                     "OPTIMIZER.STEPS: [...] instead")
    if schedule not in _SCHEDULES:
        raise _invalid("OPTIMIZER.LR_SCHEDULER", f"expected one of 'cos', 'cosine', 'poly' (the "
                     f"official schedules), got {schedule!r}")

    final_drop = o["MODEL.FINAL_DROP"]
    if final_drop is True:
        raise _invalid("MODEL.FINAL_DROP", "true would be Dropout(p=1.0) in the official code (it "
                     "is used as a probability); give the probability, e.g. 0.2 (false = off)")
    final_drop = 0.0 if final_drop is False else _num("MODEL.FINAL_DROP", final_drop)

    rand_aug = o["DATA.RAND_AUG"]
    if not isinstance(rand_aug, bool):
        raise _invalid("DATA.RAND_AUG", f"expected true or false (the official switch), got "
                     f"{rand_aug!r}")

    dataset = o["DATA.DATASET"]
    if not isinstance(dataset, str) or not dataset:
        raise _invalid("DATA.DATASET", f"expected a dataset name, got {dataset!r}")
    root = o["DATA.ROOT"]
    if not isinstance(root, str) or not root:
        raise _invalid("DATA.ROOT", f"expected a directory, got {root!r}")

    name = o["MODEL.NAME"]
    if not isinstance(name, str) or not name:
        raise _invalid("MODEL.NAME", f"expected a model name, got {name!r}")
    model = OFFICIAL_RESNET_NAMES.get(name, name)

    ours: Dict[str, Dict[str, Any]] = {
        "SEED": o["SEED"],
        "MODEL": {"NAME": model, "FINAL_DROP": final_drop, "ZERO_INIT_LAST": last_gamma,
                  "DROPBLOCK_PROB": 0.0},
        "DATA": {"DATASET": dataset.lower(), "ROOT": os.path.expanduser(root),
                 "CROP_SIZE": o["DATA.CROP_SIZE"], "CROP_STYLE": "ecrop",
                 "LABEL_SMOOTHING": o["DATA.LABEL_SMOOTHING"], "MIXUP": o["DATA.MIXUP"],
                 "CUTMIX": 0.0, "RAND_AUG": "2,12" if rand_aug else None, "HFLIP": True,
                 "COLOR_JITTER": 0.4, "PCA_LIGHTING": 0.1, "WORKERS": o["TRAINING.WORKERS"]},
        "TRAINING": {"EPOCHS": epochs, "BATCH_SIZE": batch * w,
                     "TEST_BATCH_SIZE": test_batch * w, "GRAD_ACCUM": 1, "AMP": "off",
                     "EMA_DECAY": 0.0, "VAL_EVERY": OFFICIAL_VAL_EVERY, "VAL_START": 1},
        "OPTIMIZER": {"NAME": "sgd", "LR": lr * 256 / batch, "LR_SCHEDULER": _SCHEDULES[schedule],
                      "WARMUP_EPOCHS": warmup, "WARMUP_START_FACTOR": 0.0, "MIN_LR": 0.0,
                      "MOMENTUM": momentum, "WEIGHT_DECAY": wd, "DISABLE_BN_WD": no_bn_wd,
                      "POLY_POWER": 0.9},
        "LOGGING": {"LOG_EVERY": OFFICIAL_LOG_EVERY},
    }

    procs = f"{w} process{'es' if w != 1 else ''}"
    lines.append(f"global batch {batch * w} = TRAINING.BATCH_SIZE {batch} x {procs}; eval batch "
                 f"{test_batch * w} = {test_batch} x {w}")
    lines.append(f"LR {lr * w:g} = OPTIMIZER.LR {lr:g} x {procs} (OPTIMIZER.LR "
                 f"{ours['OPTIMIZER']['LR']:g} per 256 images here)")
    decay = ("no decay on norm layers and biases" if no_bn_wd else "decay on every parameter, "
             "BN included")
    lines.append(f"optimizer: SGD momentum {momentum:g} (no Nesterov), weight decay {wd:g}, {decay}")
    lines.append(f"schedule: {_SCHEDULES[schedule]} over {epochs} epochs, warmup {warmup} "
                 f"epoch{'s' if warmup != 1 else ''}; validation after epochs 1, 11, 21, ... "
                 "and the last")
    if model != name:
        lines.append(f"model: {name} -> {model} (the official radix-1 split-attention "
                     f"ResNet, not torchvision's {name})")
    else:
        lines.append(f"model: {model}")
    lines.append(f"zero-init of the last BN gamma: {'on' if last_gamma else 'off'} "
                 f"(TRAINING.LAST_GAMMA {str(last_gamma).lower()}); final dropout {final_drop:g}")
    aug = ", RandAugment(2, 12)" if rand_aug else ""
    mix = f", mixup alpha {o['DATA.MIXUP']:g}" if o["DATA.MIXUP"] else ""
    lines.append(f"data: {dataset.lower()} at {ours['DATA']['ROOT']}; ERandomCrop/ECenterCrop "
                 f"{o['DATA.CROP_SIZE']} (the official torch crops), flip, color jitter 0.4, "
                 f"PCA lighting 0.1{aug}{mix}, label smoothing "
                 f"{o['DATA.LABEL_SMOOTHING']:g}; {o['TRAINING.WORKERS']} workers per process")

    if rand_aug:
        approx.append("RAND_AUG: torchvision's RandAugment op list at magnitude 12 of 30, after "
                      "the crop (the official list has its own ops and runs before the crop)")
    if no_bn_wd:
        approx.append("DISABLE_BN_WD: skips decay on every norm layer by module type (the "
                      "official matched 'bn'/'bias' in names and still decayed downsample BNs)")
    if last_gamma:
        approx.append("LAST_GAMMA: the zero-init takes effect here (the official init loop reset "
                      "those gammas to 1, a known bug)")
    if warmup > 0 and schedule in ("cos", "cosine", "poly"):
        approx.append(f"warmup: the {_SCHEDULES[schedule]} decay starts after the warmup (the "
                      "official curve spans the whole run, warmup included)")
    if o["DATA.BASE_SIZE"] is not None:
        approx.append(f"DATA.BASE_SIZE {o['DATA.BASE_SIZE']!r} ignored, as the official "
                      "transforms ignore it")
    approx.append("checkpoints: resume points every epoch and the best by top-1, not "
                  "checkpoint_N.pth; the random streams differ from the official script's")
    lines += [f"approximated: {a}" for a in approx]
    return ours, lines


# ---------------------------------------------------------------------------------------------
# Reading a config of either format
# ---------------------------------------------------------------------------------------------

def _read_official(path: str, data: Dict[str, Any], overrides: Sequence[str],
                   world_size: int) -> LoadedConfig:
    flat = official_flat(path, data)
    ours_overrides: List[str] = []
    official_overrides: List[str] = []
    for item in ([overrides] if isinstance(overrides, str) else overrides):
        parts, value = parse_override(item)
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
    origins = {k: path for k in flat_keys(translated)}
    data = apply_to_dict(translated, ours_overrides, origins)
    try:
        cfg = build_config(data, origins)
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


def _refuse_official_keys(data: Mapping[str, Any], origins: Mapping[str, str]) -> None:
    """An official-only key in a config of ours (file or override) is a ConfigError naming our
    key that does the job: the file was probably meant to be read as an official config."""
    found = [k for k in flat_keys(data) if k in OFFICIAL_ONLY_KEYS]
    if not found:
        return
    what = ("official ResNeSt key in a resnest-engine config" if len(found) == 1 else
            f"official ResNeSt keys in a resnest-engine config ({', '.join(found)})")
    src = origins.get(found[0])
    raise ConfigError(f"{found[0]}: {what}; {RENAMED_KEYS[found[0]]} (a file without the "
                      f"{FORMAT_KEY} line is read as an official config)"
                      + (f" (from {src})" if src else ""), key=found[0])


def read_config(path: Union[str, "os.PathLike[str]"], overrides: Sequence[str] = (),
                world_size: int = 1) -> LoadedConfig:
    """Read a YAML config of either format, then ``KEY=VALUE`` overrides.

    A file with the ``FORMAT: resnest-engine/1`` line (and its ``_BASE_`` files, which must
    have it too) is ours, read by :func:`resnest_engine.config.read_config`. A file without it
    is an official ResNeSt config: its per-GPU batch sizes and LR are multiplied by
    ``world_size`` and every key takes its official default and meaning; overrides of official
    keys are read in the official meaning, other keys in ours. The result's ``format`` is
    ``"resnest-engine"`` or ``"official"``, its ``translation`` the lines to log.
    """
    path = os.fspath(path)
    data, origins, fmt = load_tree(path)
    if fmt != OURS:
        return _read_official(path, data, overrides, world_size)
    _refuse_official_keys(apply_to_dict(data, overrides, origins), origins)
    return read_our_config(path, overrides)


def load_config(path: Optional[Union[str, "os.PathLike[str]"]] = None,
                overrides: Sequence[str] = (), world_size: int = 1) -> Config:
    """:func:`resnest_engine.config.load_config` for a file of either format (see
    :func:`read_config`)."""
    if path is None:
        return load_our_config(None, overrides)
    return read_config(path, overrides, world_size).config
