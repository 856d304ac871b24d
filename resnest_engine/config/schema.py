"""The config schema: ``SEED`` plus one dataclass per section, each key documented and checked.

The layout follows the official ResNeSt config (``SEED`` plus the sections ``MODEL``, ``DATA``,
``TRAINING``, ``OPTIMIZER``; we add ``LOGGING``). A config is a tree of dataclasses whose
attribute names are the UPPER_CASE keys, so ``cfg.TRAINING.EPOCHS`` reads like the YAML. Each
field's metadata (see :func:`.fields.spec`) holds its documentation and its rules; the keys
table of ``docs/configuration.md`` is generated from it (:mod:`.reference`).

Semantics that differ from the official config:

* ``TRAINING.BATCH_SIZE`` is the GLOBAL batch per optimizer step (all processes and all
  ``GRAD_ACCUM`` micro-steps together); ``TRAINING.TEST_BATCH_SIZE`` is global as well.
* ``OPTIMIZER.LR`` is the learning rate for a batch of 256; the run uses
  ``LR * BATCH_SIZE / 256`` (:func:`.derived.effective_lr`). ``OPTIMIZER.MIN_LR`` is absolute.
* ``DATA.WORKERS`` is per process.
"""
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .fields import (BETAS, EMA, NONEMPTY, PROB, PROB_OPEN, SCHEDULE_ALIASES, SEED_RANGE, above,
                     at_least, normalize_auto_bool, normalize_compile,
                     normalize_pretrained, normalize_rand_aug,
                     spec, within)

__all__ = ["FORMAT_KEY", "FORMAT_MARKER", "Config", "ModelConfig", "DataConfig",
           "TrainingConfig", "OptimizerConfig", "LoggingConfig", "config_to_dict"]

#: Top-level key and value that mark a YAML file as a resnest-engine config. A file without it is
#: read as an official ResNeSt config (see docs/configuration.md, "Two formats").
FORMAT_KEY = "FORMAT"
FORMAT_MARKER = "resnest-engine/1"


@dataclass
class ModelConfig:
    NAME: str = spec("resnest50", "Model variant, one of `resnest_engine.list_models()` "
                     "(e.g. resnest50, resnest101, resnet50d).", NONEMPTY)
    NUM_CLASSES: Optional[int] = spec(None, "Classifier outputs; null = the dataset's number of "
                                      "classes.", at_least(1))
    FINAL_DROP: float = spec(0.0, "Dropout probability before the classifier (0 = off).",
                             PROB_OPEN, hint="it is a probability, not a switch (0 = off), "
                             "e.g. 0.2")
    DROPBLOCK_PROB: float = spec(0.0, "Target DropBlock drop probability in stages 3-4, "
                                 "ramped linearly from 0 over training (0 = off).", PROB_OPEN)
    ZERO_INIT_LAST: bool = spec(True, "Zero-init the last BN gamma of each residual block "
                                "(official TRAINING.LAST_GAMMA).")
    STEM: Optional[str] = spec(None, "Stem override: null = the variant's; deep (3x3 convs), "
                               "basic (7x7), cifar (deep without stride/max-pool, for 32x32 "
                               "inputs).", choices=("deep", "basic", "cifar"))
    IN_CHANS: int = spec(3, "Input image channels.", at_least(1))
    PRETRAINED: Optional[str] = spec(None, "true: the variant's published weights (downloaded "
                                     "once into the torch hub cache, hash-checked; "
                                     "RESNEST_WEIGHTS_URL for a mirror); a path: a local weights "
                                     "file; null/false: random init.",
                                     normalize=normalize_pretrained, allowed="true / path")
    CHANNELS_LAST: bool = spec(False, "Use the channels_last memory format: true, false, or auto "
                               "(on for CUDA and CPU; the log states the choice).",
                               normalize=normalize_auto_bool, allowed="true / false / auto")
    COMPILE: bool = spec(False, "Wrap the model with torch.compile: false, true (its default "
                         "mode), or a mode: default, max-autotune, reduce-overhead (CUDA "
                         "graphs). benchmarks/gpu_suite.py reports the fastest on a GPU.",
                         normalize=normalize_compile,
                         allowed="true / false / default / max-autotune / reduce-overhead")
    SYNC_BN: bool = spec(False, "Convert BatchNorm to SyncBatchNorm in distributed runs.")
    GRAD_CHECKPOINTING: bool = spec(False, "Activation checkpointing (less memory, more "
                                    "compute).")


@dataclass
class DataConfig:
    DATASET: str = spec("imagenet", "Dataset, one of `resnest_engine.data.list_datasets()` "
                        "(cifar10, cifar100, digits, imagefolder, imagenet, parquet, shards, "
                        "synthetic).",
                        NONEMPTY)
    ROOT: Optional[str] = spec(None, "Dataset directory; null = the data module's default.",
                               NONEMPTY)
    DOWNLOAD: bool = spec(False, "Download the dataset if missing (where supported).")
    CROP_SIZE: Optional[int] = spec(None, "Train/eval crop side in pixels; null = the variant's.",
                                    at_least(1))
    EVAL_CROP_FRACTION: Optional[float] = spec(
        None, "Eval: resize to CROP_SIZE / fraction, center-crop CROP_SIZE; null = the "
        "variant's (0.875 = official BASE_SIZE 256 with CROP_SIZE 224).",
        within(0, 1, False, True))
    INTERPOLATION: Optional[str] = spec(None, "Resize interpolation; null = the variant's.",
                                        choices=("bilinear", "bicubic", "nearest"))
    CROP_STYLE: str = spec("auto", "auto: RandomResizedCrop + resize/center-crop below 320 px, "
                           "ERandomCrop/ECenterCrop (bicubic) from 320 (the published recipe); "
                           "ecrop: ERandomCrop/ECenterCrop at every size (the official torch "
                           "train.py).", choices=("auto", "ecrop"))
    IMAGE_SIZE: int = spec(32, "Image side for the digits/synthetic datasets.", at_least(1))
    HFLIP: bool = spec(True, "Random horizontal flip when training.")
    COLOR_JITTER: float = spec(0.4, "Brightness/contrast/saturation jitter strength (0 = off).",
                               at_least(0))
    PCA_LIGHTING: float = spec(0.1, "AlexNet-style PCA lighting noise std (0 = off).",
                               at_least(0))
    RAND_AUG: Optional[str] = spec(None, 'RandAugment as "N,M": N ops at magnitude M in [0, 30] '
                                   '(null = off). The official RAND_AUG: true is "2,12".',
                                   normalize=normalize_rand_aug,
                                   allowed='"N,M": N >= 1, M in [0, 30]')
    AUTO_AUG: bool = spec(False, "AutoAugment (ImageNet policy).")
    TRIVIAL_AUG: bool = spec(False, "TrivialAugmentWide.")
    RANDOM_ERASE: float = spec(0.0, "Random-erasing probability (0 = off).", PROB)
    SMALL_IMAGE: bool = spec(False, "Pad-and-crop + flip preset for 32x32 data instead of the "
                             "ImageNet-style transforms.")
    LABEL_SMOOTHING: float = spec(0.0, "Label smoothing of the training loss.", PROB_OPEN)
    MIXUP: float = spec(0.0, "Mixup alpha of Beta(alpha, alpha) (0 = off; official 0.2).",
                        at_least(0), hint="it is the Beta(alpha, alpha) alpha, not a switch "
                        "(0 = off), e.g. 0.2")
    CUTMIX: float = spec(0.0, "CutMix alpha of Beta(alpha, alpha) (0 = off).", at_least(0),
                         hint="it is the Beta(alpha, alpha) alpha, not a switch (0 = off), "
                         "e.g. 1.0")
    MIXUP_PROB: float = spec(1.0, "Probability that a batch gets mixup/cutmix.", PROB)
    MIXUP_SWITCH_PROB: float = spec(0.5, "When MIXUP and CUTMIX are both on: probability of "
                                     "cutmix for a batch.", PROB)
    MIXUP_OFF_EPOCH: int = spec(0, "Mixup/cutmix only in epochs 1..N, off from epoch N+1 on "
                                "(0 = never switch off); must be < TRAINING.EPOCHS.",
                                at_least(0))
    AUG_REPEATS: int = spec(0, "Repeated augmentation: each image appears this many times per "
                            "epoch with different augmentations (>= 2 turns it on).",
                            at_least(0))
    VAL_FRACTION: Optional[float] = spec(None, "Image folders: split one ROOT/<class>/ folder "
                                         "into train/val, this fraction of each class to val "
                                         "(stratified, fixed by SPLIT_SEED); null = ROOT/train + "
                                         "ROOT/val.", within(0, 1, False, False))
    SPLIT_SEED: Optional[int] = spec(None, "Seed of the train/val split of the digits dataset "
                                     "(null: 0, its fixed split) and of VAL_FRACTION (null: "
                                     "SEED). Other values give other stratified splits.",
                                     SEED_RANGE)
    PARQUET_IMAGE_COLUMN: str = spec("image", "DATASET parquet: the column of the image "
                                     "files' bytes, binary or a struct with a binary `bytes` "
                                     "field (the Hub's Image feature).", NONEMPTY)
    PARQUET_LABEL_COLUMN: str = spec("label", "DATASET parquet: the integer column of the class "
                                     "indices (the Hub's ClassLabel feature).", NONEMPTY)
    CACHE_DIR: Optional[str] = spec(None, "DATASET shards or parquet with a URL ROOT (s3://, "
                                    "gs://, http(s)://): the local folder of fetched shards or "
                                    "Parquet files; null = "
                                    "~/.cache/resnest-engine/shards/<hash of ROOT>.", NONEMPTY)
    SHARD_CACHE_GB: float = spec(100.0, "DATASET shards or parquet with a URL ROOT: the most the "
                                 "fetched shards (or Parquet files) of a split may take in "
                                 "CACHE_DIR, in GB (10^9 bytes); least recently used ones not "
                                 "in use are evicted first (0 = no limit).", at_least(0))
    SHUFFLE: str = spec("auto", "Training order, a pure function of (SEED, epoch). global: one "
                        "permutation of all samples, split over the processes (the image "
                        "folder's order: a run on shards written from a folder is bitwise the "
                        "run on the folder); window (DATASET shards or parquet): the shards "
                        "(Parquet row groups) permuted, the samples permuted within each "
                        "window of SHUFFLE_WINDOW of them, each process reading one contiguous "
                        "part, so it streams a few shards at a time. auto: window for a URL "
                        "ROOT, else global.", choices=("auto", "global", "window"))
    SHUFFLE_WINDOW: int = spec(4, "SHUFFLE window: how many shards (Parquet row groups) have "
                               "their samples shuffled together.", at_least(1))
    WORKERS: int = spec(4, "DataLoader workers PER PROCESS.", at_least(0))
    SKIP_CORRUPT: bool = spec(False, "Skip unreadable images instead of failing.")
    CACHE: bool = spec("auto", "Small-image preset: decode each split once into a uint8 store "
                      "in memory (shared by the DataLoader workers, never on disk) and run the "
                      "pad-crop/flip as batched tensor operations; batches are bitwise those of "
                      "the per-sample path. auto: when the preset has no per-sample augmentation "
                      "and the stores fit CACHE_MB (else the per-sample path, and the log says "
                      "why); true: refuse to run without it; false: off.",
                      normalize=normalize_auto_bool, allowed="true / false / auto")
    CACHE_MB: int = spec(1024, "Memory budget of DATA.CACHE per process, in MB (10^6 bytes): "
                         "the train and val stores together.", at_least(1))
    PREFETCH: bool = spec("auto", "Device prefetch of the training batches: on CUDA the next "
                          "batch is copied from pinned memory on a side stream (and the uint8 "
                          "batches normalised there) while the step runs. auto: on for CUDA; "
                          "true on the CPU: a pass-through (the same batches); false: off.",
                          normalize=normalize_auto_bool, allowed="true / false / auto")
    FAST_JPEG: bool = spec(False, "Faster (reduced-size) JPEG decoding; decoded pixels differ "
                           "slightly.")
    DECODE: str = spec("cpu", "Where JPEGs are decoded (image folders, shards, parquet). cpu: "
                       "in the DataLoader workers; gpu: the workers read the bytes and draw the "
                       "crops, the device decodes each batch (torchvision's nvjpeg on CUDA), "
                       "crops and resizes; auto: gpu on CUDA with nvjpeg, else cpu (the log "
                       "says which). docs/data.md: limits and pixel differences.",
                       choices=("cpu", "gpu", "auto"))
    SYNTHETIC_SIZE: int = spec(1024, "Number of images of the synthetic dataset.", at_least(1))
    SYNTHETIC_CLASSES: int = spec(10, "Number of classes of the synthetic dataset.", at_least(1))


@dataclass
class TrainingConfig:
    EPOCHS: int = spec(270, "Training epochs.", at_least(1))
    BATCH_SIZE: int = spec(256, "GLOBAL batch per optimizer step (all processes x GRAD_ACCUM); "
                           "must divide by world size x GRAD_ACCUM.", at_least(1))
    TEST_BATCH_SIZE: int = spec(256, "GLOBAL eval batch, split across processes; must divide by "
                                "world size.", at_least(1))
    GRAD_ACCUM: int = spec(1, "Micro-steps per optimizer step; must divide BATCH_SIZE.",
                           at_least(1))
    CLIP_GRAD: float = spec(0.0, "Max global gradient norm (0 = off).", at_least(0))
    AMP: str = spec("off", "Mixed precision: off, fp16 (with loss scaling), bf16, or auto (bf16 "
                    "on CUDA devices that support it, else fp16; off on CPU).",
                    choices=("off", "fp16", "bf16", "auto"), bool_map={False: "off"})
    EMA_DECAY: float = spec(0.0, "Decay of an exponential moving average of the weights "
                            "(0 = off).", EMA)
    VAL_EVERY: int = spec(1, "Validate every this-many epochs (and after the last).",
                          at_least(1))
    VAL_START: Optional[int] = spec(None, "First validated epoch, then every VAL_EVERY; null = "
                                    "VAL_EVERY (the official script: 1, i.e. epochs 1, 11, "
                                    "21...).", at_least(1))
    CKPT_EVERY: int = spec(1, "Checkpoint every this-many epochs (0 = off).", at_least(0))
    CKPT_EVERY_ITERS: int = spec(0, "Also checkpoint every this-many iterations (0 = off).",
                                 at_least(0))
    KEEP_CHECKPOINTS: int = spec(2, "Most recent checkpoints kept.", at_least(1))
    KEEP_BEST: int = spec(1, "Best checkpoints (by validation top-1) kept (0 = none).",
                          at_least(0))
    ASYNC_CHECKPOINT: bool = spec(True, "Write checkpoints on a background thread: the step "
                                  "copies the state to host memory and goes on (the files are "
                                  "the same); false: write them on the training thread.")
    DETERMINISTIC: bool = spec(False, "Deterministic algorithms (reproducible, slower).")
    DIST_TIMEOUT: int = spec(1800, "Timeout of collective operations, in seconds.", at_least(1))
    NAN_CHECK_EVERY: int = spec(50, "Check that the loss is finite every this-many iterations "
                                "(one host sync each; also at epoch ends and before every "
                                "checkpoint, so none holds a NaN).", at_least(1))


@dataclass
class OptimizerConfig:
    NAME: str = spec("nesterov", "sgd (momentum), nesterov (SGD with Nesterov momentum) or "
                     "adamw.", choices=("sgd", "nesterov", "adamw"))
    LR: float = spec(0.1, "Learning rate for a batch of 256; the run uses LR x BATCH_SIZE / 256.",
                     above(0))
    LR_SCHEDULER: str = spec("cos", "cos, step, linear or poly (decay after warmup, per "
                             "iteration); also cosine, multistep (timm names of cos, step).",
                             choices=("cos", "step", "linear", "poly"),
                             aliases=SCHEDULE_ALIASES)
    WARMUP_EPOCHS: int = spec(5, "Linear warmup epochs; at or above TRAINING.EPOCHS it is cut "
                              "to the run (with a warning).", at_least(0))
    WARMUP_START_FACTOR: float = spec(0.0, "Warmup starts at this fraction of the LR.", PROB)
    MIN_LR: float = spec(0.0, "LR floor (absolute, not scaled); must be below the effective LR.",
                         at_least(0))
    STEPS: List[int] = spec([], "Milestone epochs of the step scheduler (increasing, each in "
                            "[1, EPOCHS)); required for step, ignored otherwise.")
    GAMMA: float = spec(0.1, "LR factor at each step milestone.", within(0, 1, False, True))
    POLY_POWER: float = spec(0.9, "Exponent of the poly scheduler.", above(0))
    MOMENTUM: float = spec(0.9, "Momentum of sgd/nesterov.", PROB_OPEN)
    WEIGHT_DECAY: float = spec(1e-4, "Weight decay (decoupled for adamw).", at_least(0))
    DISABLE_BN_WD: bool = spec(True, "No weight decay on BatchNorm parameters and biases.")
    BETAS: List[float] = spec([0.9, 0.999], "AdamW betas.", BETAS)
    FUSED: bool = spec("auto", "Update implementation. auto: foreach on the CPU (1.4-1.7x faster "
                      "optimizer steps, bitwise the same updates as torch's default), elsewhere "
                      "torch's default; true: torch's fused kernels (another 3x on the CPU; "
                      "AdamW's updates then differ in the last bits); false: torch's default "
                      "(for-loop on the CPU, foreach on CUDA).", normalize=normalize_auto_bool,
                      allowed="true / false / auto")
    BODY_LR_SCALE: float = spec(1.0, "LR of everything but the classifier, as a fraction of the "
                                "classifier's (fine-tuning a pretrained body: e.g. 0.1).",
                                above(0))
    FREEZE_BODY_EPOCHS: int = spec(0, "Fine-tuning: only the classifier trains in epochs 1..N, "
                                   "the body from epoch N+1 (0 = never frozen); "
                                   "< TRAINING.EPOCHS.", at_least(0))


@dataclass
class LoggingConfig:
    LOG_EVERY: int = spec(50, "Log training metrics every this-many iterations.", at_least(1))
    TENSORBOARD: bool = spec(True, "Write TensorBoard event files.")
    PROGRESS_BAR: str = spec("auto", "Progress bar: auto (only on a terminal), on or off.",
                             choices=("auto", "on", "off"), bool_map={True: "on", False: "off"})
    MLFLOW: bool = spec(False, "Track the run in MLflow (rank 0; the mlflow extra): at "
                        "MLFLOW_TRACKING_URI, else in a local store RUN/mlruns; a resume "
                        "continues the same MLflow run.")
    MLFLOW_LOG_MODEL: bool = spec(False, "With MLFLOW: also log the final model_weights.pt "
                                  "(and its .checksum) as artifacts.")


@dataclass
class Config:
    SEED: int = spec(0, "Random seed of the run.", SEED_RANGE)
    MODEL: ModelConfig = field(default_factory=ModelConfig)
    DATA: DataConfig = field(default_factory=DataConfig)
    TRAINING: TrainingConfig = field(default_factory=TrainingConfig)
    OPTIMIZER: OptimizerConfig = field(default_factory=OptimizerConfig)
    LOGGING: LoggingConfig = field(default_factory=LoggingConfig)


def config_to_dict(cfg: Config) -> Dict[str, Any]:
    """Plain nested dict (SEED first, then the sections), YAML-serializable."""
    return dataclasses.asdict(cfg)


# ---------------------------------------------------------------------------------------------
# The keys, indexed (schema order)
# ---------------------------------------------------------------------------------------------

#: Section name -> its dataclass.
SECTIONS: Dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Config)
                             if f.default_factory is not dataclasses.MISSING}
#: Top-level keys that are values, not sections (SEED).
TOP_SCALARS: Dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(Config)
                                             if f.name not in SECTIONS}
#: Section name -> key -> field.
FIELDS: Dict[str, Dict[str, dataclasses.Field]] = {
    sec: {f.name: f for f in dataclasses.fields(cls)} for sec, cls in SECTIONS.items()}
#: Every dotted key: SEED, then MODEL.NAME, MODEL.NUM_CLASSES, ...
ALL_KEYS: Tuple[str, ...] = tuple(
    list(TOP_SCALARS) + [f"{sec}.{k}" for sec, fs in FIELDS.items() for k in fs])


def key_field(dotted: str) -> dataclasses.Field:
    """The field of a dotted key (``SEED``, ``TRAINING.EPOCHS``); KeyError if there is none."""
    if "." not in dotted:
        return TOP_SCALARS[dotted]
    sec, key = dotted.split(".", 1)
    return FIELDS[sec][key]
