"""Data: dataset registry, ResNeSt transform presets, distributed loaders, reproducible draws.

Typical use (the recipe runner does exactly this)::

    from resnest_engine.data import DataOptions, SamplerEpochs, create_loaders
    train_loader, val_loader, num_classes = create_loaders(DataOptions(dataset="digits",
        crop_size=32, small_image=True, workers=2), batch_size=64, test_batch_size=128, seed=0)
    SamplerEpochs(train_loader).attach(trainer)   # before trainer.run(train_loader, ...)
    # in the step: x, y = train_loader.prepare_batch(batch, device, non_blocking=True)
"""
from .datasets import build_dataset, list_datasets
from .errors import DataError, WorkerDiedError
from .loaders import SamplerEpochs, close_loader, create_loaders
from .mixup import MixupCutmix
from .options import DataOptions
from . import shards as _shards  # noqa: F401 - registers DATA.DATASET: shards
from . import parquet as _parquet  # noqa: F401 - registers DATA.DATASET: parquet
from .transforms import build_eval_transform, build_train_transform

# What docs/data.md and README.md teach. The rest stays in its module: .options (IMAGENET_MEAN,
# IMAGENET_STD), .datasets (register_dataset, ImageFolderSplit, ...), .loaders
# (create_eval_loader, ImageLoader, make_train_loader, ...), .samplers, .transforms (Lighting, ...),
# .jpeg, .reproducible.
__all__ = [
    "DataError", "DataOptions", "MixupCutmix", "SamplerEpochs", "WorkerDiedError", "build_dataset",
    "build_eval_transform", "build_train_transform", "close_loader", "create_loaders",
    "list_datasets",
]
