"""``resnest-train``'s command line, with the official script's launch flags folded into ours."""
from __future__ import annotations

import argparse
from typing import Tuple
from urllib.parse import urlsplit

from .console import UsageError

__all__ = ["build_parser", "parse_dist_url", "resolve_official_flags"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="resnest-train", description="Train or evaluate a ResNeSt recipe.",
        epilog="Trailing KEY=VALUE arguments override config keys, e.g. TRAINING.EPOCHS=5.")
    p.add_argument("--config-file", required=True, help="YAML recipe")
    p.add_argument("--outdir", help="run directory (default: output/<config file stem>)")
    p.add_argument("--resume", help="checkpoint path, or 'auto' for the newest valid one in --outdir")
    p.add_argument("--eval-only", action="store_true",
                   help="evaluate --resume's weights (default: the --outdir run's final, best or "
                   "newest weights), write OUTDIR/eval_metrics.json and exit")
    p.add_argument("--report", action="store_true",
                   help="with --eval-only: also write OUTDIR/report.html (curves, confusion "
                   "matrix, per-class precision/recall, most confident mistakes; as "
                   "resnest-report; needs pip install 'resnest-engine[report]')")
    p.add_argument("--export", metavar="NAME",
                   help="write --resume's weights (default: the --outdir run's final, best or newest "
                   "weights) and exit: NAME.pth when NAME has no suffix (the official habit), .pt/.pth "
                   "a state_dict, .pt2 a torch.export program, .onnx an ONNX model with its "
                   "preprocessing and class names (needs pip install 'resnest-engine[onnx]')")
    p.add_argument("--force", action="store_true",
                   help="move an existing --outdir aside to DIR.bak-<timestamp> and start afresh")
    p.add_argument("--keep-previous", type=int, metavar="N",
                   help="with --force: keep only the N newest runs moved aside (DIR.bak-*) and "
                   "delete older ones (default: keep all; `make digits` keeps 1)")
    p.add_argument("--nproc-per-node", type=int, help="processes to spawn on this node "
                   "(default: one per visible GPU when there are several, else this one)")
    p.add_argument("--nnodes", "--world-size", dest="nnodes", type=int,
                   help="number of nodes (--world-size: the official script's name)")
    p.add_argument("--node-rank", type=int, help="this node's rank")
    p.add_argument("--rank", type=int, help="the official script's name for --node-rank")
    p.add_argument("--master-addr", help="address of the rank-0 node")
    p.add_argument("--master-port", type=int, help="port of the rank-0 node")
    p.add_argument("--dist-url", metavar="tcp://HOST:PORT",
                   help="the official script's way to give --master-addr and --master-port")
    p.add_argument("--backend", choices=("gloo", "nccl"), help="default: nccl on GPUs, else gloo")
    p.add_argument("--dist-backend", choices=("gloo", "nccl"),
                   help="the official script's name for --backend")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (our format, YAML) on stdout and the "
                   "translation of an official config on stderr; start and write nothing")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    return p


def _check_dist_flags(a: argparse.Namespace) -> None:
    if a.nproc_per_node is not None and a.nproc_per_node < 1:
        raise UsageError(f"--nproc-per-node must be >= 1, got {a.nproc_per_node}")
    if a.nnodes is not None and a.nnodes < 1:
        raise UsageError(f"--nnodes must be >= 1, got {a.nnodes}")
    nnodes = a.nnodes or 1
    if a.node_rank is not None and not 0 <= a.node_rank < nnodes:
        raise UsageError(f"--node-rank must be in [0, {nnodes - 1}] for --nnodes {nnodes}, "
                         f"got {a.node_rank}")
    if nnodes > 1:
        if a.nproc_per_node is None:
            raise UsageError("--nnodes > 1 needs --nproc-per-node")
        if a.node_rank is None or a.master_addr is None or a.master_port is None:
            raise UsageError("--nnodes > 1 needs --node-rank, --master-addr and --master-port")
    if a.master_port is not None and not 0 < a.master_port < 65536:
        raise UsageError(f"--master-port must be in 1..65535, got {a.master_port}")


def parse_dist_url(url: str) -> Tuple[str, int]:
    """``tcp://HOST:PORT`` (the official ``--dist-url``) -> ``(HOST, PORT)``; a :class:`UsageError`
    naming ``--dist-url`` and the expected form for anything else."""
    bad = UsageError(f"--dist-url must be tcp://HOST:PORT with a port in 1..65535, got {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number or is out of range
        raise bad from None
    if (parts.scheme != "tcp" or not parts.hostname or port is None or not 0 < port < 65536
            or parts.path not in ("", "/") or parts.query or parts.fragment
            or parts.username is not None):
        raise bad
    return parts.hostname, port


def _merge_alias(a: argparse.Namespace, dest: str, flag: str, value, alias: str) -> None:
    """Set ``a.<dest>`` (spelt ``flag``) from the official spelling ``alias``; both given with
    different values is a :class:`UsageError` naming both."""
    if value is None:
        return
    ours = getattr(a, dest)
    if ours is not None and ours != value:
        raise UsageError(f"{alias} and {flag} disagree: {alias} gives {value}, {flag} {ours}; "
                         "pass one of them")
    setattr(a, dest, value)


def resolve_official_flags(a: argparse.Namespace) -> argparse.Namespace:
    """Fold the official script's launch flags into ours: ``--rank`` -> ``node_rank``,
    ``--dist-url tcp://HOST:PORT`` -> ``master_addr``/``master_port``, ``--dist-backend`` ->
    ``backend`` (``--world-size`` is parsed as ``--nnodes`` already)."""
    _merge_alias(a, "node_rank", "--node-rank", a.rank, "--rank")
    if a.dist_url is not None:
        host, port = parse_dist_url(a.dist_url)
        _merge_alias(a, "master_addr", "--master-addr", host, f"--dist-url {a.dist_url}")
        _merge_alias(a, "master_port", "--master-port", port, f"--dist-url {a.dist_url}")
    _merge_alias(a, "backend", "--backend", a.dist_backend, "--dist-backend")
    return a
