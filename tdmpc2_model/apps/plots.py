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
from tdmpc2_model.apps.published import Curve, published_curve, summarise
from tdmpc2_model.outputs.loggers import read_metrics

FIGSIZE, DPI = (8.0, 5.0), 100  # every image is 800 x 500 px (wider for many score bars)
MAX_WIDTH = 20.0  # inches: 80 tasks x 3 models of bars
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


def _steps_label(x: float, _pos: int | None = None) -> str:
    """An axis step count as a paper writes it: 0, 500, 2k, 100k, 1.5M."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:g}{suffix}"
    return f"{x:g}"


def _value_label(x: float, _pos: int | None = None) -> str:
    """A log axis' tick value in at most 3 significant digits (0.002, 0.5, 20, 1e-05)."""
    return f"{x:.3g}"


# ---------------------------------------------------------------------------- curves
MARGIN = 0.05  # of the x range, beyond the run's last step
FEW_POINTS = 3  # a published curve with fewer points in range is drawn as error bars


def x_range(ours: Curve, max_step: float | None = None) -> tuple[float, float]:
    """The x limits of a learning curve: the run's steps (plus a margin) or ``max_step``."""
    right = max_step if max_step is not None else float(ours.steps.max()) * (1 + MARGIN)
    right = right if right > 0 else 1.0
    return -MARGIN * right / 2, right


def curves_figure(
    ours: Curve,
    published: Sequence[Curve],
    task: str,
    online: bool = True,
    max_step: float | None = None,
    figsize: tuple[float, float] = FIGSIZE,
) -> tuple[Any, list[tuple[Any, ...]]]:
    """The learning-curve figure and the rows of its CSV. The x axis fits the run (up to
    ``max_step`` when given); a published curve is clipped to it and drawn at the steps it
    has: with markers joined by a dashed line and a CI band where at least ``FEW_POINTS`` of
    them lie in range, else as markers with CI error bars and nothing between them (several
    such methods side by side, 1.2% of the axis apart), and the first point past the axis
    named in the legend (CSV ``shown``: ``line``, ``markers``, ``legend``)."""
    plt = pyplot()
    left, right = x_range(ours, max_step)
    fig, ax = plt.subplots(figsize=figsize)
    rows: list[tuple[Any, ...]] = []

    def add_rows(curve: Curve, keep: np.ndarray, shown: str) -> None:
        rows.extend((curve.label, int(s), m, lo, hi, int(n), shown) for s, m, lo, hi, n in zip(
            curve.steps[keep], curve.mean[keep], curve.low[keep], curve.high[keep],
            curve.seeds[keep], strict=True))  # fmt: skip

    seeds = int(ours.seeds.max())
    keep = ours.steps <= right
    (line,) = ax.plot(ours.steps[keep], ours.mean[keep], "-o", ms=3, zorder=3,
                      label=f"{ours.label} ({seeds} seed{'s' * (seeds > 1)})")  # fmt: skip
    if seeds > 1:
        ax.fill_between(ours.steps[keep], ours.low[keep], ours.high[keep],
                        color=line.get_color(), alpha=0.2, lw=0)  # fmt: skip
    add_rows(ours, keep, "line")
    sparse = [c for c in published if (c.steps <= right).sum() < FEW_POINTS]
    for curve in published:
        keep = curve.steps <= right
        label = f"{curve.label}, published ({int(curve.seeds.max())} seeds)"
        s, m, lo, hi = curve.steps[keep], curve.mean[keep], curve.low[keep], curve.high[keep]
        if curve not in sparse:
            (line,) = ax.plot(s, m, "--s", ms=4, label=label)
            ax.fill_between(s, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
            add_rows(curve, keep, "line")
            continue
        beyond = np.flatnonzero(~keep)
        if len(beyond):  # where it goes next, in words: a line to it would be made up
            i = beyond[0]
            label += (f"; at {_steps_label(curve.steps[i])}: {curve.mean[i]:.3g} "
                      f"[{curve.low[i]:.3g}, {curve.high[i]:.3g}]")  # fmt: skip
        dodge = (sparse.index(curve) - (len(sparse) - 1) / 2) * 0.012 * (right - left)
        ax.errorbar(s + dodge, m, yerr=[m - lo, hi - m], fmt="s", ms=5, capsize=4, zorder=4,
                    label=label)  # fmt: skip
        add_rows(curve, keep, "markers")
        if len(beyond):
            add_rows(curve, np.arange(len(curve.steps)) == beyond[0], "legend")
    ax.set(title=task, xlim=(left, right),
           xlabel="environment steps" if online else "pretraining updates",
           ylabel="success rate" if ours.metric == "success" else "episode return")  # fmt: skip
    if ours.metric == "success":
        ax.set_ylim(-0.05, 1.05)
    ax.xaxis.set_major_formatter(_steps_label)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig, rows


CURVE_HEADER = ["curve", "step", "mean", "ci_low", "ci_high", "seeds", "shown"]


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
    pretraining's is updates). ``max_step``: x-axis limit (default: the runs' last step plus
    a margin, so that a short run fills the picture; see ``curves_figure``)."""
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
    fig, rows = curves_figure(ours, published, task, online, max_step)
    image, table = _paths(out, svg)
    _save(fig, image)
    _write_csv(table, CURVE_HEADER, rows)
    return image


# ---------------------------------------------------------------------------- scores
def eval_labels(data: Sequence[dict[str, Any]], paths: Sequence[str | os.PathLike]) -> list[str]:
    """A distinct label per evaluation: its directory's name (``tdmpc2-eval --out``), with
    as many parent directories as it takes to tell equal names apart (then ``#2``, ``#3``),
    its model's size and its episodes per task."""
    dirs = [Path(p) if Path(p).is_dir() else Path(p).parent for p in paths]
    parts = [d.resolve().parts for d in dirs]
    depth = [1] * len(dirs)
    while True:
        names = ["/".join(p[-k:]) for p, k in zip(parts, depth, strict=True)]
        clash = [i for i, n in enumerate(names) if names.count(n) > 1 and depth[i] < len(parts[i])]
        if not clash:
            break
        for i in clash:
            depth[i] += 1
    seen: dict[str, int] = {}
    labels = []
    for name, d in zip(names, data, strict=True):
        seen[name] = seen.get(name, 0) + 1
        if names.count(name) > 1:
            name += f" #{seen[name]}"
        params, episodes = d.get("params"), d.get("episodes")
        size = f"{params / 1e6:.1f}M" if params else "?"
        runs = f", {episodes} ep/task" if episodes else ""
        labels.append(f"{name} ({size}{runs})")
    return labels


def scores_figure(
    data: Sequence[dict[str, Any]],
    labels: Sequence[str],
    figsize: tuple[float, float] | None = None,
) -> tuple[Any, list[tuple[Any, ...]]]:
    """Bars of each evaluation's normalized score per task (grouped by domain; its mean a
    dashed line of its colour) and, for several, mean score vs parameter count."""
    plt = pyplot()
    tasks = sorted({t["task"] for d in data for t in d["tasks"]},
                   key=lambda n: (get_task(n).domain, n))  # fmt: skip
    several = len(data) > 1
    width = min(MAX_WIDTH, max(FIGSIZE[0], 0.2 * len(tasks) * len(data) + 2))
    fig, axes = plt.subplots(1, 2 if several else 1, figsize=figsize or (width, FIGSIZE[1]),
                             squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1]} if several else None)  # fmt: skip
    bars, rows = axes[0][0], []
    x = np.arange(len(tasks))
    for i, (d, label) in enumerate(zip(data, labels, strict=True)):
        scores = {t["task"]: t for t in d["tasks"]}
        heights = [scores[n]["normalized_score"] if n in scores else np.nan for n in tasks]
        mean = d["mean_normalized_score"]
        drawn = bars.bar(x + (i - (len(data) - 1) / 2) * 0.8 / len(data), heights,
                         0.8 / len(data), label=f"{label}: mean {mean:.1f}")  # fmt: skip
        bars.axhline(mean, color=drawn.patches[0].get_facecolor(), ls="--", lw=1)
        if len(tasks) * len(data) <= 24:  # few bars: their values (a score of 0 shows no bar)
            bars.bar_label(drawn, [f"{h:.1f}" if np.isfinite(h) else "" for h in heights],
                           fontsize=7, padding=1)  # fmt: skip
        rows += [(label, d.get("params"), n, scores[n]["domain"], scores[n]["normalized_score"])
                 for n in tasks if n in scores]  # fmt: skip
        rows.append((label, d.get("params"), "(mean)", "", mean))
    bars.set_xticks(x, tasks, rotation=90, fontsize=7)
    bars.set_xlim(-0.5, len(tasks) - 0.5)
    bars.set_ylabel("normalized score (0-100)")
    bars.set_title("normalized score per task (dashed: mean over tasks)", pad=14)
    bars.set_ylim(0, max(1.0, *(t["normalized_score"] for d in data for t in d["tasks"])) * 1.25)
    bars.legend(fontsize=7, loc="upper right")
    _domain_bands(bars, tasks)
    if several:
        ax = axes[0][1]
        params = [d.get("params") for d in data]
        if any(p is None for p in params):
            raise PlotError("Every eval.json needs 'params' for the score-vs-size panel.")
        means = [d["mean_normalized_score"] for d in data]
        order = np.argsort(params)
        distinct = len(set(params)) == len(params)  # a line joins sizes, not repeats of one
        ax.plot(np.array(params)[order], np.array(means)[order], "o-" if distinct else "o",
                color="0.3")  # fmt: skip
        middle = math.sqrt(min(params) * max(params))
        for p, m, label in zip(params, means, labels, strict=True):
            right = p > middle  # label towards the middle: it stays inside the panel
            ax.annotate(label.split(" (")[0], (p, m), fontsize=7, textcoords="offset points",
                        xytext=(-3 if right else 3, 3), ha="right" if right else "left")  # fmt: skip
        ax.set(xscale="log", xlabel="parameters (millions)", ylabel="mean normalized score",
               title="score vs model size")  # fmt: skip
        from matplotlib.ticker import LogLocator

        ax.set_xlim(min(params) / 1.5, max(params) * 1.5)
        ax.xaxis.set_major_formatter(_millions)
        ax.xaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
        ax.xaxis.set_minor_formatter(_millions)
        ax.tick_params(axis="x", which="both", labelsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig, rows


def plot_scores(
    evals: Sequence[str | os.PathLike], out: str | os.PathLike, svg: bool = False
) -> Path:
    """Normalized score per task (bars grouped by domain) of each evaluation and, for several
    models, the mean normalized score vs parameter count on a log axis (Fig. 4 left)."""
    data = [read_eval(e) for e in evals]
    fig, rows = scores_figure(data, eval_labels(data, evals))
    image, table = _paths(out, svg)
    _save(fig, image)
    _write_csv(table, ["model", "params", "task", "domain", "normalized_score"], rows)
    return image


def _millions(x: float, _pos: int | None = None) -> str:
    return f"{x / 1e6:g}"


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
MAP_MIN_TASKS = 20  # fewer tasks: the cosine-similarity matrix itself, not a 2-D map


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


def cosine_similarity(embeddings: np.ndarray) -> np.ndarray:
    """The tasks' pairwise cosine similarities."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(1e-12)
    return unit @ unit.T


def nearest_tasks(embeddings: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Each task's ``k`` nearest other tasks by cosine similarity: (indices, similarities)."""
    sim = cosine_similarity(embeddings)
    np.fill_diagonal(sim, -np.inf)
    order = np.argsort(-sim, axis=1)[:, :k]
    return order, np.take_along_axis(sim, order, axis=1)


def _domain_colours(domains: Sequence[str]) -> dict[str, Any]:
    plt = pyplot()
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {d: cycle[i % len(cycle)] for i, d in enumerate(sorted(set(domains)))}


def embeddings_figure(
    names: Sequence[str], embeddings: np.ndarray, figsize: tuple[float, float] = FIGSIZE
) -> tuple[Any, list[str], list[tuple[Any, ...]]]:
    """The task embeddings' picture, its CSV header and rows. Under ``MAP_MIN_TASKS``
    tasks: the cosine-similarity matrix as a heatmap (the numbers the neighbour table
    prints; a 2-D map of a few points shows nothing); from then on a t-SNE map coloured by
    domain, each task labelled where its label overlaps no other label or point."""
    plt = pyplot()
    names = list(names)
    n = len(names)
    domains = [get_task(t).domain for t in names]
    colours = _domain_colours(domains)
    sim = cosine_similarity(embeddings)
    near, near_sim = nearest_tasks(embeddings) if n > 2 else (np.zeros((n, 2), int), sim * 0)
    fig, ax = plt.subplots(figsize=figsize)
    if n < MAP_MIN_TASKS:
        xy = np.full((n, 2), np.nan)
        image = ax.imshow(sim, cmap="RdBu_r", vmin=-1, vmax=1)
        fig.colorbar(image, ax=ax, label="cosine similarity")
        size = 8 if n <= 12 else 7
        ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=size)
        ax.set_yticks(range(n), names, fontsize=size)
        for label, d in [*zip(ax.get_xticklabels(), domains, strict=True),
                         *zip(ax.get_yticklabels(), domains, strict=True)]:  # fmt: skip
            label.set_color(colours[d])
        if n <= 12:
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if abs(sim[i, j]) > 0.6 else "black")  # fmt: skip
        ax.set_title(f"task-embedding cosine similarity, {n} tasks")
        from matplotlib.patches import Patch

        fig.legend([Patch(color=colours[d]) for d in sorted(colours)], sorted(colours),
                   title="task label colour", fontsize=8, title_fontsize=8, loc="lower left")  # fmt: skip
        fig.tight_layout()
    else:
        xy = task_embedding_map(embeddings)
        for domain in sorted(colours):
            pick = [i for i, d in enumerate(domains) if d == domain]
            ax.scatter(xy[pick, 0], xy[pick, 1], s=18, color=colours[domain], label=domain)
        ax.set(xticks=[], yticks=[], xlabel="t-SNE 1", ylabel="t-SNE 2")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
        ax.set_title(f"task embeddings (t-SNE), {n} tasks")
        fig.tight_layout()
        shown = _place_labels(ax, xy, names)
        ax.set_title(f"task embeddings (t-SNE), {n} tasks"
                     + ("" if all(shown) else f"; {sum(shown)} labels fit, all in the CSV"))  # fmt: skip
    rows = [(t, d, *(float(v) if np.isfinite(v) else "" for v in xy[i]),
             names[near[i, 0]], float(near_sim[i, 0]), names[near[i, 1]], float(near_sim[i, 1]),
             *(map(float, sim[i]) if n < MAP_MIN_TASKS else ()))
            for i, (t, d) in enumerate(zip(names, domains, strict=True))]  # fmt: skip
    header = ["task", "domain", "x", "y", "nearest", "cosine", "second", "cosine2"]
    if n < MAP_MIN_TASKS:
        header += [f"cosine:{t}" for t in names]
    return fig, header, rows


def _place_labels(ax: Any, xy: np.ndarray, names: Sequence[str], fontsize: float = 6) -> list[bool]:
    """Label each point at the first of a few offsets where its label stays inside the axes
    and overlaps no label placed before and no other point; leave it out where none fits.
    Call after the layout is final (labels are placed in display coordinates)."""
    from matplotlib.transforms import Bbox

    ax.set_xlim(ax.get_xlim())  # freeze the limits: labels must not rescale the axes
    ax.set_ylim(ax.get_ylim())
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    points = ax.transData.transform(xy)
    r = 3.0 * ax.figure.dpi / 72  # a marker's radius (s=18: 4.2 pt across) plus a little
    dots = [Bbox.from_bounds(px - r, py - r, 2 * r, 2 * r) for px, py in points]
    offsets = [(4, 1, "left", "bottom"), (4, -1, "left", "top"), (-4, 1, "right", "bottom"),
               (-4, -1, "right", "top"), (0, 4, "center", "bottom"), (0, -4, "center", "top")]  # fmt: skip
    placed: list[Any] = []
    shown = []
    for i, name in enumerate(names):
        for dx, dy, ha, va in offsets:
            text = ax.annotate(name, xy[i], xytext=(dx, dy), textcoords="offset points",
                               fontsize=fontsize, ha=ha, va=va)  # fmt: skip
            box = text.get_window_extent(renderer).padded(2)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and \
                box.y1 <= frame.y1  # fmt: skip
            if inside and not any(box.overlaps(b) for b in placed) and \
                    not any(box.overlaps(b) for j, b in enumerate(dots) if j != i):  # fmt: skip
                placed.append(box)
                break
            text.remove()
        shown.append(len(placed) > sum(shown))
    return shown


def plot_embeddings(
    checkpoint: str, out: str | os.PathLike, svg: bool = False, revision: str | None = None
) -> tuple[Path, str]:
    """The task embeddings of a multitask checkpoint (``embeddings_figure``: a cosine
    heatmap for a few tasks, a t-SNE map for many); returns the image and a table of each
    task's two nearest neighbours."""
    from tdmpc2_model.agent import TDMPC2

    agent = TDMPC2.from_pretrained(checkpoint, revision=revision)
    if not agent.cfg.multitask:
        raise PlotError(f"{checkpoint}: a single-task model has no task embeddings.")
    names = agent.cfg.task_names
    fig, header, rows = embeddings_figure(names, agent.model.task_embeddings().cpu().numpy())
    image, table = _paths(out, svg)
    _save(fig, image)
    _write_csv(table, header, rows)
    lines = [f"{'task':<28} {'nearest (cosine)':<40} second (cosine)"]
    lines += [f"{r[0]:<28} {f'{r[4]} ({r[5]:.2f})':<40} {r[6]} ({r[7]:.2f})" for r in rows]
    return image, "\n".join(lines)


# ---------------------------------------------------------------------------- losses
LOG_MIN_SPAN = 10.0  # a positive series spanning less than this ratio is drawn on a linear y


def loss_series(run: str | os.PathLike) -> tuple[str, dict[str, list[tuple[int, float]]]]:
    """Loss terms over time from a run's ``train/`` columns: an online run's (x: environment
    steps, one point per episode: the mean over its updates) or a pretraining run's (x:
    updates)."""
    run = Path(run)
    series = {k[6:]: points for k, points in _metrics(run).items()
              if k.startswith("train/") and k[6:] not in NOT_LOSSES}  # fmt: skip
    return "environment steps" if is_online(run) else "updates", series


def set_value_axis(ax: Any, y: np.ndarray) -> bool:
    """A log y axis for a positive series spanning ``LOG_MIN_SPAN`` or more (ticks at 1, 2
    and 5 times each power of ten below three decades, labelled in plain numbers), else a
    linear one; every panel gets at least two labelled ticks. True for log."""
    from matplotlib.ticker import LogLocator, NullFormatter

    y = y[np.isfinite(y)]
    if not len(y) or (y <= 0).any() or y.max() / y.min() < LOG_MIN_SPAN:
        return False
    ax.set_yscale("log")
    subs = (1.0, 2.0, 5.0) if y.max() / y.min() < 1000 else (1.0,)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(_value_label)
    ax.yaxis.set_minor_formatter(NullFormatter())
    return True


def losses_figure(
    xlabel: str, series: dict[str, list[tuple[int, float]]], title: str = "",
    figsize: tuple[float, float] = FIGSIZE,
) -> Any:  # fmt: skip
    """One small panel per loss term, a log y where it spans a decade or more."""
    plt = pyplot()
    names = sorted(series)
    cols = min(3, len(names))
    fig, axes = plt.subplots(math.ceil(len(names) / cols), cols, figsize=figsize, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        x, y = np.array(series[name], dtype=np.float64).T
        ax.plot(x, y, lw=1)
        log = set_value_axis(ax, y)
        ax.set_title(f"{name}{' (log)' if log else ''}", fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.xaxis.set_major_formatter(_steps_label)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_losses(run: str | os.PathLike, out: str | os.PathLike, svg: bool = False) -> Path:
    """Every loss term of a run over time, one small panel each (``losses_figure``)."""
    xlabel, series = loss_series(run)
    if not series:
        raise PlotError(f"{run}: no losses logged yet.")
    fig = losses_figure(xlabel, series, f"losses of {Path(run).resolve().name}")
    image, table = _paths(out, svg)
    _save(fig, image)
    _write_csv(table, ["loss", "step", "value"],
               ((n, x, y) for n in sorted(series) for x, y in series[n]))  # fmt: skip
    return image
