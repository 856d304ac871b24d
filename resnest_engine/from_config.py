"""The library's pieces from a :class:`~resnest_engine.config.Config`: data options, model
constructor arguments and the model (with its pretrained weights). Shared by the recipe runner,
``--eval-only``, ``resnest-predict``, ``resnest-average`` and exports."""
from __future__ import annotations

import logging
from typing import Any, Dict

import ignite.distributed as idist
from torch import nn

from .config import Config
from .data import DataOptions
from .data.transforms import LARGE_CROP
from .models import get_model, get_variant, load_pretrained

__all__ = ["CLASSES_FILE", "build_model", "data_options", "model_kwargs"]

logger = logging.getLogger("resnest_engine")

CLASSES_FILE = "classes.json"  # a run's class names, index order


def data_options(cfg: Config) -> DataOptions:
    """DATA section (plus the variant's data defaults) as the data package's options."""
    d, variant = cfg.DATA, get_variant(cfg.MODEL.NAME)
    rand_aug = None
    if d.RAND_AUG:
        n, m = (int(v) for v in str(d.RAND_AUG).split(","))
        rand_aug = (n, m)
    return DataOptions(
        dataset=d.DATASET, root=d.ROOT, download=d.DOWNLOAD,
        crop_size=d.CROP_SIZE or variant.crop_size,
        eval_crop_fraction=d.EVAL_CROP_FRACTION or variant.eval_crop_fraction,
        interpolation=d.INTERPOLATION or variant.interpolation,
        mean=variant.mean, std=variant.std, in_chans=cfg.MODEL.IN_CHANS, hflip=d.HFLIP,
        color_jitter=d.COLOR_JITTER, pca_lighting=d.PCA_LIGHTING, rand_aug=rand_aug,
        auto_aug=d.AUTO_AUG, trivial_aug=d.TRIVIAL_AUG, random_erase=d.RANDOM_ERASE,
        small_image=d.SMALL_IMAGE, aug_repeats=d.AUG_REPEATS, workers=d.WORKERS,
        skip_corrupt=d.SKIP_CORRUPT, fast_jpeg=d.FAST_JPEG, synthetic_size=d.SYNTHETIC_SIZE,
        synthetic_classes=d.SYNTHETIC_CLASSES, image_size=d.IMAGE_SIZE,
        ecrop_min_size=0 if d.CROP_STYLE == "ecrop" else LARGE_CROP,
        val_fraction=d.VAL_FRACTION, split_seed=cfg.SEED,
    )


def model_kwargs(cfg: Config) -> Dict[str, Any]:
    """Constructor overrides the MODEL section asks for."""
    m = cfg.MODEL
    kw: Dict[str, Any] = dict(final_drop=m.FINAL_DROP, dropblock_prob=m.DROPBLOCK_PROB,
                              zero_init_last=m.ZERO_INIT_LAST, in_chans=m.IN_CHANS)
    if m.STEM:
        kw["stem"] = m.STEM
    return kw


def build_model(cfg: Config, num_classes: int, pretrained: bool = True) -> nn.Module:
    """The MODEL section's network with its pretrained weights, if any and ``pretrained`` (a
    resume skips them: the checkpoint replaces them), not yet on a device."""
    model = get_model(cfg.MODEL.NAME, num_classes=num_classes, **model_kwargs(cfg))
    source = cfg.MODEL.PRETRAINED if pretrained else None
    if source is True:  # the published weights, fetched once per machine (rank 0 first)
        from .models.published import load_published_state_dict, published_url
        if idist.get_local_rank() != 0:
            idist.barrier()
        state = load_published_state_dict(cfg.MODEL.NAME, progress=idist.get_rank() == 0)
        if idist.get_local_rank() == 0 and idist.get_world_size() > 1:
            idist.barrier()
        report = load_pretrained(model, state)
        source = published_url(cfg.MODEL.NAME)
    elif source:
        report = load_pretrained(model, source)
    if source:
        logger.info("Pretrained weights from %s%s", source,
                    f"; classifier re-initialised ({', '.join(report.skipped_classifier)})"
                    if report.skipped_classifier else "")
    if cfg.MODEL.GRAD_CHECKPOINTING:
        model.set_grad_checkpointing(True)
    return model
