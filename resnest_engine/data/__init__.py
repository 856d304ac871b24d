"""Data: dataset registry, ResNeSt transform presets, distributed loaders, reproducible draws.

Typical use (the recipe runner does exactly this)::

    from resnest_engine.data import DataOptions, create_loaders, attach_sampler_epochs
    train_loader, val_loader, num_classes = create_loaders(DataOptions(dataset="digits",
        crop_size=32, small_image=True, workers=2), batch_size=64, test_batch_size=128, seed=0)
    attach_sampler_epochs(trainer, train_loader)   # before trainer.run(train_loader, ...)
    # in the step: x, y = train_loader.prepare_batch(batch, device, non_blocking=True)
"""
from .datasets import (IMG_EXTENSIONS, DigitsDataset, ImageFolderSplit, SyntheticDataset,
                       build_dataset, list_datasets, register_dataset)
from .errors import DataError
from .jpeg import BatchTransform, FastJpegSample, fast_collate, make_device_transform, normalize_batch
from .loaders import (ImageLoader, attach_sampler_epochs, close_loader, create_eval_loader, create_loaders,
                      find_epoch_sampler,
                      make_eval_loader, make_train_loader)
from .mixup import MixupCutmix
from .options import IMAGENET_MEAN, IMAGENET_STD, DataOptions, validate_options
from .reproducible import SampleKey, SeededDataset, sample_seed
from .samplers import EvalShardSampler, TrainSampler
from .transforms import (LARGE_CROP, ECenterCrop, ERandomCrop, Lighting, build_eval_transform,
                         build_train_transform)

__all__ = [
    "DataOptions", "DataError", "IMAGENET_MEAN", "IMAGENET_STD", "validate_options",
    "create_loaders", "create_eval_loader", "make_train_loader", "make_eval_loader", "ImageLoader",
    "attach_sampler_epochs", "find_epoch_sampler", "close_loader",
    "build_dataset", "list_datasets", "register_dataset", "IMG_EXTENSIONS",
    "ImageFolderSplit", "DigitsDataset", "SyntheticDataset",
    "build_train_transform", "build_eval_transform", "Lighting", "ERandomCrop", "ECenterCrop",
    "LARGE_CROP", "TrainSampler", "EvalShardSampler", "SampleKey", "SeededDataset", "sample_seed",
    "MixupCutmix", "BatchTransform", "make_device_transform", "normalize_batch", "fast_collate", "FastJpegSample",
]
