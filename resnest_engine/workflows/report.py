"""A finished run on one page: :func:`write_report` writes ``RUN_DIR/report.html``
(``resnest-report`` is its command line, :mod:`resnest_engine.cli.report`; ``resnest-train
--eval-only --report`` writes it too).

    from resnest_engine.workflows.report import write_report
    path = write_report("output/digits")   # -> output/digits/report.html

The page is one self-contained HTML file (figures and thumbnails are PNG ``data:`` URIs, the
style is inline; it references no other file) holding:

- the curves: the training loss, top-1 and learning rate at every logged step (the run's
  TensorBoard records under ``tb/``, :mod:`resnest_engine.storage.event_records`) beside the validation
  loss, top-1 and top-5 (raw weights, and EMA when the run kept one) and the learning rate of
  each validation (``metrics.json``);
- the confusion matrix of the run's weights (final, else best, else newest, as ``--eval-only``
  picks them) on the validation split, as a figure and as a table of counts;
- per-class precision, recall and support, one row per class name;
- the most confident mistakes (:data:`MISTAKES` at most) as thumbnails of the images the model
  saw (the eval transform's crop, de-normalised), each with its true and predicted label and the
  predicted probability.

The validation data goes through the run's own eval transform and loader
(:func:`resnest_engine.data.loaders.create_eval_loader`, as ``--eval-only``), in the class order stored
with the run; the train split is never read. The figures need matplotlib (``pip install
'resnest-engine[report]'``).
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from PIL import Image

from ..config import Config, load_config
from ..data.options import channel_stats
from ..errors import InputError, one_line
from .evaluate import eval_setup, stored_class_names
from ..storage.event_records import read_scalars
from ..storage.files import atomic_write_text
from .from_config import data_options
from ..handlers.checkpoint import BEST_PREFIX
from .run_files import find_run_weights, refuse_overwrite
from ..storage.run_dir import RunDir

__all__ = ["MISTAKES", "REPORT_FILE", "MatplotlibMissingError", "require_matplotlib",
           "write_report"]

REPORT_FILE = "report.html"
#: How many of the most confident mistakes the report shows.
MISTAKES = 16
#: Up to this many classes the confusion matrix is also an HTML table of counts (a 1000-class
#: table would be a million cells); the figure and the per-class table are always there.
TABLE_MAX_CLASSES = 100
#: Up to this many classes the confusion-matrix figure names every class and prints the counts.
FIGURE_LABEL_MAX_CLASSES = 40
INSTALL_HINT = "pip install 'resnest-engine[report]'"

PathLike = Union[str, "os.PathLike[str]"]


class MatplotlibMissingError(InputError):
    """matplotlib (the ``report`` extra) is not installed: a user error naming the extra."""


def require_matplotlib() -> None:
    """Raise :class:`MatplotlibMissingError` now if the figures cannot be drawn, so that a command
    fails before it spends an evaluation pass."""
    _figure_class()


def _figure_class():
    """matplotlib's ``Figure`` bound to the Agg canvas. Imported here, not at the top, on
    purpose: matplotlib is an optional extra (``report``), and importing this module (or the
    package) must work without it; only drawing a report needs it. No pyplot: the figures never
    touch pyplot's global state or the process's backend choice."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise MatplotlibMissingError(f"the report's figures need matplotlib, which is not "
                                     f"installed ({one_line(e)}): {INSTALL_HINT}") from None

    def new_figure(**kwargs: Any):
        fig = Figure(**kwargs)
        FigureCanvasAgg(fig)
        return fig
    return new_figure


# --------------------------------------------------------------------------- what is measured
@dataclass
class _Mistake:
    index: int  # position in the val split
    true: int
    pred: int
    prob: float  # softmax probability of the predicted class
    true_prob: float  # ... and of the true class
    image: torch.Tensor  # the normalised CHW tensor the model saw (CPU, float32)


@dataclass
class _Evaluation:
    confusion: np.ndarray  # [true, predicted] counts
    metrics: Dict[str, float]  # the evaluator's top1 / top5 (percent) and loss
    mistakes: List[_Mistake] = field(default_factory=list)
    names: List[str] = field(default_factory=list)  # a name per val sample (file), or empty


def _sample_names(loader: Any) -> List[str]:
    """The file of each val sample when the dataset is an image folder (for captions), else []."""
    base = getattr(loader.dataset, "source", None)
    samples = getattr(base, "samples", None)
    root = getattr(base, "split_dir", None)
    if not isinstance(samples, list):
        return []
    out = []
    for path, _ in samples:
        try:
            out.append(os.path.relpath(path, root) if root else str(path))
        except ValueError:
            out.append(str(path))
    return out


def _collect(evaluator: Engine, loader: Any, num_classes: int, keep: int) -> _Evaluation:
    """Run ``evaluator`` over ``loader`` once, counting the confusion matrix from its own logits
    (so the diagonal is its top-1 exactly) and keeping the ``keep`` most confident mistakes."""
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64)
    mistakes: List[_Mistake] = []
    seen = [0]

    def on_iteration(engine: Engine) -> None:
        logits, y = engine.state.output
        logits, y = logits.detach().float().cpu(), y.detach().cpu().long()
        pred = logits.argmax(dim=1)  # what ignite's Accuracy counts as the prediction
        confusion.add_(torch.bincount(y * num_classes + pred, minlength=num_classes ** 2))
        probs = torch.softmax(logits, dim=1)
        conf = probs.gather(1, pred[:, None])[:, 0]
        start = seen[0]
        seen[0] += len(y)
        wrong = (pred != y).nonzero()[:, 0].tolist()
        floor = mistakes[-1].prob if len(mistakes) >= keep else -1.0
        wrong = [i for i in wrong if float(conf[i]) >= floor]
        if not wrong or keep <= 0:
            return
        # Only a batch with a new candidate is normalised again, on the CPU (the same batch
        # transform the evaluator applied), for its thumbnails.
        images, _ = loader.prepare_batch(engine.state.batch, torch.device("cpu"))
        for i in wrong:
            mistakes.append(_Mistake(start + i, int(y[i]), int(pred[i]), float(conf[i]),
                                     float(probs[i, y[i]]),
                                     images[i].detach().float().contiguous().clone()))
        mistakes.sort(key=lambda m: (-m.prob, m.index))
        del mistakes[keep:]

    evaluator.add_event_handler(Events.ITERATION_COMPLETED, on_iteration)
    evaluator.run(loader)
    metrics = {k: float(evaluator.state.metrics[k]) for k in ("top1", "top5", "loss")}
    return _Evaluation(confusion.view(num_classes, num_classes).numpy(), metrics, mistakes,
                       _sample_names(loader))


def _evaluate(cfg: Config, weights: Path, what: str, classes: Optional[List[str]],
              note: Callable[[str], None]) -> Tuple[_Evaluation, List[str]]:
    """The weights on the val split, as :func:`resnest_engine.workflows.evaluate.evaluate` runs them."""
    evaluator, loader, names = eval_setup(cfg, weights, classes)
    note(f"evaluating the {what} {weights} on {len(loader.dataset)} validation images "
         f"({idist.device()})")
    try:
        return _collect(evaluator, loader, len(names), MISTAKES), names
    finally:
        close = getattr(loader, "close", None)
        if close is not None:
            close()


def per_class(confusion: np.ndarray) -> List[Tuple[Optional[float], Optional[float], int]]:
    """``(precision, recall, support)`` of each class from a ``[true, predicted]`` confusion
    matrix; a precision (recall) is None when the class is never predicted (never present)."""
    out = []
    for c in range(confusion.shape[0]):
        tp = int(confusion[c, c])
        predicted, support = int(confusion[:, c].sum()), int(confusion[c, :].sum())
        out.append((tp / predicted if predicted else None, tp / support if support else None,
                    support))
    return out


# --------------------------------------------------------------------------- figures
def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figure_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", pad_inches=0.1)  # nothing clipped
    return _png_uri(buf.getvalue())


def _training_records(run_dir: Path, history: List[Dict[str, Any]]) -> Dict[str, List[Tuple[float, float]]]:
    """The TensorBoard scalars the run logged every ``LOGGING.LOG_EVERY`` steps (window means of
    the training loss and top-1, and the LR), placed on the epoch axis with the iterations per
    epoch that ``metrics.json`` records; empty when either is missing."""
    per_epoch = [h["iteration"] / h["epoch"] for h in history
                 if isinstance(h.get("iteration"), int) and isinstance(h.get("epoch"), int)
                 and h["epoch"] > 0]
    if not per_epoch:
        return {}
    steps = per_epoch[-1]
    scalars = read_scalars(RunDir(run_dir).tensorboard, ("train/loss", "train/top1", "train/lr"))
    return {tag.split("/", 1)[1]: [(step / steps, value) for step, value in points]
            for tag, points in scalars.items()}


def _curves_figure(new_figure, history: List[Dict[str, Any]],
                   training: Dict[str, List[Tuple[float, float]]]) -> Optional[str]:
    if not history and not training:
        return None
    fig = new_figure(figsize=(11, 7), layout="constrained")
    axes = fig.subplots(2, 2)
    epochs = [h.get("epoch") for h in history]
    panels = [(axes[0, 0], "loss", "loss"), (axes[0, 1], "top-1 (%)", "top1"),
              (axes[1, 0], "top-5 (%)", "top5"), (axes[1, 1], "learning rate", "lr")]
    for ax, title, key in panels:
        if key in training:
            xs, ys = zip(*training[key])
            label = "LR, every logged step" if key == "lr" else "training, every logged step"
            ax.plot(xs, ys, "-", color="tab:gray", linewidth=1, label=label)
        for prefix, label, style in (("", "validation", "o-"), ("ema_", "validation, EMA", "s--")):
            if key == "lr" and prefix:
                continue
            pts = [(e, h.get(prefix + key)) for e, h in zip(epochs, history)
                   if e is not None and isinstance(h.get(prefix + key), (int, float))]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, style, label="at validation" if key == "lr" else label,
                        markersize=4)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        if len(epochs) < 15 and any(e is not None for e in epochs):
            ax.set_xticks(sorted({e for e in epochs if e is not None} | {0}))
    return _figure_uri(fig)


def _confusion_figure(new_figure, confusion: np.ndarray, names: Sequence[str]) -> str:
    n = confusion.shape[0]
    side = min(14.0, max(5.5, 2.5 + 0.45 * n))
    fig = new_figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.subplots()
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="share of the true class's images")
    named = n <= FIGURE_LABEL_MAX_CLASSES
    ax.set_xlabel("predicted class" if named else "predicted class (#, as in the per-class table)")
    ax.set_ylabel("true class" if named else "true class (#)")
    ax.set_title(f"confusion matrix ({int(confusion.sum())} validation images)")
    if named:
        size = 10 if n <= 12 else 8 if n <= 25 else 7
        # long names keep both ends, which is where names of one family differ
        shown = [s if len(s) <= 24 else s[:11] + "…" + s[-12:] for s in map(str, names)]
        ax.set_xticks(range(n), shown, rotation=45, ha="right", rotation_mode="anchor",
                      fontsize=size)
        ax.set_yticks(range(n), shown, fontsize=size)
        for t in range(n):
            for p in range(n):
                if confusion[t, p]:
                    ax.text(p, t, str(int(confusion[t, p])), ha="center", va="center",
                            fontsize=size, color="white" if share[t, p] > 0.5 else "black")
    return _figure_uri(fig)


def _thumbnail_uri(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> str:
    """The normalised CHW tensor the model saw, de-normalised, as a PNG of about 128 px."""
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    pixels = ((image * s + m).clamp(0, 1) * 255).round().to(torch.uint8)
    array = pixels.permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        pil = Image.fromarray(array[:, :, 0], "L")
    else:
        pil = Image.fromarray(np.ascontiguousarray(array[:, :, :3]), "RGB")
    side = max(pil.size)
    if side < 128:  # small crops (CIFAR, digits): enlarge with visible pixels
        factor = max(1, 128 // side)
        pil = pil.resize((pil.width * factor, pil.height * factor), Image.NEAREST)
    elif side > 160:
        pil.thumbnail((160, 160), Image.BICUBIC)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    return _png_uri(buf.getvalue())


# --------------------------------------------------------------------------- the page
_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 1.5em auto;
       max-width: 1180px; padding: 0 1em; color: #1f2328; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em;
     margin-top: 1.6em; }
p.note { color: #59636e; font-size: 0.92em; }
dl.summary { display: grid; grid-template-columns: max-content 1fr; gap: 0.15em 1em; }
dl.summary dt { font-weight: 600; } dl.summary dd { margin: 0; overflow-wrap: anywhere; }
img.figure { max-width: 100%; height: auto; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.55em; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.confusion td { text-align: right; min-width: 2.2em; }
table.confusion th.corner { font-weight: normal; color: #59636e; font-size: 0.85em; }
table.confusion td.diag { font-weight: 700; outline: 1px solid #1f2328; }
.mistakes { display: flex; flex-wrap: wrap; gap: 12px; }
figure.mistake { margin: 0; width: 168px; border: 1px solid #d0d7de; border-radius: 6px;
                 padding: 6px; background: #f6f8fa; text-align: center; }
figure.mistake img { display: block; margin: 0 auto 4px; max-width: 160px; }
figure.mistake figcaption { font-size: 0.82em; overflow-wrap: anywhere; text-align: left; }
.true { color: #1a7f37; } .pred { color: #cf222e; } .file { color: #59636e; font-size: 0.9em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fraction(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.4f}"


def _confusion_table(confusion: np.ndarray, names: Sequence[str]) -> str:
    rows = confusion.sum(axis=1)
    head = "".join(f'<th scope="col">{_e(n)}</th>' for n in names)
    lines = ['<div class="scroll"><table class="confusion" id="confusion-matrix">',
             f'<thead><tr><th class="corner">true \\ predicted</th>{head}</tr></thead><tbody>']
    for t, name in enumerate(names):
        cells = []
        for p in range(len(names)):
            count = int(confusion[t, p])
            share = count / rows[t] if rows[t] else 0.0
            # the cell's shade: its share of the true class's images
            colour = (f"background: rgba(31, 111, 235, {0.08 + 0.6 * share:.2f});"
                      if count else "")
            diag = ' class="diag"' if t == p else ""
            cells.append(f'<td{diag} style="{colour}">{count}</td>')
        lines.append(f'<tr><th scope="row">{_e(name)}</th>{"".join(cells)}</tr>')
    lines.append("</tbody></table></div>")
    return "\n".join(lines)


def _per_class_table(confusion: np.ndarray, names: Sequence[str]) -> str:
    lines = ['<div class="scroll"><table id="per-class">',
             '<thead><tr><th class="num">#</th><th>class</th><th class="num">precision</th>'
             '<th class="num">recall</th><th class="num">support</th></tr></thead><tbody>']
    for i, (name, (precision, recall, support)) in enumerate(zip(names, per_class(confusion))):
        lines.append(f'<tr><td class="num">{i}</td><th scope="row">{_e(name)}</th>'
                     f'<td class="num">{_fraction(precision)}'
                     f'</td><td class="num">{_fraction(recall)}</td>'
                     f'<td class="num">{support}</td></tr>')
    lines.append("</tbody></table></div>")
    return "\n".join(lines)


def _mistakes_html(ev: _Evaluation, names: Sequence[str], mean, std) -> str:
    figures = []
    for m in ev.mistakes:
        where = ev.names[m.index] if m.index < len(ev.names) else f"val image #{m.index}"
        true, pred = names[m.true], names[m.pred]
        figures.append(
            f'<figure class="mistake" data-true="{_e(true)}" data-pred="{_e(pred)}" '
            f'data-prob="{m.prob:.6f}" data-index="{m.index}">'
            f'<img src="{_thumbnail_uri(m.image, mean, std)}" alt="{_e(where)}" '
            f'title="{_e(where)}">'
            f'<figcaption><span class="true">true: {_e(true)}</span><br>'
            f'<span class="pred">predicted: {_e(pred)} ({m.prob:.3f})</span><br>'
            f'<span class="file">p(true) {m.true_prob:.3f} · {_e(where)}</span>'
            f'</figcaption></figure>')
    return '<div class="mistakes" id="mistakes">\n' + "\n".join(figures) + "\n</div>"


def _read_history(run_dir: Path) -> Tuple[List[Dict[str, Any]], Dict[str, Any], Optional[str]]:
    """metrics.json's history and summary, or why there are none."""
    path = RunDir(run_dir).metrics
    if not path.is_file():
        return [], {}, f"{path} does not exist (the run has not validated yet, or this is not a " \
                       "training run directory): no curves"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return [], {}, f"cannot read {path}: {one_line(e)}; no curves"
    history = data.get("history") if isinstance(data, dict) else None
    if not isinstance(history, list):
        return [], {}, f"{path} holds no history: no curves"
    return [h for h in history if isinstance(h, dict)], data, None


def _page(run_dir: Path, cfg: Config, weights: Path, what: str, ev: _Evaluation,
          names: List[str], history: List[Dict[str, Any]], summary: Dict[str, Any],
          history_note: Optional[str], new_figure) -> str:
    opts = data_options(cfg)
    mean, std = channel_stats(opts)
    confusion = ev.confusion
    total = int(confusion.sum())
    correct = int(np.trace(confusion))
    top1 = 100.0 * correct / total if total else float("nan")
    n_wrong = total - correct
    items = [("run directory", run_dir), ("model", cfg.MODEL.NAME),
             ("weights", f"{what}: {weights}"),
             ("dataset", f"{cfg.DATA.DATASET}, validation split"),
             ("validation images", total), ("classes", len(names)),
             ("top-1", f"{top1:.2f}% ({correct} of {total})"),
             ("top-5", f"{ev.metrics['top5']:.2f}%"),
             ("validation loss", f"{ev.metrics['loss']:.4f}")]
    if summary.get("best_top1") is not None:
        items.append(("best top-1 in training",
                      f"{summary['best_top1']:.2f}% at epoch {summary.get('best_epoch')} "
                      f"({summary.get('weights', 'raw')} weights)"))
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>Report: {_e(run_dir.name or run_dir)}</title>",
             f"<style>{_STYLE}</style></head><body>",
             f"<h1>Report: {_e(run_dir.name or run_dir)}</h1>", '<dl class="summary">']
    parts += [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items]
    parts.append("</dl>")

    parts.append('<h2 id="curves">Training curves</h2>')
    training = _training_records(run_dir, history)
    curves = _curves_figure(new_figure, history, training)
    if curves is None:
        parts.append(f'<p class="note">{_e(history_note or "metrics.json has no validations")}</p>')
    else:
        source = ("Lines: the training loss and top-1 (means over the steps since the previous "
                  "log line) and the learning rate at every logged step, from the run's "
                  "TensorBoard records (tb/). " if training else
                  "No per-step training records (tb/ is missing, LOGGING.TENSORBOARD was off, or "
                  "metrics.json has no iterations): validation points only. ")
        parts.append(f'<p class="note">{_e(source)}Points: one per validation, from '
                     'metrics.json (the validation loss, top-1 and top-5, and the first '
                     'parameter group\'s learning rate at that validation).</p>')
        parts.append(f'<img class="figure" id="curves-figure" src="{curves}" '
                     'alt="training and validation loss, top-1, top-5 and learning rate per epoch">')

    parts.append('<h2 id="confusion">Confusion matrix</h2>')
    parts.append(f'<p class="note">The {_e(what)} on the validation split: rows are the true '
                 'class, columns the predicted one; a cell\'s shade is its share of its row.</p>')
    parts.append(f'<img class="figure" id="confusion-figure" '
                 f'src="{_confusion_figure(new_figure, confusion, names)}" alt="confusion matrix">')
    if len(names) <= TABLE_MAX_CLASSES:
        parts.append(_confusion_table(confusion, names))
    else:
        parts.append(f'<p class="note">The table of counts is left out above '
                     f'{TABLE_MAX_CLASSES} classes ({len(names)} here).</p>')

    parts.append('<h2 id="per-class-metrics">Per-class precision and recall</h2>')
    parts.append('<p class="note">Precision: the share of the images predicted as the class '
                 'that are of it; recall: the share of the class\'s images predicted as it; '
                 'support: its validation images. – : never predicted (precision) or absent '
                 '(recall).</p>')
    parts.append(_per_class_table(confusion, names))

    parts.append('<h2 id="mistakes-heading">Most confident mistakes</h2>')
    if ev.mistakes:
        which = (f"All {n_wrong} wrong predictions, the most confident first"
                 if len(ev.mistakes) == n_wrong else
                 f"The {len(ev.mistakes)} wrong predictions with the highest predicted "
                 f"probability (of {n_wrong} wrong in all)")
        parts.append(f'<p class="note">{which}, as the model saw them (the eval crop, '
                     'de-normalised).</p>')
        parts.append(_mistakes_html(ev, names, mean, std))
    else:
        parts.append('<p class="note">No mistakes: every validation image is predicted right.</p>')
    parts.append("</body></html>\n")
    return "\n".join(parts)


# --------------------------------------------------------------------------- the function
def _class_names(run_dir: Path, weights: Path) -> Optional[List[str]]:
    path = run_dir / RunDir.CLASSES
    if path.is_file():
        try:
            names = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read class names from {path}: {one_line(e)}") from None
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise InputError(f"{path} is not a JSON list of class names")
        return names
    return stored_class_names(weights)


def _describe_weights(path: Path) -> str:
    """What a weights file given by path is, in the words :func:`find_run_weights` uses."""
    if path.name == RunDir.WEIGHTS:
        return "final weights"
    if path.parent.name == RunDir.CHECKPOINTS:
        return "best checkpoint" if path.name.startswith(BEST_PREFIX) else "checkpoint"
    return "weights"


def write_report(run_dir: PathLike, *, weights: Optional[PathLike] = None,
                 cfg: Optional[Config] = None, output: Optional[PathLike] = None,
                 note: Optional[Callable[[str], None]] = None) -> Path:
    """Write the run's report (see the module's doc) and return its path.

    ``run_dir``: the training run directory. ``weights``: evaluate this weights or checkpoint
    file instead of the run's own (final, else best, else newest resume point). ``cfg``: the
    config to evaluate with (default: the run's ``config.yaml``). ``output``: where to write
    (default ``RUN_DIR/report.html``; never over a file of the run). ``note(line)`` is called
    with what is evaluated.

    Raises :class:`MatplotlibMissingError` without matplotlib, and
    :class:`~resnest_engine.errors.InputError` for a path that is not a run, weights that do not
    fit; :class:`~resnest_engine.storage.files.WriteError` (``cannot write PATH: ...``) when the page
    cannot be written.

    Args:
        run_dir: the training run directory.
        weights: evaluate this weights or checkpoint file instead of the run's own.
        cfg: the config to evaluate with (default: the run's ``config.yaml``).
        output: where to write (default ``RUN_DIR/report.html``).
        note: called with what is evaluated.
    """
    new_figure = _figure_class()  # first: no evaluation pass without the means to draw it
    if idist.get_world_size() > 1:
        raise InputError("write_report runs in one process (each process of a group would "
                         "see only its shard of the validation split)")
    note = note or (lambda line: None)  # silent
    run = Path(run_dir)
    if not run.is_dir():
        raise InputError(f"run directory not found: {run}")
    if cfg is None:
        if not (run / RunDir.CONFIG).is_file():
            raise InputError(f"{run} has no {RunDir.CONFIG}: not a training run directory")
        cfg = load_config(run / RunDir.CONFIG)
    if weights is None:
        path, what = find_run_weights(run, cfg.MODEL.NAME)
    else:
        path = Path(weights)
        if not path.is_file():
            raise InputError(f"--weights: not found: {path}")
        what = _describe_weights(path)
    out = Path(output) if output is not None else run / REPORT_FILE
    if out.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"--output: {out} must end in .html")
    if out.is_dir():
        raise InputError(f"--output: {out} is a folder")
    refuse_overwrite(out, "--output", run, [path],
                     run_file=f"is a file of the run directory {run}; write the report elsewhere",
                     input_file="is the weights file being read; write the report elsewhere")

    ev, names = _evaluate(cfg, path, what, _class_names(run, path), note)
    history, summary, history_note = _read_history(run)
    page = _page(run, cfg, path, what, ev, names, history, summary, history_note, new_figure)
    atomic_write_text(out, page)
    return out
