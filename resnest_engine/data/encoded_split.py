"""A split whose samples are encoded image bytes in containers (tar shards, Parquet row groups):
decoded as the image folder decodes a file, with the folder's corrupt-sample rule."""
from __future__ import annotations

import io
import warnings
from typing import List, Tuple

from PIL import Image
from torch.utils.data import Dataset

from .errors import DataError

__all__ = ["EncodedImageSplit"]


class EncodedImageSplit(Dataset):
    """Base of the container datasets. A subclass sets ``mode`` (PIL mode), ``targets``,
    ``skip_corrupt`` and ``skipped_at_load = 0``, and defines ``read_bytes(index)`` (the
    sample's encoded bytes), ``where(index)`` (where the sample is, for messages) and
    ``close()`` (this process's open containers; also called when the split is collected)."""

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
