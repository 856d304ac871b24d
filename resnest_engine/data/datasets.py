"""Dataset registry: ``build_dataset(opts, split)`` by name, and the datasets behind the names.

Every dataset here returns *untransformed* samples ``(image, label)``, where ``image`` is a PIL
image (``L`` for in_chans=1, ``RGB`` otherwise) or, for ``synthetic``, a uint8
``tv_tensors.Image``; transforms are applied by the loader (see ``loaders.py``) so that their
random draws can be keyed per sample. Each dataset has ``classes`` (a list of names).

Names: ``imagefolder`` / ``imagenet`` (ROOT/train/<class>/*, ROOT/val/<class>/*), ``cifar10``,
``cifar100`` (torchvision), ``digits`` (scikit-learn's bundled 8x8 digits), ``synthetic``, and
``shards`` (tar shards in the webdataset layout, registered by :mod:`.shards`) and ``parquet``
(Parquet files with an image-bytes column, registered by :mod:`.parquet`).
"""
from __future__ import annotations

import hashlib
import os
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets, tv_tensors

from ..config.validation import register_names
from .errors import DataError
from .options import DataOptions

__all__ = [
    "build_dataset", "list_datasets", "register_dataset", "IMG_EXTENSIONS",
    "ImageFolderSplit", "DigitsDataset", "SyntheticDataset", "SPLITS",
]

SPLITS = ("train", "val")
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_REGISTRY: Dict[str, Callable[[DataOptions, str], Dataset]] = {}


def register_dataset(*names: str) -> Callable:
    """Decorator registering ``builder(opts, split) -> Dataset`` under one or more names."""
    def deco(builder: Callable[[DataOptions, str], Dataset]) -> Callable[[DataOptions, str], Dataset]:
        for name in names:
            _REGISTRY[name] = builder
        return builder
    return deco


def list_datasets() -> List[str]:
    """Registered dataset names, sorted."""
    return sorted(_REGISTRY)


register_names("DATA.DATASET", list_datasets, "dataset")


def build_dataset(opts: DataOptions, split: str, classes: Optional[Sequence[str]] = None
                  ) -> Dataset:
    """The untransformed ``split`` ("train" or "val") of the dataset ``opts.dataset``.

    ``classes`` (image folders only) fixes the label order; by default the val split takes the
    train split's class folders when there is one, else its own.

    Args:
        opts: the data options; ``opts.dataset`` names the registered dataset.
        split: ``"train"`` or ``"val"``.
        classes: the label order (image folders only); default: as described above.
    """
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    try:
        builder = _REGISTRY[opts.dataset]
    except KeyError:
        raise DataError(f"unknown data.dataset {opts.dataset!r}; choose one of: "
                        f"{', '.join(list_datasets())}") from None
    if classes is not None and opts.dataset in ("imagefolder", "imagenet", "shards", "parquet"):
        return builder(opts, split, classes=classes)
    return builder(opts, split)


def _pil_mode(in_chans: int) -> str:
    return "L" if in_chans == 1 else "RGB"


# --------------------------------------------------------------------------- image folders
def is_image_file(name: str) -> bool:
    """Whether file ``name`` is an image by its name: an image extension, not a hidden file."""
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def fraction_split(files: Sequence[str], fraction: float, seed: int, key: str
                   ) -> Dict[str, List[str]]:
    """``{"train": [...], "val": [...]}``: ``round(len(files) * fraction)`` files (at least one
    when there are two or more) go to val, drawn by a generator seeded from ``seed`` and ``key``
    (the class name), so the split is stratified and the same on every machine and process."""
    files = sorted(files)
    n_val = min(max(1, round(len(files) * fraction)), len(files) - 1) if len(files) > 1 else 0
    digest = int.from_bytes(hashlib.sha256(f"{seed}/{key}".encode()).digest()[:8], "little")
    order = np.random.default_rng(digest).permutation(len(files))
    val = set(order[:n_val].tolist())
    return {"train": [f for i, f in enumerate(files) if i not in val],
            "val": [f for i, f in enumerate(files) if i in val]}


def _class_dirs(split_dir: str) -> List[str]:
    if not os.path.isdir(split_dir):
        raise DataError(f"missing split folder {split_dir} (expected ROOT/train/<class>/* and "
                        f"ROOT/val/<class>/*)")
    names = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    if not names:
        raise DataError(f"split folder {split_dir} has no class sub-folders")
    return names


def _image_files(class_dir: str) -> List[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(os.path.join(dirpath, f) for f in sorted(filenames) if is_image_file(f))
    return found


def _header_ok(path: str) -> Optional[str]:
    """None when ``path`` opens as an image with a sane size, else the reason (cheap: no decode)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
        if w <= 0 or h <= 0:
            return f"empty image size {w}x{h}"
    except Exception as e:  # noqa: BLE001 - any failure means unreadable
        return f"{type(e).__name__}: {e}"
    return None


class ImageFolderSplit(Dataset):
    """One split of ROOT/<split>/<class>/<files>; labels index ``classes``.

    Unreadable files raise ``DataError`` naming the file when loaded. With ``skip_corrupt``, every
    file's header is checked once up front and unreadable ones are dropped with one warning
    (``skipped`` lists them); a file that still fails to decode later (a truncated JPEG) is
    replaced by the next readable sample with a warning, and counted in ``skipped_at_load``
    (per process).
    """

    def __init__(self, root: str, split: str, classes: Optional[Sequence[str]] = None,
                 in_chans: int = 3, skip_corrupt: bool = False,
                 val_fraction: Optional[float] = None, split_seed: int = 0) -> None:
        self.root, self.split = root, split
        # With val_fraction, ROOT/<class>/<files> is split here (stratified, by the seed).
        self.split_dir = root if val_fraction else os.path.join(root, split)
        self.mode = _pil_mode(in_chans)
        self.skip_corrupt = skip_corrupt
        found = _class_dirs(self.split_dir)
        if classes is None:
            classes = found
        else:
            extra = sorted(set(found) - set(classes))
            if extra:
                shown = ", ".join(extra[:5]) + (" ..." if len(extra) > 5 else "")
                raise DataError(f"{self.split_dir} has {len(extra)} class folder(s) that "
                                f"{os.path.join(root, 'train')} lacks: {shown}")
        self.classes = list(classes)
        index = {c: i for i, c in enumerate(self.classes)}
        self.samples: List[Tuple[str, int]] = []
        self.skipped: List[str] = []
        self.skipped_at_load = 0
        for name in found:
            class_dir = os.path.join(self.split_dir, name)
            files = _image_files(class_dir)
            if val_fraction:
                files = fraction_split(files, val_fraction, split_seed, name)[split]
            if skip_corrupt:
                files = self._drop_unreadable(files)
            if not files:
                raise DataError(f"class folder {class_dir} has no readable image files "
                                f"(looked for {', '.join(IMG_EXTENSIONS)})")
            self.samples.extend((f, index[name]) for f in files)
        if self.skipped:
            warnings.warn(f"skipped {len(self.skipped)} unreadable image file(s) under "
                          f"{self.split_dir} (first: {self.skipped[0]})", stacklevel=2)
        self.targets = [label for _, label in self.samples]

    def _drop_unreadable(self, files: List[str]) -> List[str]:
        kept = []
        for f in files:
            if _header_ok(f) is None:
                kept.append(f)
            else:
                self.skipped.append(f)
        return kept

    def __len__(self) -> int:
        return len(self.samples)

    def unreadable(self, index: int, exc: BaseException) -> int:
        """Policy for a sample that failed to load: raise ``DataError`` naming the file, or
        (skip_corrupt) warn and return the index of the sample to use instead."""
        path = self.samples[index][0]
        if not self.skip_corrupt:
            raise DataError(f"cannot read image file {path}: {type(exc).__name__}: {exc} "
                            f"(set DATA.SKIP_CORRUPT: true to skip such files)") from exc
        self.skipped_at_load += 1
        replacement = (index + 1) % len(self.samples)
        warnings.warn(f"skipping unreadable image file {path} ({type(exc).__name__}: {exc}); using "
                      f"{self.samples[replacement][0]} instead ({self.skipped_at_load} skipped in "
                      f"this process)", stacklevel=2)
        return replacement

    def read_bytes(self, index: int) -> bytes:
        """The encoded bytes of sample ``index`` (as the container splits give theirs)."""
        with open(self.samples[index][0], "rb") as f:
            return f.read()

    def where(self, index: int) -> str:
        return f"file {self.samples[index][0]}"

    def load(self, path: str) -> Image.Image:
        with Image.open(path) as im:
            return im.convert(self.mode)  # convert() decodes fully: truncation fails here

    def __getitem__(self, index: int) -> Tuple[Image.Image, int]:
        for _ in range(min(len(self.samples), 100)):
            path, label = self.samples[index]
            try:
                return self.load(path), label
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
                index = self.unreadable(index, e)
        raise DataError(f"no readable image found near {self.samples[index][0]}")


@register_dataset("imagefolder", "imagenet")
def _imagefolder(opts: DataOptions, split: str,
                 classes: Optional[Sequence[str]] = None) -> ImageFolderSplit:
    if not opts.root:
        raise DataError(f"data.dataset={opts.dataset} needs data.root: a folder holding "
                        f"train/<class>/* and val/<class>/*")
    root = os.path.expanduser(opts.root)
    if not os.path.isdir(root):
        raise DataError(f"data.root {root} is not a folder")
    if opts.val_fraction:
        if os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "val")):
            raise DataError(f"DATA.VAL_FRACTION splits one folder of ROOT/<class>/ images, but "
                            f"{root} has train/ and val/: set DATA.VAL_FRACTION to null")
        return ImageFolderSplit(root, split, classes, in_chans=opts.in_chans,
                                skip_corrupt=opts.skip_corrupt, val_fraction=opts.val_fraction,
                                split_seed=opts.split_seed or 0)
    if classes is None and split != "train" and os.path.isdir(os.path.join(root, "train")):
        classes = _class_dirs(os.path.join(root, "train"))
    return ImageFolderSplit(root, split, classes, in_chans=opts.in_chans,
                            skip_corrupt=opts.skip_corrupt)


# --------------------------------------------------------------------------- CIFAR
class _ConvertMode(Dataset):
    """Wraps a dataset of PIL images, converting them to ``mode``."""

    def __init__(self, dataset: Dataset, mode: str) -> None:
        self.dataset, self.mode = dataset, mode
        self.classes = list(dataset.classes)
        self.targets = list(dataset.targets)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tuple[Image.Image, int]:
        img, label = self.dataset[index]
        return img.convert(self.mode), label


def _cifar(opts: DataOptions, split: str, num: int) -> Dataset:

    cls = datasets.CIFAR10 if num == 10 else datasets.CIFAR100
    name = f"CIFAR-{num}"
    if not opts.root:
        raise DataError(f"data.dataset=cifar{num} needs data.root: the folder holding "
                        f"{cls.base_folder} (or where data.download=true should put it)")
    root = os.path.expanduser(opts.root)
    try:
        ds = cls(root, train=(split == "train"), download=opts.download)
    except RuntimeError as e:
        if opts.download:
            raise DataError(f"could not download {name} to {root}: {e}") from e
        raise DataError(f"{name} not found (or corrupt) under {root}: expected "
                        f"{os.path.join(root, cls.base_folder)}; set data.download=true to "
                        f"download it") from e
    except OSError as e:  # network errors while downloading
        raise DataError(f"could not download {name} to {root}: {e}") from e
    return _ConvertMode(ds, _pil_mode(opts.in_chans))


@register_dataset("cifar10")
def _cifar10(opts: DataOptions, split: str) -> Dataset:
    return _cifar(opts, split, 10)


@register_dataset("cifar100")
def _cifar100(opts: DataOptions, split: str) -> Dataset:
    return _cifar(opts, split, 100)


# --------------------------------------------------------------------------- digits
def digits_split(val_fraction: float = 0.2, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified (train, val) index arrays over scikit-learn's 1,797 digits."""
    # Lazy on purpose: scikit-learn is an optional dependency (the demo extra), needed only here.
    # scikit-learn is optional (the digits demo's extra): imported only when digits is used
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    y = load_digits().target
    train_idx, val_idx = train_test_split(np.arange(len(y)), test_size=val_fraction,
                                          stratify=y, random_state=seed)
    return np.sort(train_idx), np.sort(val_idx)


class DigitsDataset(Dataset):
    """scikit-learn's bundled 8x8 digits (real scans, 10 classes), upscaled to ``image_size``
    (bilinear) and stored as uint8; the split is a stratified 80/20 (1,437 / 360), drawn with
    ``split_seed`` (0: the split of every run before DATA.SPLIT_SEED existed)."""

    def __init__(self, split: str, image_size: int = 32, in_chans: int = 3,
                 split_seed: int = 0) -> None:
        # Lazy on purpose: scikit-learn is an optional dependency (the demo extra).
        from sklearn.datasets import load_digits  # optional dependency, as above

        digits = load_digits()
        train_idx, val_idx = digits_split(seed=split_seed)
        idx = train_idx if split == "train" else val_idx
        small = (digits.images[idx] * (255.0 / 16.0)).round().clip(0, 255).astype(np.uint8)
        self.mode = _pil_mode(in_chans)
        self.images = np.stack([
            np.asarray(Image.fromarray(a, "L").resize((image_size, image_size), Image.BILINEAR))
            for a in small])
        self.targets = [int(t) for t in digits.target[idx]]
        self.classes = [str(i) for i in range(10)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Tuple[Image.Image, int]:
        img = Image.fromarray(self.images[index], "L")
        return (img if self.mode == "L" else img.convert("RGB")), self.targets[index]


@register_dataset("digits")
def _digits(opts: DataOptions, split: str) -> DigitsDataset:
    return DigitsDataset(split, image_size=opts.image_size, in_chans=opts.in_chans,
                         split_seed=opts.split_seed or 0)


# --------------------------------------------------------------------------- synthetic
class SyntheticDataset(Dataset):
    """``size`` deterministic random uint8 images (``tv_tensors.Image``) of side ``image_size``.

    Sample ``i`` is generated from (split seed, i) alone: its label is drawn uniformly, and its
    pixels are noise around a per-class colour, so the data is learnable for smoke tests.
    """

    def __init__(self, size: int, num_classes: int, image_size: int = 32, in_chans: int = 3,
                 seed: int = 0) -> None:
        self.size, self.image_size, self.in_chans, self.seed = size, image_size, in_chans, seed
        self.classes = [f"class_{i}" for i in range(num_classes)]
        g = torch.Generator().manual_seed(seed)
        self.targets = torch.randint(num_classes, (size,), generator=g).tolist()
        self.class_colour = torch.randint(40, 216, (num_classes, in_chans, 1, 1),
                                          generator=torch.Generator().manual_seed(12345))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Tuple[tv_tensors.Image, int]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        label = self.targets[index]
        noise = torch.randint(-40, 41, (self.in_chans, self.image_size, self.image_size),
                              generator=g, dtype=torch.int16)
        img = (self.class_colour[label, :, :, :].to(torch.int16) + noise).clamp_(0, 255)
        return tv_tensors.Image(img.to(torch.uint8)), label


@register_dataset("synthetic")
def _synthetic(opts: DataOptions, split: str) -> SyntheticDataset:
    size = opts.synthetic_size if split == "train" else max(1, opts.synthetic_size // 4)
    return SyntheticDataset(size, opts.synthetic_classes, opts.image_size, opts.in_chans,
                            seed=0 if split == "train" else 1)
