"""The fast path for JPEG image folders (``DataOptions.fast_jpeg``): uint8 until after transfer.

Per sample, in the worker: read the file once; take the crop box from the image header (the
same torchvision RandomResizedCrop sampler, or the official ERandomCrop / ECenterCrop box);
decode either with Pillow's reduced-size DCT decoding (``Image.draft``, 1/2, 1/4 or 1/8 scale)
when the box will be downscaled at least 2x, then crop-and-resize in one Pillow call, or with
``torchvision.io.decode_image`` (libjpeg-turbo) followed by a crop and a uint8 antialiased
resize; flip; run the uint8-capable augmentations (RandAugment / AutoAugment / TrivialAugment,
ColorJitter); draw the per-sample PCA-lighting alphas and the RandomErasing box. Nothing is
converted to float in the worker: batches cross process boundaries and the host-to-device copy
as uint8 NHWC (4x fewer bytes than float).

After the transfer, ``BatchTransform`` (``loader.batch_transform``) turns the raw batch into
``(float images, labels)``: one fused scale-and-shift per element that also adds the
per-sample lighting offset, the erasing mask (value 0 after normalisation, as torchvision's
RandomErasing on normalised data), and channels_last output. The random draws of sample i in
epoch e still come from the RNG keyed to (seed, epoch, i) in the worker (see
``reproducible.py``), so results do not depend on where the batch transform runs.

Raw batches: train ``(uint8 images N,C,H,W (NHWC memory), labels, params N,7 float32)``, params
being ``[alpha_r, alpha_g, alpha_b, erase_top, erase_left, erase_height, erase_width]``;
eval ``(uint8 images, labels)``.
"""
from __future__ import annotations

import contextlib
import io
import math
import warnings
from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import default_collate
from torchvision.io import ImageReadMode

try:  # libjpeg-turbo decoding; deprecated since torchvision 0.29 in favour of torchcodec
    from torchvision.io import decode_image
except ImportError:  # pragma: no cover - a torchvision without it: Pillow decodes everything
    decode_image = None
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from .datasets import ImageFolderSplit
from .encoded_split import EncodedImageSplit
from .errors import DataError
from .options import DataOptions, channel_stats
from .transforms import (ecenter_crop_box, erandom_crop_box, eval_resize_size,
                         interpolation_mode, lighting_offset, train_photometric)

__all__ = ["FastJpegSample", "ENCODED_DATASETS", "fast_collate", "normalize_batch", "BatchTransform",
           "make_device_transform", "identity_batch_transform", "NUM_PARAMS"]

NUM_PARAMS = 7  # 3 lighting alphas + erase box (top, left, height, width)
_PIL_RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
_JPEG = ("JPEG", "MPO")  # Pillow names some camera JPEGs MPO
_TV_DECODES = _JPEG + ("PNG", "WEBP")
_READ_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _to_chw(pil: Image.Image) -> torch.Tensor:
    """PIL -> uint8 (C, H, W) view of HWC memory (no channel-first copy)."""
    arr = np.array(pil)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr).permute(2, 0, 1)


#: The datasets whose samples are encoded image files: ``read_bytes(index)``, ``where(index)``,
#: ``unreadable(index, exc)`` (the corrupt-sample rule) and ``targets``.
ENCODED_DATASETS = (ImageFolderSplit, EncodedImageSplit)


class FastJpegSample:
    """``index -> (uint8 CHW image, label[, params])`` for a dataset of encoded image files (an
    image folder, tar shards, Parquet: ``ENCODED_DATASETS``), decoded the fast way. Picklable;
    all random draws come from torch's global RNG, keyed by the caller."""

    def __init__(self, dataset: Any, opts: DataOptions, train: bool) -> None:
        self.dataset, self.train = dataset, train
        self.crop = opts.crop_size
        self.mode = "L" if opts.in_chans == 1 else "RGB"
        self.read_mode = ImageReadMode.GRAY if opts.in_chans == 1 else ImageReadMode.RGB
        large = opts.crop_size >= opts.ecrop_min_size
        interp = opts.large_crop_interpolation if large else opts.interpolation
        self.resample = _PIL_RESAMPLE[interp]
        self.interpolation = interpolation_mode(interp)
        self.large = large
        self.resize_short = eval_resize_size(opts)
        self.hflip = opts.hflip
        self.rrc = v2.RandomResizedCrop(self.crop, scale=(0.08, 1.0))
        photometric = train_photometric(opts) if train else []
        self.photometric = v2.Compose(photometric) if photometric else None
        self.lighting = float(opts.pca_lighting)
        self.random_erase = float(opts.random_erase)
        self.eraser = v2.RandomErasing(p=1.0, value=0) if self.random_erase > 0 else None

    # ------------------------------------------------------------------ geometry
    def _train_box(self, im: Image.Image) -> Tuple[int, int, int, int]:
        if self.large:
            return erandom_crop_box(im.size[0], im.size[1], self.crop)
        p = self.rrc.make_params([im])  # torchvision's sampler, reading only the header size
        return p["top"], p["left"], p["height"], p["width"]

    def _box_resize(self, data: bytes, im: Image.Image, box: Tuple[int, int, int, int]) -> torch.Tensor:
        """Crop ``box`` (top, left, h, w) of the encoded image and resize it to crop x crop."""
        top, left, h, w = box
        width, height = im.size
        out = self.crop
        if im.format in _JPEG and w >= 2 * out and h >= 2 * out:
            # Reduced-size DCT decoding: ask for the smallest scale whose box is still >= out.
            im.draft(self.mode, (math.ceil(width * out / w), math.ceil(height * out / h)))
            sx, sy = im.size[0] / width, im.size[1] / height
            pil = im.convert(self.mode).resize(
                (out, out), self.resample, box=(left * sx, top * sy, (left + w) * sx, (top + h) * sy))
            return _to_chw(pil)
        img = self._decode(data, im)
        return F.resized_crop(img, top, left, h, w, [out, out], interpolation=self.interpolation,
                              antialias=True)

    def _decode(self, data: bytes, im: Image.Image) -> torch.Tensor:
        if decode_image is not None and im.format in _TV_DECODES:
            with warnings.catch_warnings():
                # torchvision 0.29 deprecates its decoders (for torchcodec); still the fastest here.
                warnings.simplefilter("ignore", DeprecationWarning)
                try:
                    return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                        mode=self.read_mode)
                except RuntimeError as e:  # torchvision reports broken files as RuntimeError
                    raise OSError(str(e)) from e
        return _to_chw(im.convert(self.mode))  # formats torchvision cannot decode (BMP, TIFF)

    def _eval_image(self, data: bytes, im: Image.Image) -> torch.Tensor:
        width, height = im.size
        if self.large:
            return self._box_resize(data, im, ecenter_crop_box(width, height, self.crop))
        # Resize the short side to S (torchvision's rounding), then centre crop.
        s = self.resize_short
        short, long_ = min(width, height), max(width, height)
        new_long = int(s * long_ / short)
        size = (s, new_long) if width <= height else (new_long, s)  # (w, h)
        if im.format in _JPEG and short >= 2 * s:
            im.draft(self.mode, size)
            img = _to_chw(im.convert(self.mode).resize(size, self.resample))
        else:
            img = F.resize(self._decode(data, im), [size[1], size[0]],
                           interpolation=self.interpolation, antialias=True)
        return F.center_crop(img, [self.crop, self.crop])

    # ------------------------------------------------------------------ one sample
    def _load(self, index: int) -> Tuple[torch.Tensor, int]:
        ds = self.dataset
        for _ in range(min(len(ds), 100)):
            try:
                data = ds.read_bytes(index)
                with Image.open(io.BytesIO(data)) as im:
                    img = self._box_resize(data, im, self._train_box(im)) if self.train \
                        else self._eval_image(data, im)
                return img, ds.targets[index]
            except _READ_ERRORS as e:
                index = ds.unreadable(index, e)
        raise DataError(f"no readable image found near {ds.where(index)}")

    # ------------------------------------------------------------------ draws after the crop
    # In this order, from the keyed RNG; the GPU-decode sample (gpu_decode.py) makes the same
    # draws through these methods, so its flips, jitter and params are this path's.
    def _draw_flip(self) -> bool:
        return bool(self.hflip and torch.rand(1).item() < 0.5)

    def _draw_params(self, img: torch.Tensor) -> torch.Tensor:
        """Lighting alphas and erase box; ``img`` is only asked its (C, H, W) shape."""
        params = torch.zeros(NUM_PARAMS)
        if self.eraser is not None and torch.rand(1).item() < self.random_erase:
            p = self.eraser.make_params([img])  # torchvision's box sampler
            if p["v"] is not None:
                params[3:] = torch.tensor([p["i"], p["j"], p["h"], p["w"]], dtype=torch.float32)
        if self.lighting > 0:
            params[:3] = torch.randn(3) * self.lighting
        return params

    def __call__(self, index: int):
        img, label = self._load(index)
        if not self.train:
            return img, label
        if self._draw_flip():
            img = img.flip(-1)
        if self.photometric is not None:
            img = self.photometric(img)
        return img, label, self._draw_params(img)


def fast_collate(batch: Sequence[Tuple]) -> Tuple[torch.Tensor, ...]:
    """Stack uint8 CHW samples into an (N, C, H, W) batch with NHWC memory (channels_last), in
    shared memory when called in a worker; labels to int64; params (if any) to (N, 7)."""
    images = default_collate([s[0].permute(1, 2, 0) for s in batch]).permute(0, 3, 1, 2)
    labels = torch.tensor([s[1] for s in batch], dtype=torch.int64)
    if len(batch[0]) > 2:
        return images, labels, torch.stack([s[2] for s in batch])
    return images, labels


def normalize_batch(images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                    params: Optional[torch.Tensor] = None, lighting: bool = False,
                    erase: bool = False, channels_last: bool = True) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 ``(x / 255 + lighting_offset - mean) / std``, then zero the
    erase boxes; the ``params`` columns are those of ``FastJpegSample`` (used only when
    ``lighting`` / ``erase`` are on). Runs on whatever device ``images`` is on."""
    dev = images.device
    std_t = torch.as_tensor(std, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    scale = 1.0 / (255.0 * std_t)
    bias = -mean_t / std_t
    if lighting and params is not None:
        offset = lighting_offset(params[:, :3].to(dev, torch.float32))
        bias = bias + offset.view(-1, 3, 1, 1) / std_t
    n, c, h, w = images.shape
    bias = bias.expand(n, c, 1, 1)
    if c > 1 and images.permute(0, 2, 3, 1).is_contiguous():
        # NHWC memory: broadcasting (1, C, 1, 1) over it runs an inner loop of length C (slow on
        # CPU). View each row as W*C values instead, with the per-channel factors tiled along it.
        rows = images.permute(0, 2, 3, 1).reshape(n, h, w * c)
        scale_row = scale.view(1, 1, 1, c).expand(1, 1, w, c).reshape(1, 1, w * c)
        bias_row = bias.reshape(n, 1, 1, c).expand(n, 1, w, c).reshape(n, 1, w * c)
        x = rows.to(torch.float32)
        torch.addcmul(bias_row, x, scale_row, out=x)  # x * scale + bias in one pass
        x = x.view(n, h, w, c).permute(0, 3, 1, 2)  # NCHW shape, channels_last memory
    else:
        x = images.to(torch.float32)
        torch.addcmul(bias, x, scale, out=x)
    if erase and params is not None:
        box = params[:, 3:].to(dev).view(-1, 4, 1, 1)
        rows = torch.arange(x.shape[2], device=dev).view(1, 1, -1, 1)
        cols = torch.arange(x.shape[3], device=dev).view(1, 1, 1, -1)
        top, left, h, w = box[:, 0:1], box[:, 1:2], box[:, 2:3], box[:, 3:4]
        mask = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
        x.masked_fill_(mask, 0.0)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def identity_batch_transform(batch: Sequence[Any]) -> Tuple[Any, Any]:
    """The default float path's batch transform: ``(images, labels)`` unchanged."""
    return batch[0], batch[1]


class BatchTransform:
    """Raw batch (after transfer to the device) -> ``(float images, labels)``.

    Float batches (the default path) pass through unchanged; uint8 batches of the fast path go
    through ``normalize_batch`` with this transform's mean/std and switches.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], lighting: bool = False,
                 erase: bool = False, channels_last: bool = True,
                 cpu_threads: Optional[int] = None) -> None:
        self.mean, self.std = tuple(mean), tuple(std)
        self.lighting, self.erase, self.channels_last = lighting, erase, channels_last
        self.cpu_threads = cpu_threads

    def __call__(self, batch: Sequence[Any]) -> Tuple[torch.Tensor, torch.Tensor]:
        images, labels = batch[0], batch[1]
        if images.is_floating_point():
            return images, labels
        params = batch[2] if len(batch) > 2 else None
        with _capped_threads(self.cpu_threads if images.device.type == "cpu" else None):
            return normalize_batch(images, self.mean, self.std, params, lighting=self.lighting,
                                   erase=self.erase, channels_last=self.channels_last), labels

    def __repr__(self) -> str:
        return (f"BatchTransform(mean={self.mean}, std={self.std}, lighting={self.lighting}, "
                f"erase={self.erase}, channels_last={self.channels_last}, "
                f"cpu_threads={self.cpu_threads})")


@contextlib.contextmanager
def _capped_threads(n: Optional[int]):
    """At most ``n`` intra-op threads inside the block (None: unchanged). The result of an
    elementwise op does not depend on the thread count."""
    before = torch.get_num_threads()
    if n is None or before <= n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_device_transform(opts: DataOptions) -> BatchTransform:
    """The batch transform to apply after moving a batch of ``opts``' loaders to the device.

    With DataLoader workers and a CPU device, the normalisation runs on one thread: the workers
    are decoding on the same cores, and a multi-threaded elementwise op in the main process only
    fights them for the cores (benchmarks/dataloader.py with 2 main threads: see docs/data.md)."""
    mean, std = channel_stats(opts)
    return BatchTransform(mean, std, lighting=opts.pca_lighting > 0, erase=opts.random_erase > 0,
                          channels_last=opts.channels_last,
                          cpu_threads=1 if opts.workers > 0 else None)
