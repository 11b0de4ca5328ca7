"""The pictures users of this field look at, drawn from what runs write: learning curves
(the runs' metrics, ``loggers.read_metrics``) next to the published ones, normalized scores of task-set
evaluations (``eval.json``), the task-embedding map of a multitask model (the paper's Fig. 4)
and loss curves. Every plot writes its image and, beside it, a CSV of exactly the plotted
numbers (``PATH.png`` -> ``PATH.csv``), so that a picture can be checked.

matplotlib and scikit-learn are the ``plot`` extra; they are imported only here."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tdmpc2_data.tasks import DMCONTROL, get_task
from tdmpc2_model.loggers import read_metrics
from tdmpc2_model.published import Curve, published_curve, summarise

FIGSIZE, DPI = (8.0, 5.0), 100  # every image is 800 x 500 px (wider for many score bars)
RUN_FILE = "run.json"  # an online run's (online.py); pretraining runs have none
# ``train/`` columns that are bookkeeping, not losses.
NOT_LOSSES = {"episode", "episode_return", "episode_success", "updates", "elapsed_s",
              "grad_norm", "pi_scale"}  # fmt: skip


class PlotError(ValueError):
    """Input a plot cannot be drawn from (a missing file, a run without evaluations...)."""


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend, or a one-line install hint."""
    try:
        import matplotlib
    except ImportError:
        raise PlotError("Plots need matplotlib: pip install 'tdmpc2-toolkit[plot]'.") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------------- inputs
def is_online(run: Path) -> bool:
    """An online run (x: environment steps) rather than a pretraining one (x: updates)."""
    return (run / RUN_FILE).is_file()


def run_task(run: Path) -> str | None:
    """The task an online run trained (from its ``run.json``), or the one task a pretraining
    run evaluated (its ``eval/<task>/return`` column)."""
    if not is_online(run):
        tasks = {k.split("/")[1] for k in _metrics(run) if k.startswith("eval/") and
                 k.endswith("/return")}  # fmt: skip
        return tasks.pop() if len(tasks) == 1 else None
    try:
        return json.loads((run / RUN_FILE).read_text())["task"]
    except (OSError, ValueError, KeyError):
        return None


def _metrics(run: Path) -> dict[str, list[tuple[int, float]]]:
    try:
        return read_metrics(run)
    except ValueError as exc:
        raise PlotError(str(exc)) from None


def uses_success(task: str) -> bool:
    """Meta-World, ManiSkill2 and MyoSuite are judged by success rate, DMControl by return."""
    return get_task(task).domain != DMCONTROL


def run_curve(runs: Sequence[Path], task: str) -> Curve:
    """Evaluation return (or success rate) over several runs (seeds): mean and 95% CI at each
    evaluated step -- environment steps of online runs (``eval/mean_return``,
    ``eval/success_rate``), updates of pretraining runs (``eval/<task>/return``, ``/success``)."""
    success = uses_success(task)
    if len({is_online(Path(r)) for r in runs}) > 1:
        raise PlotError("Online runs (x: environment steps) and pretraining runs (x: updates) "
                        "cannot share a curve; plot them apart.")  # fmt: skip
    rows: list[tuple[float, float]] = []
    for run in map(Path, runs):
        if is_online(run):
            column = "eval/success_rate" if success else "eval/mean_return"
        else:
            column = f"eval/{task}/{'success' if success else 'return'}"
        points = _metrics(run).get(column)
        if not points:
            raise PlotError(f"{run}: no {column} logged (see --eval-every).")
        rows += [(float(s), v) for s, v in points]
    label = "ours" if len(runs) > 1 else Path(runs[0]).name
    return summarise(label, "success" if success else "reward", rows)


def read_eval(path: str | os.PathLike) -> dict[str, Any]:
    """A task-set evaluation (``tdmpc2-eval --tasks ... --out DIR``): DIR or DIR/eval.json."""
    file = Path(path) / "eval.json" if Path(path).is_dir() else Path(path)
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise PlotError(f"{file}: not a readable eval.json ({exc}).") from None
    if not isinstance(data, dict) or not data.get("tasks"):
        raise PlotError(f"{file}: expected an eval.json with a non-empty 'tasks' list.")
    return data


# --------------------------------------------------------------------------- outputs
def _paths(out: str | os.PathLike, svg: bool) -> tuple[Path, Path]:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.with_suffix(".svg" if svg else ".png"), out.with_suffix(".csv")


def _save(fig: Any, image: Path) -> None:
    fig.savefig(image, dpi=DPI)
    pyplot().close(fig)


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


# ---------------------------------------------------------------------------- curves
def plot_curves(
    runs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    task: str | None = None,
    compare: Sequence[str] = ("tdmpc2",),
    max_step: float | None = None,
    svg: bool = False,
) -> Path:
    """Learning curve of ``runs`` (seeds of one task) with the published curves of
    ``compare`` methods overlaid (online runs only: the published x is environment steps,
    pretraining's is updates). ``max_step``: x-axis limit (default: the runs' last step, at
    least the first published point after 0, so that a short run is not squashed)."""
    plt = pyplot()
    paths = [Path(r) for r in runs]
    tasks = {run_task(p) for p in paths} - {None}
    if task is None and len(tasks) != 1:
        raise PlotError(f"Cannot tell the task of {', '.join(map(str, paths))}; pass --task.")
    task = get_task(task or tasks.pop()).name
    ours = run_curve(paths, task)
    online, published = is_online(paths[0]), []
    if compare and not online:
        print("note: no published curves over a pretraining run (its x is updates)")
    for method in compare if online else ():
        try:
            published.append(published_curve(task, method))
        except KeyError:
            print(f"note: {method} has no published curve for {task}")
    if max_step is None:
        first = [c.steps[1] for c in published if len(c.steps) > 1]
        max_step = max([ours.steps.max(), *first[:1]])
    image, table = _paths(out, svg)
    fig, ax = plt.subplots(figsize=FIGSIZE)
    rows = []
    for curve, style in [(ours, "-o"), *((c, "--s") for c in published)]:
        keep = curve.steps <= max_step
        s, m, lo, hi = curve.steps[keep], curve.mean[keep], curve.low[keep], curve.high[keep]
        (line,) = ax.plot(s, m, style, label=f"{curve.label} (n={curve.seeds.max()})", ms=3)
        ax.fill_between(s, lo, hi, color=line.get_color(), alpha=0.2)
        rows += [(curve.label, int(a), b, c, d, int(n))
                 for a, b, c, d, n in zip(s, m, lo, hi, curve.seeds[keep], strict=True)]  # fmt: skip
    ax.set(title=task, xlabel="environment steps" if online else "updates", xlim=(0, max_step),
           ylabel="success rate" if ours.metric == "success" else "episode return")  # fmt: skip
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, image)
    _write_csv(table, ["curve", "step", "mean", "ci_low", "ci_high", "seeds"], rows)
    return image


# ---------------------------------------------------------------------------- scores
def plot_scores(
    evals: Sequence[str | os.PathLike], out: str | os.PathLike, svg: bool = False
) -> Path:
    """Normalized score per task (bars grouped by domain) of each evaluation and, for several
    models, the mean normalized score vs parameter count on a log axis (Fig. 4 left)."""
    plt = pyplot()
    data = [read_eval(e) for e in evals]
    labels = [_model_label(d, Path(e)) for d, e in zip(data, evals, strict=True)]
    tasks = sorted({t["task"] for d in data for t in d["tasks"]},
                   key=lambda n: (get_task(n).domain, n))  # fmt: skip
    several = len(data) > 1
    width = max(FIGSIZE[0], 0.25 * len(tasks) * len(data))
    fig, axes = plt.subplots(1, 2 if several else 1, figsize=(width, FIGSIZE[1]), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1]} if several else None)  # fmt: skip
    bars, rows = axes[0][0], []
    x = np.arange(len(tasks))
    for i, (d, label) in enumerate(zip(data, labels, strict=True)):
        scores = {t["task"]: t for t in d["tasks"]}
        heights = [scores[n]["normalized_score"] if n in scores else np.nan for n in tasks]
        bars.bar(x + (i - (len(data) - 1) / 2) * 0.8 / len(data), heights, 0.8 / len(data),
                 label=label)  # fmt: skip
        rows += [(label, d.get("params"), n, scores[n]["domain"], scores[n]["normalized_score"])
                 for n in tasks if n in scores]  # fmt: skip
        rows.append((label, d.get("params"), "(mean)", "", d["mean_normalized_score"]))
    bars.set_xticks(x, tasks, rotation=90, fontsize=7)
    bars.set_ylabel("normalized score")
    bars.set_title("normalized score per task", pad=14)
    _domain_bands(bars, tasks)
    if several:
        bars.legend(fontsize=7)
        ax = axes[0][1]
        params = [d.get("params") for d in data]
        if any(p is None for p in params):
            raise PlotError("Every eval.json needs 'params' for the score-vs-size panel.")
        means = [d["mean_normalized_score"] for d in data]
        ax.plot(params, means, "o-")
        for p, m, label in zip(params, means, labels, strict=True):
            ax.annotate(label, (p, m), fontsize=7, textcoords="offset points", xytext=(3, 3))
        ax.set(xscale="log", xlabel="parameters (millions)", ylabel="mean normalized score",
               title="score vs model size")  # fmt: skip
        ax.xaxis.set_major_formatter(_millions)
        ax.xaxis.set_minor_formatter(_millions)
        ax.tick_params(axis="x", which="both", labelsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    image, table = _paths(out, svg)
    _save(fig, image)
    _write_csv(table, ["model", "params", "task", "domain", "normalized_score"], rows)
    return image


def _millions(x: float, _pos: int | None = None) -> str:
    return f"{x / 1e6:g}"


def _model_label(data: dict[str, Any], path: Path) -> str:
    params = data.get("params")
    size = f"{params / 1e6:.1f}M" if params else "?"
    name = data.get("checkpoint") or path.stem
    return f"{Path(str(name)).name} ({size})"


def _domain_bands(ax: Any, tasks: Sequence[str]) -> None:
    """Shade every other domain's group of bars and name each group above the axes."""
    domains = [get_task(n).domain for n in tasks]
    starts = [i for i in range(len(tasks)) if i == 0 or domains[i] != domains[i - 1]]
    for group, (a, b) in enumerate(zip(starts, [*starts[1:], len(tasks)], strict=True)):
        if group % 2:
            ax.axvspan(a - 0.5, b - 0.5, color="0.92", zorder=0)
        ax.text((a + b - 1) / 2, 1.0, domains[a], fontsize=8, ha="center", va="bottom",
                transform=ax.get_xaxis_transform())  # fmt: skip


# ------------------------------------------------------------------------ embeddings
def task_embedding_map(embeddings: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE coordinates of the task embeddings (perplexity below the task count)."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise PlotError(
            "The embedding map needs scikit-learn: pip install 'tdmpc2-toolkit[plot]'."
        ) from None
    n = len(embeddings)
    if n < 3:
        raise PlotError(f"A task-embedding map needs at least 3 tasks; this model has {n}.")
    tsne = TSNE(2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=seed)
    return tsne.fit_transform(embeddings.astype(np.float64))


def nearest_tasks(embeddings: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Each task's ``k`` nearest other tasks by cosine similarity: (indices, similarities)."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(1e-12)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    order = np.argsort(-sim, axis=1)[:, :k]
    return order, np.take_along_axis(sim, order, axis=1)


def plot_embeddings(
    checkpoint: str, out: str | os.PathLike, svg: bool = False, revision: str | None = None
) -> tuple[Path, str]:
    """The task embeddings of a multitask checkpoint in 2-D (t-SNE), coloured by domain and
    labelled by task; returns the image and a table of each task's two nearest neighbours."""
    from tdmpc2_model.agent import TDMPC2

    plt = pyplot()
    agent = TDMPC2.from_pretrained(checkpoint, revision=revision)
    if not agent.cfg.multitask:
        raise PlotError(f"{checkpoint}: a single-task model has no task embeddings.")
    names = agent.cfg.task_names
    emb = agent.model.task_embeddings().cpu().numpy()
    xy = task_embedding_map(emb)
    near, sim = nearest_tasks(emb)
    domains = [get_task(n).domain for n in names]
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for domain in sorted(set(domains)):
        pick = [i for i, d in enumerate(domains) if d == domain]
        ax.scatter(xy[pick, 0], xy[pick, 1], s=18, label=domain)
    for i, name in enumerate(names):
        ax.annotate(name, xy[i], fontsize=5, textcoords="offset points", xytext=(2, 2))
    ax.set(title=f"task embeddings (t-SNE), {len(names)} tasks", xticks=[], yticks=[])
    ax.legend(fontsize=8)
    fig.tight_layout()
    image, table = _paths(out, svg)
    _save(fig, image)
    rows = [(n, d, float(xy[i, 0]), float(xy[i, 1]), names[near[i, 0]], float(sim[i, 0]),
             names[near[i, 1]], float(sim[i, 1])) for i, (n, d) in enumerate(zip(names, domains, strict=True))]  # fmt: skip
    header = ["task", "domain", "x", "y", "nearest", "cosine", "second", "cosine2"]
    _write_csv(table, header, rows)
    lines = [f"{'task':<28} {'nearest (cosine)':<40} second (cosine)"]
    lines += [f"{r[0]:<28} {f'{r[4]} ({r[5]:.2f})':<40} {r[6]} ({r[7]:.2f})" for r in rows]
    return image, "\n".join(lines)


# ---------------------------------------------------------------------------- losses
def loss_series(run: str | os.PathLike) -> tuple[str, dict[str, list[tuple[int, float]]]]:
    """Loss terms over time from a run's ``train/`` columns: an online run's (x: environment
    steps, one point per episode: the mean over its updates) or a pretraining run's (x:
    updates)."""
    run = Path(run)
    series = {k[6:]: points for k, points in _metrics(run).items()
              if k.startswith("train/") and k[6:] not in NOT_LOSSES}  # fmt: skip
    return "environment steps" if is_online(run) else "updates", series


def plot_losses(run: str | os.PathLike, out: str | os.PathLike, svg: bool = False) -> Path:
    """Every loss term of a run over time, one small panel each (log y where positive)."""
    plt = pyplot()
    xlabel, series = loss_series(run)
    if not series:
        raise PlotError(f"{run}: no losses logged yet.")
    names = sorted(series)
    cols = min(3, len(names))
    fig, axes = plt.subplots(math.ceil(len(names) / cols), cols, figsize=FIGSIZE, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        x, y = np.array(series[name]).T
        ax.plot(x, y, lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
        if (y > 0).all():
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(plt.NullFormatter())  # major decades only
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    image, table = _paths(out, svg)
    _save(fig, image)
    _write_csv(table, ["loss", "step", "value"],
               ((n, x, y) for n in names for x, y in series[n]))  # fmt: skip
    return image
