"""An image folder written as Parquet with pyarrow, laid out as the Hugging Face Hub's image
datasets are: a struct column ``image`` {bytes, path}, an int64 ``label`` and the ``huggingface``
schema metadata naming the classes (what ``datasets.Dataset.to_parquet`` writes)."""
import json
import os
from pathlib import Path
from typing import Dict, Optional, Sequence

from resnest_engine.data.datasets import ImageFolderSplit


def hub_metadata(classes: Sequence[str], image: str = "image", label: str = "label"
                 ) -> Dict[bytes, bytes]:
    features = {image: {"_type": "Image"},
                label: {"names": list(classes), "_type": "ClassLabel"}}
    return {b"huggingface": json.dumps({"info": {"features": features}}).encode()}


def write_parquet(path, images, labels, paths=None, classes=None, image="image", label="label",
                  struct=True, row_group_size=4, label_type=None):
    """One Parquet file: ``images`` (bytes) and ``labels`` as the Hub lays them out."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    if struct:
        paths = list(paths) if paths is not None else [None] * len(images)
        column = pa.array([{"bytes": b, "path": p} for b, p in zip(images, paths)],
                          type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    else:
        column = pa.array(list(images), type=pa.binary())
    table = pa.table({image: column, label: pa.array(labels, type=label_type or pa.int64())})
    if classes is not None:
        table = table.replace_schema_metadata(hub_metadata(classes, image, label))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, str(path), row_group_size=row_group_size)


def folder_to_parquet(src, out, layout: str = "hub", files_per_split: int = 2,
                      row_group_size: int = 4, metadata: bool = True,
                      image: str = "image", label: str = "label",
                      split_names: Optional[Dict[str, str]] = None):
    """``src/{train,val}/<class>/*`` as Parquet under ``out``, rows in the image folder's order
    (its classes, the train split's for val), split over ``files_per_split`` files. ``layout``
    "hub": ``out/data/train-00000-of-00002.parquet``, ``validation-...``; "split":
    ``out/train/part-0.parquet``, ``out/val/...``."""
    names = split_names or {"train": "train", "val": "validation"}
    classes = None
    for split in ("train", "val"):
        ds = ImageFolderSplit(str(src), split, classes=classes)
        classes = ds.classes
        blobs = [open(p, "rb").read() for p, _ in ds.samples]
        rel = [os.path.relpath(p, src) for p, _ in ds.samples]
        n = len(blobs)
        bounds = [round(k * n / files_per_split) for k in range(files_per_split + 1)]
        for k in range(files_per_split):
            a, b = bounds[k], bounds[k + 1]
            if layout == "hub":
                name = f"{names[split]}-{k:05d}-of-{files_per_split:05d}.parquet"
                path = Path(out) / "data" / name
            else:
                path = Path(out) / split / f"part-{k}.parquet"
            write_parquet(path, blobs[a:b], ds.targets[a:b], rel[a:b],
                          classes if metadata else None, image, label,
                          row_group_size=row_group_size)
    return str(out)
