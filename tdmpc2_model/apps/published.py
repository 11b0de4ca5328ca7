"""The paper's published per-task learning curves, shipped as package data
(``tdmpc2_model/published/<method>/<task>.csv``, from the original repository's ``results/``;
see its README), so that a run can be drawn next to the paper without a download.

Each CSV holds one row per seed every 100k environment steps (step 0 included): ``step,reward,
seed`` (DMControl episode return) or ``step,success,seed`` (success rate in [0, 1] for
Meta-World, ManiSkill2, MyoSuite). Curves are summarised as the mean over seeds with a 95%
bootstrap confidence interval, the interval the paper's figures show."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path

import numpy as np

from tdmpc2_data.tasks import resolve_task_name

METHODS = ("tdmpc2", "tdmpc", "sac", "dreamerv3", "tdmpc2-pixels")
BOOTSTRAP_SAMPLES = 1000


@dataclass(frozen=True)
class Curve:
    """A learning curve summarised over seeds: at each step the mean and a 95% CI."""

    label: str
    metric: str  # "reward" (episode return) or "success" (success rate)
    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    seeds: np.ndarray  # number of seeds behind each step


def mean_ci(values: list[np.ndarray], seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-seed ``values`` and its 95% percentile-bootstrap interval (deterministic:
    a fixed generator, so a plot's CSV is reproducible). One value gives a zero-width CI."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 1:
        return float(x[0]), float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, (BOOTSTRAP_SAMPLES, x.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5]).clip(x.min(), x.max())  # float error only
    return float(x.mean()), float(low), float(high)


def summarise(label: str, metric: str, rows: list[tuple[float, float]]) -> Curve:
    """The curve of ``(step, value)`` rows from several seeds (one row per seed and step)."""
    by_step: dict[float, list[float]] = {}
    for step, value in rows:
        by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    stats = np.array([mean_ci(by_step[s]) for s in steps]).reshape(-1, 3)
    counts = np.array([len(by_step[s]) for s in steps])
    return Curve(label, metric, np.array(steps, dtype=np.float64), *stats.T, counts)


def published_dir() -> Path:
    """Where the packaged curves live (a real directory: wheels install package data as files)."""
    return Path(str(files("tdmpc2_model") / "published"))


@cache
def _index(method: str) -> dict[str, Path]:
    """Registry task name -> CSV of ``method`` (the files use the paper's names, e.g.
    ``myo-hand-reach`` for ``myo-reach``)."""
    folder = published_dir() / method
    if method not in METHODS or not folder.is_dir():
        raise KeyError(f"No published curves for method {method!r}; known: {', '.join(METHODS)}.")
    return {resolve_task_name(p.stem): p for p in sorted(folder.glob("*.csv"))}


def published_tasks(method: str = "tdmpc2") -> list[str]:
    """The tasks that ``method`` has published curves for."""
    return sorted(_index(method))


def published_curve(task: str, method: str = "tdmpc2") -> Curve:
    """The published curve of ``task`` (any name the registry resolves) for ``method``:
    steps, mean over seeds and its 95% CI. ``KeyError`` if that method never ran the task."""
    name = resolve_task_name(task)
    path = _index(method).get(name)
    if path is None:
        raise KeyError(f"{method} has no published curve for {name}.")
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [(float(r[0]), float(r[1])) for r in reader if r]
    if len(header) != 3 or header[0] != "step" or header[2] != "seed":
        raise ValueError(f"{path}: expected columns step,<reward|success>,seed; got {header}.")
    return summarise(method, header[1], rows)
