"""Which config changes a resume may make: the key sets, the check, and the diff behind it."""
from typing import Any, Dict, Iterable, List, Tuple

from .errors import ConfigError
from .schema import ALL_KEYS, SECTIONS, Config, config_to_dict
from .unknown_keys import suggest

__all__ = ["RESUME_SAFE_KEYS", "NONDETERMINISTIC_SAFE_KEYS", "TRAJECTORY_KEYS",
           "check_resume_overrides", "diff_configs"]


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
    return [(k, fa[k], fb[k]) for k in ALL_KEYS if fa[k] != fb[k]]


#: Keys that may change when resuming: they never change what the model sees or how it is
#: updated. (ROOT: same data elsewhere; WORKERS: every augmentation draw is keyed to (seed,
#: epoch, index) in resnest_engine.data, whatever process runs it; SKIP_CORRUPT: without it the
#: run would stop at the bad file; CACHE, CACHE_MB: cached batches are bitwise the per-sample
#: path's; CACHE_DIR, SHARD_CACHE_GB: where and how many verified shards are kept locally;
#: PRETRAINED: the checkpoint's weights replace it; checkpoint/log cadence and eval
#: batch: no effect on training.)
RESUME_SAFE_KEYS = frozenset(
    ["DATA.ROOT", "DATA.DOWNLOAD", "DATA.WORKERS", "DATA.SKIP_CORRUPT", "DATA.CACHE",
     "DATA.CACHE_MB", "DATA.CACHE_DIR", "DATA.SHARD_CACHE_GB", "MODEL.PRETRAINED",
     "TRAINING.TEST_BATCH_SIZE", "TRAINING.DIST_TIMEOUT", "TRAINING.CKPT_EVERY",
     "TRAINING.CKPT_EVERY_ITERS", "TRAINING.KEEP_CHECKPOINTS", "TRAINING.KEEP_BEST",
     "TRAINING.NAN_CHECK_EVERY"]
    + [k for k in ALL_KEYS if k.startswith("LOGGING.")])

#: Keys that change only the exact random/floating-point stream, not the distribution of the
#: run: each validation pass draws a DataLoader seed from the global CPU RNG that mixup/cutmix
#: also use (VAL_EVERY), kernel choice and compiled RNG (CHANNELS_LAST, COMPILE), switching
#: determinism on. They may change on resume only when the saved run was not
#: TRAINING.DETERMINISTIC.
NONDETERMINISTIC_SAFE_KEYS = frozenset(
    ["TRAINING.VAL_EVERY", "MODEL.CHANNELS_LAST", "MODEL.COMPILE", "TRAINING.DETERMINISTIC"])

#: Every key whose change can alter the training trajectory (all keys but RESUME_SAFE_KEYS).
TRAJECTORY_KEYS = frozenset(k for k in ALL_KEYS if k not in RESUME_SAFE_KEYS)


def check_resume_overrides(saved: Config, new: Config, allow: Iterable[str] = ()) -> None:
    """Raise ConfigError if resuming ``saved`` with ``new`` would alter the trajectory.

    Changes to RESUME_SAFE_KEYS always pass; NONDETERMINISTIC_SAFE_KEYS pass when the saved run
    was not deterministic; ``allow`` lists further dotted keys (or ``SECTION.*``) the caller
    accepts explicitly (e.g. from a --force flag).
    """
    allowed = set()
    for pattern in allow:
        if pattern.endswith(".*") and pattern[:-2] in SECTIONS:
            allowed.update(k for k in ALL_KEYS if k.startswith(pattern[:-1]))
        elif pattern in ALL_KEYS:
            allowed.add(pattern)
        else:
            guess = suggest(pattern, ALL_KEYS)
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
