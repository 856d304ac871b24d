"""A split whose samples are encoded image bytes in containers (tar shards, Parquet row groups):
decoded as the image folder decodes a file, with the folder's corrupt-sample rule, and, for a
remote set, containers fetched in the order the train sampler will read them."""
from __future__ import annotations

import copy
import io
import warnings
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from PIL import Image
from torch.utils.data import Dataset

from .errors import DataError

__all__ = ["EncodedImageSplit"]


class EncodedImageSplit(Dataset):
    """Base of the container datasets. A subclass sets ``mode`` (PIL mode), ``targets``,
    ``skip_corrupt`` and ``skipped_at_load = 0``, and defines ``read_bytes(index)`` (the
    sample's encoded bytes), ``where(index)`` (where the sample is, for messages) and
    ``close()`` (this process's open containers; also called when the split is collected)."""

    #: Remote sets: how many samples of the sampler's order are looked ahead to fetch containers.
    LOOKAHEAD = 2048
    #: ... asked again every this many positions of the order, not on every sample (the wish
    #: list moves little in 32 of 2048 samples; working it out costs tens of microseconds).
    HINT_EVERY = 32
    _hinted_at: Optional[Tuple[int, int]] = None
    #: Remote sets: the local cache (a ShardCache) whose entries the containers are; else None.
    cache: Any = None
    _sampler: Any = None
    _hinted = False

    def fetch_units(self) -> np.ndarray:
        """The cache entry (shard, file) of each sample, in index order (remote sets)."""
        raise NotImplementedError

    def follow(self, sampler: Any) -> None:
        """Fetch a remote set's containers in the order ``sampler`` (a ``TrainSampler``, whose
        order is a pure function of its seed and epoch) will ask for them; the loader's
        ``SeededDataset`` tells the split which ``(epoch, index)`` is being read
        (:meth:`reading`)."""
        if self.cache is not None:
            self._sampler = copy.copy(sampler)
            self._orders, self._hinted_at = {}, None

    def _order(self, epoch: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(position of each index in this rank's epoch order, entry of each position)``."""
        orders: Dict[int, Tuple[np.ndarray, np.ndarray]] = self.__dict__.setdefault("_orders", {})
        got = orders.get(epoch)
        if got is None:
            sampler = copy.copy(self._sampler)
            sampler.set_epoch(epoch)
            indices = np.fromiter((k[1] for k in sampler), dtype=np.int64)
            position = np.full(len(self), -1, dtype=np.int64)
            position[indices] = np.arange(len(indices))
            got = orders[epoch] = (position, self.fetch_units()[indices])
            for old in [e for e in orders if e < epoch - 1]:
                del orders[old]
        return got

    def reading(self, epoch: int, index: int) -> None:
        """Sample ``index`` of epoch ``epoch`` is about to be read: ask the cache for the
        containers the sampler needs next, ``LOOKAHEAD`` samples ahead, into the next epoch at
        the end (remote sets; a no-op otherwise)."""
        if self.cache is None or self._sampler is None:
            return
        position, units = self._order(epoch)
        p = int(position[index])
        if p < 0 or self._hinted_at == (epoch, p // self.HINT_EVERY):
            return
        self._hinted_at = (epoch, p // self.HINT_EVERY)
        window = units[p:p + self.LOOKAHEAD]
        if p + self.LOOKAHEAD > len(units):
            _, following = self._order(epoch + 1)
            window = np.concatenate([window, following[:p + self.LOOKAHEAD - len(units)]])
        _, first = np.unique(window, return_index=True)
        self._hinted = True
        self.cache.want(window[np.sort(first)].tolist())

    def _want_in_index_order(self, unit: int, count: int) -> None:
        """No sampler order (evaluation, the decode-once cache): the entries after ``unit``."""
        if not self._hinted:
            self.cache.want([(unit + k) % count for k in range(1, self.cache.ahead + 1)])

    def close(self) -> None:
        """Close this process's open containers."""

    def block_sizes(self) -> List[int]:
        """The sample counts of the split's consecutive blocks (shards, row groups) in index
        order: what the window order (``DATA.SHUFFLE: window``) permutes."""
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:
        """A SHA-256 of what the samples are (not where they are stored): a run records it and a
        resume against another set is refused."""
        raise NotImplementedError

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def read_bytes(self, index: int) -> bytes:
        raise NotImplementedError

    def where(self, index: int) -> str:
        raise NotImplementedError

    def load(self, index: int) -> Image.Image:
        with Image.open(io.BytesIO(self.read_bytes(index))) as im:
            return im.convert(self.mode)  # as ImageFolderSplit.load: convert() decodes fully

    def unreadable(self, index: int, exc: BaseException) -> int:
        """The sample to use instead of ``index``, whose image did not decode; a one-line
        :class:`DataError` unless ``skip_corrupt`` (the container's own errors always raise)."""
        if isinstance(exc, DataError):
            raise exc
        where = self.where(index)
        if not self.skip_corrupt:
            raise DataError(f"cannot read image {where}: {type(exc).__name__}: {exc} "
                            f"(set DATA.SKIP_CORRUPT: true to skip such samples)") from exc
        self.skipped_at_load += 1
        replacement = (index + 1) % len(self)
        warnings.warn(f"skipping unreadable image {where} ({type(exc).__name__}: {exc}); using "
                      f"sample {replacement} instead ({self.skipped_at_load} skipped in this "
                      f"process)", stacklevel=2)
        return replacement

    def __getitem__(self, index: int) -> Tuple[Image.Image, int]:
        for _ in range(min(len(self), 100)):
            try:
                return self.load(index), self.targets[index]
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
                index = self.unreadable(index, e)
        raise DataError(f"no readable image found near {self.where(index)}")
