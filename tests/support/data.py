"""Helpers for the data tests: tiny image folders written with PIL."""
import os

import numpy as np
from PIL import Image


def write_image(path, size=(40, 30), seed=0, fmt=None, mode="RGB"):
    rng = np.random.default_rng(seed)
    w, h = size
    # Smooth gradient plus noise: cropping and resizing change the pixels visibly.
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / max(1, w - 1), yy * 255 / max(1, h - 1),
                     (xx + yy) * 127 / max(1, w + h - 2)], -1)
    arr = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path, format=fmt, **({"quality": 90} if str(path).endswith(".jpg") else {}))
    return path


def make_folder(root, layout, size=(40, 30), ext=".png"):
    """layout: {"train": {"cat": 3, "dog": 2}, "val": {...}} -> image files under root."""
    seed = 0
    for split, classes in layout.items():
        for name, count in classes.items():
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
            for k in range(count):
                write_image(os.path.join(root, split, name, f"{k:03d}{ext}"), size, seed)
                seed += 1
    return str(root)


def loader_batches(opts, epoch=1):
    """``(batches, num_classes)``: every batch of train epoch ``epoch`` and then of validation,
    through ``create_loaders(opts, 3, 2, seed=7)`` and the loaders' ``prepare_batch`` (loaders
    closed afterwards)."""
    from resnest_engine.data.loaders import close_loader, create_loaders
    train, val, n = create_loaders(opts, batch_size=3, test_batch_size=2, seed=7)
    try:
        train.sampler.set_epoch(epoch)
        return ([tuple(train.prepare_batch(b)) for b in train]
                + [tuple(val.prepare_batch(b)) for b in val]), n
    finally:
        close_loader(train)
        close_loader(val)


def assert_same_batches(a, b):
    """Two lists of ``(images, labels)`` batches, bitwise equal (and not empty)."""
    import torch
    assert len(a) == len(b) > 0
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
