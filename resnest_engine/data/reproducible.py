"""Per-sample reproducible augmentation: draws keyed to (seed, epoch, index, repeat).

The train sampler yields ``SampleKey(epoch, index, repeat)`` instead of a bare index, so the
epoch travels with every index into the DataLoader workers (a persistent worker never sees an
epoch set in the main process). ``SeededDataset`` runs the sample function under torch's CPU
RNG seeded from ``sample_seed(seed, epoch, index, repeat)``, inside ``torch.random.fork_rng`` so
the caller's global RNG is left as it was (this matters with workers=0, where samples are made in
the main process). Hence sample i of epoch e is augmented identically whatever the worker count,
the worker it lands on, the load order, or a mid-epoch resume.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Union

import torch
from torch.utils.data import Dataset

__all__ = ["SampleKey", "sample_seed", "SeededDataset", "TransformedSample"]

_M64 = (1 << 64) - 1


class SampleKey(NamedTuple):
    """What the train sampler yields: the sample ``index`` for ``epoch``; ``repeat`` numbers the
    copies of one index under repeated augmentation (0 without it)."""

    epoch: int
    index: int
    repeat: int = 0


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def sample_seed(seed: int, epoch: int, index: int, repeat: int = 0) -> int:
    """A 64-bit seed that depends only on its arguments (well mixed: neighbours differ)."""
    h = _splitmix64(int(seed) & _M64)
    for v in (epoch, index, repeat):
        h = _splitmix64(h ^ (int(v) & _M64))
    return h


class TransformedSample:
    """``index -> (transform(image), label)`` over an untransformed dataset (picklable)."""

    def __init__(self, dataset: Dataset, transform: Callable[[Any], Any]) -> None:
        self.dataset, self.transform = dataset, transform

    def __call__(self, index: int):
        image, label = self.dataset[index]
        out = self.transform(image)
        if isinstance(out, torch.Tensor):
            out = out.as_subclass(torch.Tensor)  # plain tensors collate and pickle cheapest
        return out, label


class SeededDataset(Dataset):
    """Map-style dataset over ``sample_fn(index)``, run under an RNG keyed per sample.

    Accepts a ``SampleKey`` (or any ``(epoch, index[, repeat])`` tuple) or a plain int index
    (keyed as epoch 0, repeat 0).
    """

    def __init__(self, sample_fn: Callable[[int], Any], length: int, seed: int) -> None:
        self.sample_fn, self.length, self.seed = sample_fn, int(length), int(seed)

    def __len__(self) -> int:
        return self.length

    @property
    def source(self) -> Any:
        """The untransformed dataset the samples come from (None if the sample function has
        none)."""
        return getattr(self.sample_fn, "dataset", None)

    def __getitem__(self, key: Union[SampleKey, tuple, int]):
        if isinstance(key, tuple):
            epoch, index = int(key[0]), int(key[1])
            repeat = int(key[2]) if len(key) > 2 else 0
        else:
            epoch, index, repeat = 0, int(key), 0
        reading = getattr(self.source, "reading", None)
        if reading is not None:  # e.g. remote shards: fetch what the sampler needs next
            reading(epoch, index)
        with torch.random.fork_rng(devices=[]):
            # CPU generator only: torch.manual_seed would also reseed (and clobber) CUDA RNGs.
            torch.default_generator.manual_seed(sample_seed(self.seed, epoch, index, repeat))
            return self.sample_fn(index)
