"""Test data and faults made for real: the bundled digits written as PNG folders, a tmpfs of its
own for tests that fill a disk (mounting needs root; CI runs as root), a bit flipped in a file."""
import struct
import subprocess
import zipfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np


def write_digits(root: Path, train_per_class: int, val_per_class: int,
                 names: Optional[Sequence[str]] = None, ext: str = ".png") -> None:
    """The first images of each digit, 8x8 upscaled to 32x32 grey PNGs (``ext`` ".jpg": JPEGs,
    quality 95), as ROOT/train/<name>/*.png and ROOT/val/<name>/*.png (deterministic);
    ``names[d]`` names digit d's folder (default: the digit)."""
    from PIL import Image
    from sklearn.datasets import load_digits
    digits = load_digits()
    seen = {}
    for image, label in zip(digits.images, digits.target):
        n = seen.get(int(label), 0)
        if n >= train_per_class + val_per_class:
            continue
        seen[int(label)] = n + 1
        split = "train" if n < train_per_class else "val"
        pixels = np.round(image * (255.0 / 16.0)).astype(np.uint8)
        folder = names[int(label)] if names is not None else str(label)
        path = root / split / folder / f"{n:03d}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "L").resize((32, 32), Image.NEAREST).save(
            path, **({"quality": 95} if ext in (".jpg", ".jpeg") else {}))


class Tmpfs:
    """A tmpfs of ``size`` (e.g. ``"8m"``) mounted at ``path``; ``unmount()`` when done."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.path)],
                       check=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


def flip_tensor_bit(path: Path) -> None:
    """Flip one bit inside the first tensor's data of a ``torch.save`` zip file: the pickle still
    loads, and ``torch.load`` returns the changed value without a word."""
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if "/data/" in i.filename and i.file_size > 16)
    data = bytearray(Path(path).read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    data[info.header_offset + 30 + name_len + extra_len + 5] ^= 0x08
    Path(path).write_bytes(bytes(data))
