"""Data-loading throughput: our fast JPEG path vs torchvision's classification reference.

Writes a temporary JPEG image folder with an ImageNet-like size mix (most images about 500x375 or
500x333, either orientation; about 15% larger, up to 1600x1200), photographic content cut from
scikit-learn's two sample photos, quality 90. Then measures images/s from files to a normalised
float batch of 64 at 224 (decode + RandomResizedCrop + flip + normalise) for

* ``ours (fast_jpeg)``: our train loader (``make_train_loader``, as ``create_loaders`` builds it)
  with ``fast_jpeg=True`` (uint8 through collation) plus ``loader.batch_transform`` on every
  batch (the normalise-after-transfer step; with no GPU it runs in the main process, counted),
* ``ours (default)``: the default float path (transforms.v2 on PIL images),
* ``torchvision reference``: ``ImageFolder`` + PIL decode, RandomResizedCrop,
  RandomHorizontalFlip, PILToTensor, ConvertImageDtype, Normalize (torchvision's
  references/classification preset),

with the same number of workers (persistent) and batch size, interleaved, one warm-up epoch
each, median of ``--trials`` timed epochs. Prints a markdown table and writes
``{"speedup_vs_torchvision": x, ...}`` (ratio of the medians; ``speedup_paired_median`` is the
median of the per-trial ratios, less sensitive to load drifting between trials) with the machine
to ``benchmarks/results/dataloader.json`` (``--json PATH``: elsewhere).

    python benchmarks/dataloader.py --workers 2 --images 400 --trials 5
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.record import write_result  # noqa: E402
from resnest_engine.data import DataOptions  # noqa: E402
from resnest_engine.data.options import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from resnest_engine.data.datasets import ImageFolderSplit  # noqa: E402
from resnest_engine.data.loaders import make_train_loader  # noqa: E402


def make_jpeg_folder(root: str, num_images: int, classes: int = 10, seed: int = 0) -> Dict[str, int]:
    """Write ROOT/train/<class>/*.jpg (and a tiny val split); return size-bucket counts."""
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(a) for a in load_sample_images().images]  # two 640x427 photos
    rng = np.random.default_rng(seed)
    counts = {"~500x375/500x333": 0, "larger (<=1600x1200)": 0}
    for split, n in (("train", num_images), ("val", classes)):
        for k in range(n):
            src = photos[int(rng.integers(len(photos)))]
            if rng.random() < 0.15:
                long_side = int(rng.integers(800, 1601))
                size = (long_side, long_side * 3 // 4)
                counts["larger (<=1600x1200)"] += split == "train"
            else:
                size = (500, 375) if rng.random() < 0.5 else (500, 333)
                counts["~500x375/500x333"] += split == "train"
            if rng.random() < 0.25:
                size = size[::-1]  # portrait
            # A random crop of the photo with the target aspect ratio, resized to the target.
            sw, sh = src.size
            aspect = size[0] / size[1]
            cw = min(sw, int(sh * aspect)) * rng.uniform(0.6, 1.0)
            ch = cw / aspect
            x0 = rng.uniform(0, sw - cw)
            y0 = rng.uniform(0, sh - ch)
            im = src.resize(size, Image.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
            folder = os.path.join(root, split, f"c{k % classes:02d}")
            os.makedirs(folder, exist_ok=True)
            im.save(os.path.join(folder, f"{k:05d}.jpg"), quality=90)
    return counts


def torchvision_reference_loader(root: str, batch: int, workers: int) -> torch.utils.data.DataLoader:
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    tf = T.Compose([
        T.RandomResizedCrop(224, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
        T.RandomHorizontalFlip(0.5),
        T.PILToTensor(),
        T.ConvertImageDtype(torch.float),
        T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ])
    ds = ImageFolder(os.path.join(root, "train"), transform=tf)
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                       drop_last=True, persistent_workers=workers > 0)


def our_loader(root: str, batch: int, workers: int, fast: bool):
    # The reference pipeline has no colour jitter or lighting: switch off the recipe defaults.
    opts = DataOptions(dataset="imagefolder", root=root, crop_size=224, workers=workers,
                       fast_jpeg=fast, pin_memory=False, color_jitter=0.0, pca_lighting=0.0)
    ds = ImageFolderSplit(root, "train")
    return make_train_loader(ds, opts, batch, seed=0, num_replicas=1, rank=0)


def epoch_runner(loader, post: Callable) -> Callable[[int], float]:
    """A function running one epoch of ``loader`` (with ``post`` on each batch); returns img/s."""
    state = {"epoch": 0}

    def run() -> float:
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(state["epoch"])
        state["epoch"] += 1
        images = 0
        start = time.perf_counter()
        for batch in loader:
            x, _ = post(batch)
            assert x.dtype == torch.float32 and x.shape[1:] == (3, 224, 224)
            images += x.shape[0]
        return images / (time.perf_counter() - start)

    return run


def main(argv: List[str] = None) -> Dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--main-threads", type=int, default=1,
                   help="torch threads of the main process (which runs our normalise step); "
                        "1 by default: the workers already occupy the cores")
    p.add_argument("--no-default-path", action="store_true", help="skip our float path")
    p.add_argument("--json", type=str, default=None,
                   help="results file (default benchmarks/results/dataloader.json)")
    args = p.parse_args(argv)
    if args.trials < 1 or args.images < args.batch:
        p.error("need --trials >= 1 and --images >= --batch")

    torch.set_num_threads(args.main_threads)
    with tempfile.TemporaryDirectory(prefix="resnest_dl_bench_") as root:
        t0 = time.perf_counter()
        counts = make_jpeg_folder(root, args.images)
        gen_s = time.perf_counter() - t0
        fast = our_loader(root, args.batch, args.workers, fast=True)
        runners = {
            "ours (fast_jpeg)": epoch_runner(fast, fast.batch_transform),
            "torchvision reference": epoch_runner(
                torchvision_reference_loader(root, args.batch, args.workers), lambda b: (b[0], b[1])),
        }
        if not args.no_default_path:
            default = our_loader(root, args.batch, args.workers, fast=False)
            runners["ours (default float path)"] = epoch_runner(default, default.batch_transform)
        for run in runners.values():  # warm-up: worker start-up, page cache
            run()
        results: Dict[str, List[float]] = {name: [] for name in runners}
        for _ in range(args.trials):  # interleaved
            for name, run in runners.items():
                results[name].append(run())

    med = {name: statistics.median(v) for name, v in results.items()}
    ref = med["torchvision reference"]
    print(f"\n{args.images} JPEGs ({', '.join(f'{k}: {v}' for k, v in counts.items())}), quality 90; "
          f"batch {args.batch} at 224, {args.workers} workers, {args.main_threads} main-process "
          f"thread(s), {args.trials} interleaved trials; "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs\n")
    print("| pipeline | images/s (median) | min | max | vs torchvision |")
    print("|---|---:|---:|---:|---:|")
    for name, v in results.items():
        print(f"| {name} | {med[name]:.1f} | {min(v):.1f} | {max(v):.1f} | {med[name] / ref:.2f}x |")
    paired = statistics.median(a / b for a, b in zip(results["ours (fast_jpeg)"],
                                                     results["torchvision reference"]))
    print(f"\nmedian of per-trial ratios (fast_jpeg / torchvision): {paired:.2f}x")
    out = {
        "speedup_vs_torchvision": med["ours (fast_jpeg)"] / ref,
        "speedup_paired_median": paired,
        "ours_fast_jpeg_img_s": med["ours (fast_jpeg)"],
        "torchvision_reference_img_s": ref,
        "ours_default_img_s": med.get("ours (default float path)"),
        "trials": results, "workers": args.workers, "main_threads": args.main_threads, "images": args.images, "batch": args.batch,
        "size_mix": counts, "generate_s": gen_s, "cpus": os.cpu_count(),
    }
    return write_result("dataloader", (
        f"images/s from {args.images} JPEG files to a normalised float batch of {args.batch} at "
        f"224, our fast JPEG path vs torchvision's reference, {args.workers} workers, "
        f"{args.main_threads} main-process thread(s), median of {args.trials} interleaved "
        f"epochs"), out, args.json)


if __name__ == "__main__":
    main()
