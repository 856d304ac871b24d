"""``DATA.DECODE: gpu``: the workers read the encoded bytes, the device decodes each batch.

Per sample, in the worker (``EncodedJpegSample``): read the bytes (``dataset.read_bytes``: image
folders, tar shards and Parquet alike), read the image header (no decode), and make the draws of
the CPU fast path (``FastJpegSample``) with its own methods and in its order, from the RNG keyed
to (seed, epoch, index): the crop box, the flip, the ColorJitter factors and order, the
random-erasing box and the PCA-lighting alphas. So the crops, flips and augmentation of sample i
in epoch e are the CPU path's. The sample is ``(payload, label, geometry)``: ``payload`` is the
JPEG file's bytes as a uint8 tensor, and ``geometry`` a float64 row holding the draws
(``COLUMNS``).

Files the device decoder should not get are decoded in the worker instead (the CPU fallback):
non-JPEG members (PNG, WebP, ...), CMYK/YCCK JPEGs, and JPEGs that do not end with the
end-of-image marker (truncated files then meet the dataset's corrupt-sample rule, as on the CPU
path, instead of failing a whole batch on the device). Their payload is the uint8 image already
cropped and resized to crop x crop, with the same torchvision calls the device makes
(``crop_and_resize``); the flip and jitter are applied on the device for both kinds.

``encoded_collate`` concatenates the variable-length payloads into one uint8 tensor plus their
sizes: one shared-memory block per batch between the worker and the main process, where a list
would pass one per sample. After the loader, ``DecodeBatchTransform.from_host`` (what
``ImageLoader.prepare_batch`` and the device prefetcher call) keeps the payloads and geometry on
the host, decodes the JPEGs with one ``torchvision.io.decode_jpeg(list, device=...)`` call
(nvjpeg on CUDA, libjpeg-turbo on the CPU), crops and resizes each image
(``transforms.v2.functional``, antialiased as the CPU path), flips, jitters, stacks, and runs the
fast path's ``normalize_batch`` (lighting, erasing, channels_last). On the CPU device this is the
code the tests run.
"""
from __future__ import annotations

import functools
import io
import warnings
from dataclasses import replace
from typing import Any, List, Optional, Sequence, Tuple

import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from .errors import DataError
from .jpeg import _READ_ERRORS, ENCODED_DATASETS, NUM_PARAMS, BatchTransform, FastJpegSample
from .options import DataOptions, decode_conflict
from .transforms import ecenter_crop_box

try:  # deprecated since torchvision 0.29 in favour of torchcodec; still the batched nvjpeg call
    from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg
except ImportError:  # pragma: no cover - a torchvision without its image extension
    decode_jpeg = encode_jpeg = None


__all__ = ["EncodedJpegSample", "encoded_collate", "DecodeBatchTransform", "resolve_decode",
           "nvjpeg_available", "crop_and_resize", "COLUMNS", "ENCODED_DATASET_NAMES"]

#: The datasets whose samples are encoded files (DATA.DECODE gpu reads their bytes).
ENCODED_DATASET_NAMES = ("imagefolder", "imagenet", "shards", "parquet")

# The geometry row of a sample (float64: the box and the fn order are small integers, the
# jitter factors and params float32 values, all exact in float64).
KIND, TOP, LEFT, HEIGHT, WIDTH, FLIP = range(6)
PARAMS = slice(6, 6 + NUM_PARAMS)            # lighting alphas + erase box (normalize_batch's)
FN_ORDER = slice(PARAMS.stop, PARAMS.stop + 4)  # ColorJitter's fn_idx
FACTORS = slice(FN_ORDER.stop, FN_ORDER.stop + 3)  # brightness, contrast, saturation (NaN: none)
COLUMNS = FACTORS.stop
JPEG_BYTES, DECODED = 0.0, 1.0  # KIND: bytes for the device decoder / image decoded in a worker


def crop_and_resize(img: torch.Tensor, box: Optional[Sequence[int]], crop: int,
                    interpolation: v2.InterpolationMode, resize_short: int, large: bool
                    ) -> torch.Tensor:
    """uint8 (C, H, W) -> (C, crop, crop) on ``img``'s device: the train ``box`` (top, left,
    height, width) resized (antialiased) to crop x crop; eval (``box`` None): ECenterCrop from
    the large-crop size on, else the short side resized to ``resize_short`` and centre-cropped."""
    if box is None and large:
        box = ecenter_crop_box(img.shape[-1], img.shape[-2], crop)
    if box is None:
        img = F.resize(img, [resize_short], interpolation=interpolation, antialias=True)
        return F.center_crop(img, [crop, crop])
    top, left, h, w = (int(v) for v in box)
    return F.resized_crop(img, top, left, h, w, [crop, crop], interpolation=interpolation,
                          antialias=True)


def _device_decodes(data: bytes, im: Image.Image) -> bool:
    """Whether the device decoder gets this file: a baseline/progressive JPEG in grey or
    YCbCr that ends with the end-of-image marker (see the module doc for the others)."""
    return (im.format == "JPEG" and im.mode in ("L", "RGB")
            and data.rstrip(b"\0").endswith(b"\xff\xd9"))


class EncodedJpegSample(FastJpegSample):
    """``index -> (payload uint8 1-D, label, geometry float64 (COLUMNS,))`` for DATA.DECODE gpu,
    over the datasets of the fast path. The draws are the fast path's (its methods, its order)."""

    def __init__(self, dataset: Any, opts: DataOptions, train: bool) -> None:
        super().__init__(dataset, opts, train)
        conflict = decode_conflict(opts)
        if conflict is not None:  # validate_options refuses these for gpu; auto resolves to cpu
            raise DataError(f"DATA.DECODE gpu cannot run {conflict} on the device")
        self.channels = 1 if opts.in_chans == 1 else 3
        # the photometric steps left are ColorJitter's (the policies are refused above)
        self.jitter = self.photometric.transforms[0] if self.photometric is not None else None
        # RandomErasing's sampler asks only the (C, H, W) shape of the cropped image
        self._crop_shape = torch.zeros(1, dtype=torch.uint8).expand(self.channels, self.crop,
                                                                   self.crop)

    def _read(self, index: int) -> Tuple[torch.Tensor, int, Optional[Tuple[int, ...]], float]:
        ds = self.dataset
        for _ in range(min(len(ds), 100)):
            try:
                data = ds.read_bytes(index)
                with Image.open(io.BytesIO(data)) as im:
                    box = self._train_box(im) if self.train else None  # the CPU path's draw
                    if _device_decodes(data, im):
                        payload = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                        return payload, ds.targets[index], box, JPEG_BYTES
                    img = crop_and_resize(self._decode(data, im), box, self.crop,
                                          self.interpolation, self.resize_short, self.large)
                return img.reshape(-1).contiguous(), ds.targets[index], box, DECODED
            except _READ_ERRORS as e:
                index = ds.unreadable(index, e)
        raise DataError(f"no readable image found near {ds.where(index)}")

    def __call__(self, index: int):
        payload, label, box, kind = self._read(index)
        row = torch.zeros(COLUMNS, dtype=torch.float64)
        row[KIND] = kind
        if not self.train:
            return payload, label, row
        row[TOP:WIDTH + 1] = torch.tensor(box, dtype=torch.float64)
        row[FLIP] = float(self._draw_flip())
        if self.jitter is not None:  # the draws ColorJitter makes where the CPU path runs it
            p = self.jitter.make_params([self._crop_shape])
            row[FN_ORDER] = p["fn_idx"].to(torch.float64)
            row[FACTORS] = torch.tensor([float("nan") if p[k] is None else p[k] for k in
                                         ("brightness_factor", "contrast_factor",
                                          "saturation_factor")], dtype=torch.float64)
        row[PARAMS] = self._draw_params(self._crop_shape).to(torch.float64)
        return payload, label, row


def encoded_collate(batch: Sequence[Tuple]) -> Tuple[torch.Tensor, ...]:
    """``(payloads concatenated uint8, sizes int64 (N,), labels int64 (N,), geometry float64
    (N, COLUMNS))``: one tensor for all the variable-length payloads (one shared-memory block
    per batch instead of one per sample), split again on the host by ``sizes``."""
    payloads = [s[0] for s in batch]
    sizes = torch.tensor([p.numel() for p in payloads], dtype=torch.int64)
    labels = torch.tensor([s[1] for s in batch], dtype=torch.int64)
    return torch.cat(payloads), sizes, labels, torch.stack([s[2] for s in batch])


def _on_host(t: torch.Tensor) -> torch.Tensor:
    return t if t.device.type == "cpu" else t.cpu()  # only when a caller moved the batch


class DecodeBatchTransform:
    """Host batch of ``encoded_collate`` -> ``(float images, labels)`` on the device.

    ``from_host(batch, device)`` decodes the JPEG payloads in one batched ``decode_jpeg`` call
    on ``device``, crops and resizes each image, applies the flips and ColorJitter draws, stacks
    and normalises (``normalize`` is the fast path's ``BatchTransform``). Calling the transform
    on a batch works on the device of its labels (a batch moved by hand is brought back to the
    host first: ``ImageLoader.prepare_batch`` and the prefetcher avoid that copy)."""

    def __init__(self, opts: DataOptions, train: bool, normalize: BatchTransform) -> None:
        sample = FastJpegSample(None, opts, train)  # the fast path's geometry settings
        self.train, self.crop, self.channels = train, sample.crop, 1 if opts.in_chans == 1 else 3
        self.interpolation, self.large = sample.interpolation, sample.large
        self.resize_short = sample.resize_short
        self.jitter = sample.photometric.transforms[0] if sample.photometric is not None else None
        self.mode = "GRAY" if opts.in_chans == 1 else "RGB"
        self.normalize = normalize

    def _decode(self, payloads: List[torch.Tensor], device: torch.device) -> List[torch.Tensor]:
        if not payloads:
            return []
        if decode_jpeg is None:  # pragma: no cover - torchvision without its image extension
            raise DataError("DATA.DECODE gpu needs torchvision's image extension "
                            "(torchvision.io.decode_jpeg); set DATA.DECODE: cpu")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29: torchcodec
            try:
                return decode_jpeg(payloads, mode=ImageReadMode[self.mode], device=device)
            except RuntimeError as e:
                raise DataError(f"DATA.DECODE gpu: the decoder on {device} failed on a batch "
                                f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                                f"set DATA.DECODE: cpu to decode in the workers") from None

    def _jitter(self, img: torch.Tensor, row: Sequence[float]) -> torch.Tensor:
        factors = [None if f != f else f for f in row[FACTORS]]  # NaN: that factor is off
        params = dict(fn_idx=[int(v) for v in row[FN_ORDER]], brightness_factor=factors[0],
                      contrast_factor=factors[1], saturation_factor=factors[2], hue_factor=None)
        return self.jitter.transform(img, params)  # torchvision's kernels, the CPU path's

    def from_host(self, batch: Sequence[Any], device: Any = None,
                  non_blocking: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        flat, sizes, labels, geometry = batch[:4]
        device = torch.device(device if device is not None else "cpu")
        flat, geometry = _on_host(flat), _on_host(geometry)
        rows = geometry.tolist()  # host memory: no device sync
        chunks = torch.split(flat, _on_host(sizes).tolist())
        jpegs = [i for i, r in enumerate(rows) if r[KIND] == JPEG_BYTES]
        decoded = dict(zip(jpegs, self._decode([chunks[i] for i in jpegs], device)))
        images = []
        for i, r in enumerate(rows):
            if i in decoded:
                box = (r[TOP], r[LEFT], r[HEIGHT], r[WIDTH]) if self.train else None
                img = crop_and_resize(decoded[i], box, self.crop, self.interpolation,
                                      self.resize_short, self.large)
            else:  # decoded, cropped and resized in the worker
                img = chunks[i].view(self.channels, self.crop, self.crop).to(
                    device, non_blocking=non_blocking)
            if self.train and r[FLIP]:
                img = img.flip(-1)
            if self.train and self.jitter is not None:
                img = self._jitter(img, r)
            images.append(img.permute(1, 2, 0))
        # (N, C, H, W) in NHWC memory, as fast_collate stacks the CPU path's batches
        images = torch.stack(images).permute(0, 3, 1, 2)
        # The whole (pinned) geometry goes over and is sliced there: a host-side slice and cast
        # would be a pageable copy, which waits for the stream's earlier work.
        params = geometry.to(device, non_blocking=non_blocking)[:, PARAMS].to(torch.float32)
        labels = labels.to(device, non_blocking=non_blocking)
        return self.normalize((images, labels, params))

    def __call__(self, batch: Sequence[Any]) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.from_host(batch, batch[2].device)

    def __repr__(self) -> str:
        return (f"DecodeBatchTransform(train={self.train}, crop={self.crop}, "
                f"mode={self.mode}, normalize={self.normalize!r})")


@functools.lru_cache(maxsize=None)
def _probe_nvjpeg(device: str) -> Optional[str]:
    """None when torchvision decodes a JPEG on ``device`` with nvjpeg, else why not."""
    import torchvision
    if decode_jpeg is None:
        return "torchvision has no image extension"
    if getattr(torchvision.version, "cuda", None) is None:
        return "torchvision is a CPU-only build"
    # torchvision 0.29 has no flag for nvjpeg: a build without it registers decode_jpegs_cuda
    # but raises "not compiled with nvJPEG support" when called, so decode one tiny JPEG.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            tiny = encode_jpeg(torch.zeros(3, 8, 8, dtype=torch.uint8))
            decode_jpeg([tiny], device=torch.device(device))
    except RuntimeError as e:
        return f"torchvision's nvjpeg decode failed: {str(e).splitlines()[0] if str(e) else e}"
    return None


def nvjpeg_available(device: Any) -> Tuple[bool, str]:
    """``(available, why)``: whether torchvision decodes JPEGs with nvjpeg on ``device``."""
    device = torch.device(device)
    if device.type != "cuda":
        return False, f"the device is {device.type.upper()}"
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    why = _probe_nvjpeg(str(device))
    return why is None, why or "CUDA with nvjpeg"


def resolve_decode(opts: DataOptions, device: Any) -> Tuple[DataOptions, str]:
    """``(opts with decode cpu or gpu, why)`` for ``opts.decode`` (cpu, gpu or auto) on
    ``device``: auto is gpu for an encoded dataset on CUDA with nvjpeg and nothing that the
    device path refuses, else cpu."""
    if opts.decode != "auto":
        return opts, "as set"
    if opts.dataset not in ENCODED_DATASET_NAMES:
        choice, why = "cpu", f"auto: DATA.DATASET {opts.dataset} has no encoded image files"
    elif decode_conflict(opts) is not None:
        choice, why = "cpu", f"auto: {decode_conflict(opts)} is on"
    else:
        ok, reason = nvjpeg_available(device)
        choice, why = ("gpu" if ok else "cpu"), f"auto: {reason}"
    return replace(opts, decode=choice), why


def check_encoded(dataset: Any, opts: DataOptions, key: str) -> None:
    """A one-line DataError unless ``dataset`` gives encoded bytes (``key`` asked for them)."""
    if not isinstance(dataset, ENCODED_DATASETS):
        raise DataError(f"{key} needs an image-folder or container dataset "
                        f"({', '.join(ENCODED_DATASET_NAMES)}), not data.dataset={opts.dataset}")
