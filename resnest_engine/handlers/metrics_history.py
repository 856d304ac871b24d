"""``metrics.json``: final numbers, best numbers and a per-validation history."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from ..storage.files import atomic_write_text

__all__ = ["MetricsHistory"]


class MetricsHistory:
    """Tracks validations and writes ``metrics.json`` atomically after each one (rank 0).

    ``weights`` names the model whose numbers are final (``"ema"`` when EMA is on, else
    ``"raw"``); ``top1``/``top5``/``loss``/``epoch`` are its latest validation, ``best_*`` its best.
    No wall-clock values, so two runs of a recipe compare equal. ``state_dict`` goes into
    checkpoints so a resumed run keeps its history.
    """

    def __init__(self, path: Optional[Union[str, Path]], weights: str = "raw") -> None:
        self.path = Path(path) if path else None
        self.weights = weights
        self.history: List[Dict[str, Any]] = []
        self.best: Dict[str, Any] = {"best_top1": None, "best_top5": None, "best_epoch": None}

    def record(self, epoch: int, results: Dict[str, Dict[str, float]], lr: float,
               iteration: Optional[int] = None) -> None:
        """Add (or replace) ``epoch``'s entry; ``iteration`` is the trainer's at the validation,
        which places the entry on the same axis as the per-iteration training records."""
        raw = results["raw"]
        entry = {"epoch": epoch, "top1": raw["top1"], "top5": raw["top5"], "loss": raw["loss"], "lr": lr}
        if iteration is not None:
            entry["iteration"] = iteration
        if "ema" in results:
            entry.update(ema_top1=results["ema"]["top1"], ema_top5=results["ema"]["top5"],
                         ema_loss=results["ema"]["loss"])
        self.history = [h for h in self.history if h["epoch"] < epoch] + [entry]
        final = results[self.weights]
        if self.best["best_top1"] is None or final["top1"] > self.best["best_top1"]:
            self.best = {"best_top1": final["top1"], "best_top5": final["top5"], "best_epoch": epoch}

    def summary(self) -> Dict[str, Any]:
        last = self.history[-1] if self.history else {}
        prefix = "ema_" if self.weights == "ema" else ""
        out: Dict[str, Any] = {"weights": self.weights, "epoch": last.get("epoch")}
        out.update({k: last.get(prefix + k) for k in ("top1", "top5", "loss")})
        out.update(self.best)
        out["history"] = self.history
        return out

    def write(self) -> None:
        if self.path is None or idist.get_rank() != 0:
            return
        atomic_write_text(self.path, json.dumps(self.summary(), indent=2))

    def state_dict(self) -> Dict[str, Any]:
        return {"weights": self.weights, "history": list(self.history), "best": dict(self.best)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.history = list(state["history"])
        self.best = dict(state["best"])

    def attach(self, trainer: Engine, evaluators: Mapping[str, Engine],
               optimizer: Optional[torch.optim.Optimizer] = None) -> None:
        """Listen on each evaluator's ``COMPLETED``; once every one of ``evaluators`` has reported
        for the trainer's current epoch, record the entry (with ``optimizer``'s first LR) and
        write ``metrics.json``. Attach it before the best checkpointer, whose file holds the
        history (``attach_standard_handlers`` does)."""
        names = list(evaluators)
        pending: Dict[str, Dict[str, float]] = {}

        def _on_evaluated(evaluator: Engine, name: str) -> None:
            pending[name] = {k: float(evaluator.state.metrics[k]) for k in ("top1", "top5", "loss")}
            if all(n in pending for n in names):
                lr = optimizer.param_groups[0]["lr"] if optimizer is not None else float("nan")
                self.record(trainer.state.epoch, dict(pending), lr, trainer.state.iteration)
                pending.clear()
                self.write()

        for name, evaluator in evaluators.items():
            evaluator.add_event_handler(Events.COMPLETED, _on_evaluated, name)
