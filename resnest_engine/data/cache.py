"""``DATA.CACHE``: a small dataset decoded once into a uint8 store and augmented a batch at a time.

The small-image preset's transforms split into a deterministic part (train: resize to the crop
square; eval: resize and centre crop) and a random part (train: pad-and-crop, then flip). A
cached split runs the deterministic part once per image when its loader is built and keeps the
uint8 result, ``(N, C, crop, crop)``, in memory. With DataLoader workers the store is moved to
shared memory, so the workers read one copy; nothing is written to disk. The random part runs
for a whole batch as tensor indexing, and the float conversion and normalisation run on the
batch after its transfer to the device (``ExactNormalize``).

The draws are the per-sample path's: each sample's crop offsets and flip come from torch's CPU
generator seeded with ``sample_seed(seed, epoch, index, repeat)``, drawn in the order
torchvision's ``RandomCrop`` and ``RandomHorizontalFlip`` draw them. A cached batch is therefore
bitwise the batch the per-sample path makes, and a resume stays bitwise
(``tests/data/test_cache.py`` checks both).

Written by hand: neither torchvision nor ignite caches decoded images, and torchvision's random
transforms take one sample (one set of draws) at a time.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as nnf
from torch.utils.data import Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from .errors import DataError
from .options import DataOptions, channel_stats
from .reproducible import sample_seed
from .transforms import eval_geometry, small_image_padding, small_image_resize

__all__ = ["CachePlan", "plan_cache", "CachedSplit", "ExactNormalize", "decode_split",
           "pass_collated", "cached_split", "cache_normalizer"]

logger = logging.getLogger("resnest_engine")


@dataclass(frozen=True)
class CachePlan:
    """Whether to cache, the bytes the stores take, and why (a phrase for the log)."""

    use: bool
    nbytes: int
    reason: str


def _unbatchable(opts: DataOptions) -> Optional[str]:
    """The first setting that keeps the cache off, as a phrase; None when the transform can be
    batched exactly."""
    if not opts.small_image:
        return ("DATA.SMALL_IMAGE is false: only the small-image preset (pad-and-crop, flip) runs "
                "batched")
    if opts.fast_jpeg:
        return "DATA.FAST_JPEG is on"
    if opts.decode != "cpu":
        return f"DATA.DECODE is {opts.decode}"
    per_sample = [("DATA.RAND_AUG", opts.rand_aug is not None), ("DATA.AUTO_AUG", opts.auto_aug),
                  ("DATA.TRIVIAL_AUG", opts.trivial_aug),
                  ("DATA.COLOR_JITTER", opts.color_jitter > 0),
                  ("DATA.PCA_LIGHTING", opts.pca_lighting > 0),
                  ("DATA.RANDOM_ERASE", opts.random_erase > 0)]
    for key, on in per_sample:
        if on:
            return f"{key} is on: a per-sample augmentation the cache does not batch"
    return None


def plan_cache(opts: DataOptions, counts: Sequence[int]) -> CachePlan:
    """Plan the cache for splits of ``counts`` images, all of them or none, within
    ``opts.cache_mb``. Raises ``DataError`` when ``opts.cache`` is true and it cannot be used."""
    nbytes = sum(int(n) for n in counts) * opts.in_chans * opts.crop_size ** 2
    budget = opts.cache_mb * 10 ** 6
    if opts.cache is False:
        return CachePlan(False, nbytes, "DATA.CACHE is false")
    why = _unbatchable(opts)
    if why is None and nbytes > budget:
        why = (f"the decoded images need {nbytes / 1e6:.1f} MB, over the budget "
               f"DATA.CACHE_MB={opts.cache_mb}")
    if why is None:
        return CachePlan(True, nbytes, f"{nbytes / 1e6:.1f} MB of DATA.CACHE_MB={opts.cache_mb}")
    if opts.cache is True:
        raise DataError(f"data.cache is true but {why}; set DATA.CACHE to auto or false")
    return CachePlan(False, nbytes, why)


def decode_split(dataset: Dataset, prefix: v2.Transform, in_chans: int, crop: int
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 (N, C, crop, crop), labels int64 (N,))``: every sample of ``dataset``
    through the deterministic ``prefix`` (the same transform objects the per-sample path runs)."""
    n = len(dataset)
    images = torch.empty((n, in_chans, crop, crop), dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.int64)

    def decode(i: int) -> None:
        image, label = dataset[i]
        out = F.to_image(prefix(image)).as_subclass(torch.Tensor)
        if out.dtype != torch.uint8 or tuple(out.shape) != tuple(images.shape[1:]):
            raise DataError(f"data.cache: sample {i} decodes to {out.dtype} "
                            f"{tuple(out.shape)}, expected uint8 {tuple(images.shape[1:])}; "
                            f"set DATA.CACHE to false")
        images[i] = out
        labels[i] = int(label)

    # Threads: Pillow's decoders and torch's kernels release the GIL, and each sample writes
    # only its own row.
    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        for _ in pool.map(decode, range(n)):
            pass
    return images, labels


def _key(key: Any) -> Tuple[int, int, int]:
    if isinstance(key, tuple):
        return int(key[0]), int(key[1]), int(key[2]) if len(key) > 2 else 0
    return 0, int(key), 0


class CachedSplit(Dataset):
    """A decoded split: ``__getitems__(keys)`` returns ``(uint8 batch, labels)`` for a list of
    sampler keys (``SampleKey`` or index), augmented for training exactly as the per-sample path
    augments them. ``source`` is the dataset it was decoded from."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, seed: int, train: bool,
                 hflip: bool, source: Optional[Dataset] = None) -> None:
        self.images, self.labels = images, labels
        self.seed, self.train, self.hflip = int(seed), bool(train), bool(hflip)
        self.crop = int(images.shape[-1])
        self.padding = small_image_padding(self.crop)
        self.source = source

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def draws(self, keys: Sequence[Any]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(top, left, flip)`` per key: RandomCrop's two offsets, then RandomHorizontalFlip's
        coin, each sample from its own seeded generator (what the per-sample path draws)."""
        gen = torch.Generator()
        span = 2 * self.padding + 1  # padded side - crop + 1, as RandomCrop draws
        top, left, flip = [], [], []
        for key in keys:
            gen.manual_seed(sample_seed(self.seed, *_key(key)))
            top.append(int(torch.randint(0, span, size=(), generator=gen)))
            left.append(int(torch.randint(0, span, size=(), generator=gen)))
            flip.append(self.hflip and bool(torch.rand(1, generator=gen) < 0.5))
        return torch.tensor(top), torch.tensor(left), torch.tensor(flip, dtype=torch.bool)

    def __getitems__(self, keys: List[Any]) -> Tuple[torch.Tensor, torch.Tensor]:
        index = torch.tensor([_key(k)[1] for k in keys], dtype=torch.int64)
        images, labels = self.images[index], self.labels[index]
        if not self.train:
            return images, labels
        top, left, flip = self.draws(keys)
        p, s = self.padding, self.crop
        padded = nnf.pad(images, (p, p, p, p))  # zeros, as RandomCrop(padding=p) pads
        offsets = torch.arange(s)
        rows = top[:, None] + offsets
        cols = left[:, None] + offsets
        cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flip reads columns backwards
        n, c = images.shape[:2]
        out = padded[torch.arange(n).view(n, 1, 1, 1), torch.arange(c).view(1, c, 1, 1),
                     rows.view(n, 1, s, 1), cols.view(n, 1, 1, s)]
        return out, labels

    def __getitem__(self, key: Any) -> Tuple[torch.Tensor, int]:
        images, labels = self.__getitems__([key])
        return images[0], int(labels[0])


def pass_collated(batch: Any) -> Any:
    """The collate function of a cached loader: ``__getitems__`` already made the batch."""
    return batch


class ExactNormalize:
    """uint8 batch (on any device) -> ``(float32 batch, labels)``: torchvision's
    ``ToDtype(scale=True)`` and ``Normalize`` on the whole batch, the same elementwise
    operations the per-sample path runs (so the result is bitwise equal)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = list(mean), list(std)

    def __call__(self, batch: Sequence[Any]) -> Tuple[torch.Tensor, torch.Tensor]:
        images, labels = batch[0], batch[1]
        x = F.to_dtype(images, torch.float32, scale=True)
        return F.normalize(x, self.mean, self.std, inplace=True), labels

    def __repr__(self) -> str:
        return f"ExactNormalize(mean={tuple(self.mean)}, std={tuple(self.std)})"


def cached_split(dataset: Dataset, opts: DataOptions, train: bool, seed: int,
                 plan: CachePlan) -> CachedSplit:
    """Decode ``dataset`` for a cached loader (see ``plan_cache``) and log it."""
    prefix = small_image_resize(opts) if train else v2.Compose(eval_geometry(opts))
    images, labels = decode_split(dataset, prefix, opts.in_chans, opts.crop_size)
    if opts.workers > 0:
        images.share_memory_()  # the workers map this one copy instead of each holding one
    logger.info("Data cache: %s split decoded once, %d images, %.1f MB in memory (%s)",
                "train" if train else "val", len(labels), images.numel() / 1e6, plan.reason)
    return CachedSplit(images, labels, seed, train, opts.hflip, source=dataset)


def cache_normalizer(opts: DataOptions) -> ExactNormalize:
    mean, std = channel_stats(opts)
    return ExactNormalize(mean, std)
