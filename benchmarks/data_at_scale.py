"""Data at scale: read + decode + augment img/s of the same JPEGs as an image folder, local tar
shards, tar shards on a loopback S3 server, and Parquet in the Hugging Face Hub's layout.

Generates ``--images`` ImageNet-sized JPEGs (seeded random content: smooth colour fields plus
grain, about 500x375 in either orientation, quality 90, about 100-135 KB each, near ImageNet's
mean file size) into ``SRC/train/<class>/`` (and a small ``SRC/val/``), then writes them as

* ``shards``: ``resnest-shards SRC OUT`` (the command's own code, in-process; its time, scaled to
  10,000 images, is the ``conversion`` field),
* ``shards_s3``: that shard set uploaded to moto's S3 server (``ThreadedMotoServer`` on
  127.0.0.1, in this process, so it shares the cores), read as ``DATA.ROOT=s3://...`` through
  the local shard cache with prefetch, ``DATA.CACHE_DIR`` a fresh empty folder every round (the
  cache starts cold: every shard is fetched during the timed epoch),
* ``parquet``: the Hub's layout, ``data/train-00000-of-0000N.parquet`` with an ``image`` struct
  ``{bytes, path}``, an int64 ``label`` and the ``huggingface`` ClassLabel metadata, row groups
  of ``--parquet-row-group`` rows (100: what ``datasets`` writes for image datasets), files of
  at most 500 MB (what ``push_to_hub`` writes),

and times one epoch of the train loader of each, built by ``create_loaders`` (as ``resnest-train``
builds it) from the recipe's DATA keys (default ``recipes/imagenet_resnest50.yaml``: its train
transform at 224, RandomResizedCrop, flip, colour jitter, AutoAugment, PCA lighting, normalise)
with ``DATA.WORKERS=--workers``, ``DATA.CACHE=false`` and the default float path (the fast JPEG
path reads image folders only). Each timed epoch starts from a fresh loader (its workers'
start-up included, the same for every case), after one warm-up of a few batches on the folder
(imports, page cache). The cases are interleaved over ``--rounds`` rounds; a case's ``img_per_s``
is the median of its rounds. Goals (benchmarks/goals.py): shards >= 1.0x folder, shards_s3 >=
0.9x shards, parquet >= 0.9x shards.

Writes ``{"cases": [{"name", "img_per_s", "rounds_img_per_s", ...}], "conversion": {...}, ...}``
with the machine to ``benchmarks/results/data_at_scale.json`` (``--json PATH``: elsewhere).

    python benchmarks/data_at_scale.py                       # about 4-5 minutes on 2 cores
    python benchmarks/data_at_scale.py --smoke --json /tmp/d.json   # seconds: the shape only
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.record import write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CASES = ("folder", "shards", "shards_s3", "parquet")
#: The train order of each case (DATA.SHUFFLE): the folder's order for the local folder and
#: shards; the streaming order for the remote shards (a URL's default) and for Parquet, whose
#: reader decodes a row group at a time.
ORDERS = {"folder": "global", "shards": "global", "shards_s3": "window", "parquet": "window"}
#: Sizes (width, height) of the generated JPEGs: ImageNet's most common shapes.
SIZES = ((500, 375), (500, 375), (500, 333), (375, 500), (500, 400), (333, 500))
#: The most bytes of image data per Parquet file (``datasets``' ``push_to_hub`` shards at 500 MB).
PARQUET_FILE_BYTES = 500 * 10 ** 6
#: What ``datasets`` writes per row group for image datasets.
HUB_ROW_GROUP = 100
GENERATOR_VERSION = 1  # bump when the generated images change (a kept --data-dir is redone)
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1", "AWS_SESSION_TOKEN": "testing",
          "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


# --------------------------------------------------------------------------- the images
def _jpeg(args: Tuple[str, int, int, int]) -> int:
    """Write one seeded JPEG (smooth random colour field + grain, quality 90); its size."""
    from PIL import Image
    path, seed, index, max_side = args
    rng = np.random.default_rng([seed, index])
    w, h = SIZES[int(rng.integers(len(SIZES)))]
    if max(w, h) > max_side:  # --smoke: small images
        w, h = w * max_side // max(w, h), h * max_side // max(w, h)
    low = rng.integers(0, 256, size=(max(2, h // 24), max(2, w // 24), 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), dtype=np.int16)
    grain = float(rng.uniform(20, 36))  # about 105-135 KB at 500x375
    px = (base + rng.normal(0, grain, (h, w, 1)).astype(np.int16)
          + rng.normal(0, grain / 2, (h, w, 3)).astype(np.int16))
    Image.fromarray(np.clip(px, 0, 255).astype(np.uint8)).save(path, quality=90)
    return os.path.getsize(path)


def make_images(root: Path, train: int, val: int, classes: int, seed: int, max_side: int,
                procs: int) -> dict:
    """``root/{train,val}/cNN/NNNNNN.jpg``, the same files for the same arguments; a folder that
    already holds them (its ``generated.json`` says so) is kept as it is."""
    spec = {"version": GENERATOR_VERSION, "train": train, "val": val, "classes": classes,
            "seed": seed, "max_side": max_side}
    marker = root / "generated.json"
    if marker.exists():
        done = json.loads(marker.read_text())
        if done.get("spec") == spec:
            return dict(done["stats"], reused=True)
        raise SystemExit(f"--data-dir {root} holds images generated with other settings "
                         f"({done.get('spec')}); choose another folder or delete it")
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"--data-dir {root} is not empty and holds no generated.json")
    jobs = []
    for split, n, offset in (("train", train, 0), ("val", val, train)):
        for k in range(n):
            folder = root / split / f"c{k % classes:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            jobs.append((str(folder / f"{k:06d}.jpg"), seed, offset + k, max_side))
    t = time.perf_counter()
    with Pool(procs) as pool:
        sizes = pool.map(_jpeg, jobs, chunksize=16)
    stats = {"files": len(sizes), "mean_kb": sum(sizes) / len(sizes) / 1e3,
             "min_kb": min(sizes) / 1e3, "max_kb": max(sizes) / 1e3,
             "total_mb": sum(sizes) / 1e6, "generate_s": time.perf_counter() - t}
    marker.write_text(json.dumps({"spec": spec, "stats": stats}) + "\n")
    return dict(stats, reused=False)


# --------------------------------------------------------------------------- the other forms
def convert_to_shards(src: Path, out: Path, shard_size: int) -> dict:
    """``resnest-shards SRC OUT --shard-size N --no-progress``, in-process (no interpreter
    start-up in the time); seconds and seconds per 10,000 images."""
    from resnest_engine.cli.shards import main as shards_main
    images = sum(1 for p in src.rglob("*.jpg"))
    t = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        status = shards_main([str(src), str(out), "--shard-size", str(shard_size),
                              "--no-progress"])
    seconds = time.perf_counter() - t
    if status != 0:
        raise SystemExit(f"resnest-shards failed with status {status}")
    tars = list(out.rglob("*.tar"))
    return {"command": f"resnest-shards SRC OUT --shard-size {shard_size}", "images": images,
            "seconds": seconds, "s_per_10k_images": seconds * 10_000 / images,
            "shards": len(tars), "shard_mb": sum(p.stat().st_size for p in tars) / 1e6 / len(tars)}


def hub_metadata(classes: Sequence[str]) -> Dict[bytes, bytes]:
    """The ``huggingface`` schema metadata ``datasets`` writes: an Image and a ClassLabel."""
    features = {"image": {"_type": "Image"},
                "label": {"names": list(classes), "_type": "ClassLabel"}}
    return {b"huggingface": json.dumps({"info": {"features": features}}).encode()}


def folder_to_hub_parquet(src: Path, out: Path, row_group: int) -> dict:
    """``src/{train,val}`` as the Hub lays out an image dataset: ``out/data/train-*.parquet`` and
    ``validation-*.parquet``, rows in the image folder's order, files of at most 500 MB."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from resnest_engine.data.datasets import ImageFolderSplit
    t = time.perf_counter()
    classes, files = None, 0
    for split, name in (("train", "train"), ("val", "validation")):
        ds = ImageFolderSplit(str(src), split, classes=classes)
        classes = ds.classes
        sizes = [os.path.getsize(p) for p, _ in ds.samples]
        n_files = max(1, math.ceil(sum(sizes) / PARQUET_FILE_BYTES))
        bounds = [round(k * len(sizes) / n_files) for k in range(n_files + 1)]
        struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        for k in range(n_files):
            rows = ds.samples[bounds[k]:bounds[k + 1]]
            column = pa.array([{"bytes": Path(p).read_bytes(), "path": os.path.relpath(p, src)}
                               for p, _ in rows], type=struct)
            table = pa.table({"image": column,
                              "label": pa.array([y for _, y in rows], type=pa.int64())})
            table = table.replace_schema_metadata(hub_metadata(classes))
            path = out / "data" / f"{name}-{k:05d}-of-{n_files:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, str(path), row_group_size=row_group)
            files += 1
    return {"files": files, "row_group": row_group, "seconds": time.perf_counter() - t}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: The running S3 server's pid (its CPU seconds are recorded per S3 epoch).
SERVER: Dict[str, int] = {}


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """moto's standalone S3 server (``python -m moto.server``) on 127.0.0.1, in a process of its
    own as a real server would be (in a thread of this process it would compete with the loop
    being timed for the GIL), and this process's environment pointing at it (the DataLoader
    workers inherit it); yields the endpoint."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                raise RuntimeError("moto's S3 server did not start") from None
            time.sleep(0.2)
    SERVER["pid"] = server.pid
    env = dict(S3_ENV, AWS_ENDPOINT_URL=endpoint)
    saved = {k: os.environ.get(k) for k in list(env) + ["AWS_PROFILE"]}
    os.environ.update(env)
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield endpoint
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.terminate()
        server.wait(timeout=30)


def upload(folder: Path, endpoint: str, bucket: str, prefix: str) -> Tuple[str, float]:
    """Every file under ``folder`` to ``s3://bucket/prefix/``; the URL and the seconds taken."""
    import boto3
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    t = time.perf_counter()
    s3.create_bucket(Bucket=bucket)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")
    return f"s3://{bucket}/{prefix}", time.perf_counter() - t


# --------------------------------------------------------------------------- the measurement
def loader_of(recipe: str, dataset: str, root: str, crop: int, workers: int, batch: int,
              cache_dir: Optional[str] = None, order: str = "global"):
    """The train loader ``create_loaders`` builds from the recipe's DATA keys in ``order``
    (``DATA.SHUFFLE``; val loader closed: only the train loader is timed)."""
    from resnest_engine.config.loading import load_config
    from resnest_engine.data import close_loader, create_loaders
    from resnest_engine.workflows.from_config import data_options
    overrides = [f"DATA.DATASET={dataset}", f"DATA.ROOT={root}", f"DATA.CROP_SIZE={crop}",
                 f"DATA.WORKERS={workers}", "DATA.CACHE=false", "DATA.FAST_JPEG=false",
                 f"DATA.SHUFFLE={order}"]
    if cache_dir is not None:
        overrides.append(f"DATA.CACHE_DIR={cache_dir}")
    opts = data_options(load_config(recipe, overrides))
    train, val, _ = create_loaders(opts, batch, batch, seed=0)
    close_loader(val)
    return train


def time_epoch(loader, batches: Optional[int] = None) -> Tuple[float, int, float]:
    """``(img/s, images, seconds)`` of one pass (``batches``: stop after that many)."""
    import torch
    images = 0
    start = time.perf_counter()
    for k, (x, y) in enumerate(loader):
        assert x.dtype == torch.float32 and x.shape[0] == y.shape[0]
        images += int(y.shape[0])
        if batches is not None and k + 1 >= batches:
            break
    seconds = time.perf_counter() - start
    return images / seconds, images, seconds


def run_case(name: str, roots: Dict[str, str], args, scratch: Path, round_: int) -> dict:
    from resnest_engine.data import close_loader
    dataset = {"folder": "imagefolder", "shards": "shards", "shards_s3": "shards",
               "parquet": "parquet"}[name]
    cache_dir = None
    if name == "shards_s3":  # a fresh, empty cache: every shard is fetched in this epoch
        cache_dir = str(scratch / f"s3-cache-{round_}")
    t = time.perf_counter()
    loader = loader_of(args.recipe, dataset, roots[name], args.crop, args.workers, args.batch,
                       cache_dir, ORDERS[name])
    setup = time.perf_counter() - t
    server_before = process_cpu_s(SERVER["pid"]) if cache_dir is not None else 0.0
    try:
        img_s, images, seconds = time_epoch(loader)
    finally:
        close_loader(loader)
    out = {"img_per_s": img_s, "images": images, "seconds": seconds, "setup_s": setup}
    if cache_dir is not None:  # what serving the shards cost the shared cores
        out["server_cpu_s"] = process_cpu_s(SERVER["pid"]) - server_before
        shutil.rmtree(cache_dir, ignore_errors=True)
    return out


def main(argv: Optional[List[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2500,
                   help="train images (default 2500: about 4-5 minutes in all on 2 cores)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    p.add_argument("--crop", type=int, default=224, help="train crop side (default 224)")
    p.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--rounds", type=int, default=5,
                   help="interleaved rounds of the 4 cases, one epoch each (default 5: the "
                        "folder and shard cases differ by less than a 3-round median moves)")
    p.add_argument("--shard-size", type=int, default=100,
                   help="resnest-shards --shard-size (default 100: 25 shards of the 2,500 "
                        "images, so that a window of 4 shards is a small part of the set, as "
                        "4 of ImageNet's 1,281 shards of 1,000 are)")
    p.add_argument("--parquet-row-group", type=int, default=HUB_ROW_GROUP,
                   help=f"Parquet rows per row group (default {HUB_ROW_GROUP}, as the Hub's)")
    p.add_argument("--recipe", default=str(REPO / "recipes" / "imagenet_resnest50.yaml"),
                   help="the recipe whose DATA keys (train transform) are used")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated images")
    p.add_argument("--data-dir", help="keep the generated JPEGs here and reuse them on a rerun "
                                      "(default: a temporary folder, removed at the end)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny: 48 small images at crop 32, shards of 16, 1 round (the shape "
                        "only, seconds; not a measurement)")
    p.add_argument("--json", help="results file (default benchmarks/results/data_at_scale.json)")
    args = p.parse_args(argv)
    max_side = 500
    if args.smoke:
        args.images, args.crop, args.batch, args.rounds = 48, 32, 8, 1
        args.shard_size, args.parquet_row_group, max_side = 16, 8, 64
    if args.smoke and not args.json:
        p.error("--smoke writes no results file into benchmarks/results: give --json PATH")
    if args.images < 2 * args.batch or args.rounds < 1 or args.workers < 0:
        p.error("need --images >= 2 x --batch, --rounds >= 1 and --workers >= 0")
    classes = 10
    val = classes * 2

    import torch
    torch.set_num_threads(1)  # the workers occupy the cores; the main process only collects
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="resnest_data_at_scale_") as tmp:
        scratch = Path(tmp)
        src = Path(args.data_dir) if args.data_dir else scratch / "folder"
        images = make_images(src, args.images, val, classes, args.seed, max_side,
                             max(1, args.workers))
        print(f"{images['files']} JPEGs, mean {images['mean_kb']:.0f} KB "
              f"({images['min_kb']:.0f}-{images['max_kb']:.0f} KB) in {src}"
              + (" (reused)" if images["reused"] else f", {images['generate_s']:.1f} s"),
              file=sys.stderr)
        conversion = convert_to_shards(src, scratch / "shards", args.shard_size)
        print(f"resnest-shards: {conversion['seconds']:.1f} s for {conversion['images']} images "
              f"= {conversion['s_per_10k_images']:.1f} s per 10,000", file=sys.stderr)
        parquet = folder_to_hub_parquet(src, scratch / "parquet", args.parquet_row_group)
        with s3_server() as endpoint:
            url, upload_s = upload(scratch / "shards", endpoint, "bench", "imagenet-like")
            roots = {"folder": str(src), "shards": str(scratch / "shards"), "shards_s3": url,
                     "parquet": str(scratch / "parquet")}
            warm = loader_of(args.recipe, "imagefolder", str(src), args.crop, args.workers,
                             args.batch)
            time_epoch(warm, batches=3)  # imports, codecs, page cache: nothing timed
            from resnest_engine.data import close_loader
            close_loader(warm)
            rounds: Dict[str, List[dict]] = {name: [] for name in CASES}
            for r in range(args.rounds):
                for name in CASES:
                    got = run_case(name, roots, args, scratch, r)
                    rounds[name].append(got)
                    print(f"round {r + 1}/{args.rounds} {name}: {got['img_per_s']:.1f} img/s "
                          f"({got['images']} images, {got['seconds']:.1f} s)", file=sys.stderr)
    total_s = time.perf_counter() - t_all

    cases = []
    for name in CASES:
        runs = rounds[name]
        cases.append({"name": name, "order": ORDERS[name],
                      "img_per_s": statistics.median(r["img_per_s"] for r in runs),
                      "rounds_img_per_s": [r["img_per_s"] for r in runs],
                      "images_per_epoch": runs[0]["images"],
                      "setup_s": statistics.median(r["setup_s"] for r in runs),
                      **({"server_cpu_s": statistics.median(r["server_cpu_s"] for r in runs)}
                         if "server_cpu_s" in runs[0] else {})})
    speed = {c["name"]: c["img_per_s"] for c in cases}
    ratios = {"shards_vs_folder": speed["shards"] / speed["folder"],
              "shards_s3_vs_shards": speed["shards_s3"] / speed["shards"],
              "parquet_vs_shards": speed["parquet"] / speed["shards"]}
    print(f"\n{args.images} train JPEGs (mean {images['mean_kb']:.0f} KB), crop {args.crop}, "
          f"batch {args.batch}, {args.workers} workers, median of {args.rounds} interleaved "
          f"rounds\n\n| case | img/s (median) | rounds |\n|---|---:|---|")
    for c in cases:
        print(f"| {c['name']} | {c['img_per_s']:.1f} | "
              f"{', '.join(f'{v:.1f}' for v in c['rounds_img_per_s'])} |")
    print("\n" + ", ".join(f"{k} {v:.3f}x" for k, v in ratios.items())
          + f"\nresnest-shards: {conversion['s_per_10k_images']:.1f} s per 10,000 images; "
          f"whole benchmark {total_s:.0f} s")
    numbers = {
        "cases": cases, "ratios": ratios, "conversion": conversion,
        "images": {k: v for k, v in images.items() if k != "reused"},
        "parquet": parquet, "s3_upload_s": upload_s, "train_images": args.images,
        "val_images": val, "classes": classes, "workers": args.workers, "crop": args.crop,
        "batch": args.batch, "rounds": args.rounds, "shard_size": args.shard_size,
        "recipe": os.path.relpath(args.recipe, REPO) if Path(args.recipe).is_absolute()
        else args.recipe, "smoke": args.smoke, "total_s": total_s,
    }
    shape = "about 500x375" if max_side == 500 else f"at most {max_side} px"
    measured = (f"read + decode + augment img/s of {args.images} generated JPEGs ({shape}, "
                f"quality 90, mean {images['mean_kb']:.0f} KB) at {args.crop}, the train "
                f"transform of {numbers['recipe']}, batch {args.batch}, {args.workers} workers: "
                f"an image folder, local tar shards (--shard-size {args.shard_size}), the shards "
                f"on a loopback S3 server (moto, cold cache, prefetch; DATA.SHUFFLE window, the "
                f"default for a URL) and Hub-layout Parquet (row groups of "
                f"{args.parquet_row_group}; DATA.SHUFFLE window); one epoch from a fresh loader per "
                f"case, median of {args.rounds} interleaved rounds")
    if args.smoke:
        measured = "SMOKE RUN, not a measurement: " + measured
    return write_result("data_at_scale", measured, numbers, args.json)


if __name__ == "__main__":
    main()
