"""Curation: statistics of a shard dataset and filtered views of it, without copying data.

Both read only the per-episode metadata (``Dataset.episode_metadata``), never observations.
A `DatasetView` is a dataset plus one boolean mask per shard; the filters are `select`'s.
Design: docs/design.md#curation; usage: docs/data.md#curating-statistics-filtered-views-merging.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tdmpc2_data import schema
from tdmpc2_data.schema import DatasetError
from tdmpc2_data.tasks import TASK_SETS, TASKS

FILTERS = ("tasks", "sources", "last_fraction_of_source", "min_return", "top_fraction")
QUANTILES = (5, 25, 50, 75, 95)
PLOT_EXTRA = "pip install tdmpc2-toolkit[plot]"


class Dataset(Protocol):
    """What curation reads of a dataset (``reader.Dataset``, whose ``select`` makes the views
    here, so this module does not import the reader)."""

    location: str
    name: str
    tasks: list[str]
    shards: Sequence[Any]
    attrs: dict[str, Any]
    nbytes: int
    num_episodes: int

    def task_id(self, name: str | int) -> int: ...

    def has_field(self, i: int, field: str) -> bool: ...

    def array(self, i: int, field: str) -> Any: ...

    def episode_metadata(self, i: int) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True, eq=False)
class DatasetView:
    """The episodes of ``dataset`` where ``masks[shard]`` is True; ``filters``: what chose
    them (recorded by training runs)."""

    dataset: Dataset
    masks: tuple[np.ndarray, ...]
    filters: dict[str, Any] = field(default_factory=dict)

    @property
    def num_episodes(self) -> int:
        return int(sum(m.sum() for m in self.masks))

    @property
    def num_transitions(self) -> int:
        shards = self.dataset.shards
        return int(
            sum(int(m.sum()) * s.episode_length for m, s in zip(self.masks, shards, strict=True))
        )

    def episodes(self, shard: int) -> np.ndarray:
        """Selected episode indices of shard ``shard``, ascending."""
        return np.flatnonzero(self.masks[shard])

    def rows(self) -> Iterator[tuple[int, int]]:
        """(shard, episode) of every selected episode, in storage order."""
        for i in range(len(self.masks)):
            for e in self.episodes(i):
                yield i, int(e)

    def runs(self, shard: int, start: int = 0, stop: int | None = None) -> list[tuple[int, int]]:
        """Maximal runs [lo, hi) of consecutive selected episodes of ``shard`` in start..stop."""
        mask = self.masks[shard][start:stop]
        edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
        lo, hi = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        return [(start + int(a), start + int(b)) for a, b in zip(lo, hi, strict=True)]

    def select(self, **filters: Any) -> DatasetView:
        """A narrower view: ``filters`` applied to the episodes of this one."""
        return select(self, **filters)

    def describe(self) -> str:
        """The filters as ``select`` spells them, e.g. ``tasks=mt30,top_fraction=0.5``."""
        return format_selection(self.filters)

    def __repr__(self) -> str:
        return (
            f"DatasetView({self.dataset.location!r}, {self.describe() or 'all'}: "
            f"{self.num_episodes} of {self.dataset.num_episodes} episodes)"
        )


def as_view(data: Dataset | DatasetView) -> DatasetView:
    """``data`` itself if it is a view, else a view of all of it."""
    if isinstance(data, DatasetView):
        return data
    return DatasetView(data, tuple(np.ones(s.episodes, bool) for s in data.shards))


def split(data: Dataset | DatasetView) -> tuple[Dataset, DatasetView | None]:
    """(the dataset, the view or None when ``data`` is a whole dataset)."""
    if isinstance(data, DatasetView):
        return data.dataset, data
    return data, None


# ---------------------------------------------------------------------- metadata
def metadata(ds: Dataset) -> dict[str, np.ndarray]:
    """Every shard's per-episode metadata concatenated, plus ``shard``, ``episode`` (index in
    its shard) and ``length`` (T) per episode."""
    parts = [ds.episode_metadata(i) for i in range(len(ds.shards))]
    n = [s.episodes for s in ds.shards]
    out: dict[str, np.ndarray] = {
        "shard": np.repeat(np.arange(len(n)), n),
        "episode": np.concatenate([np.arange(k) for k in n]) if n else np.zeros(0, np.int64),
        "length": np.repeat([s.episode_length for s in ds.shards], n).astype(np.int64),
    }
    for f in ("task", "source", "source_index", "episode_return"):
        out[f] = np.concatenate([p[f] for p in parts]) if parts else np.zeros(0)
    out["task"] = out["task"].astype(np.int64)
    # success: -1 where the shard stores none
    out["episode_success"] = (
        np.concatenate(
            [
                p["episode_success"].astype(np.int8)
                if "episode_success" in p
                else np.full(k, -1, np.int8)
                for p, k in zip(parts, n, strict=True)
            ]
        )
        if parts
        else np.zeros(0, np.int8)
    )
    return out


# ---------------------------------------------------------------------- select
def select(
    data: Dataset | DatasetView,
    tasks: str | Sequence[str] | None = None,
    min_return: float | None = None,
    top_fraction: float | None = None,
    sources: int | Sequence[int] | None = None,
    last_fraction_of_source: float | None = None,
) -> DatasetView:
    """The episodes of ``data`` that pass the filters, as a view (nothing is copied).

    The filters are all optional and apply in the order listed, each to what the previous kept.

    Args:
        tasks: names, short names or task sets (comma list or sequence). A name must be in
            the dataset's table; a task set keeps those of its tasks that the dataset has.
        sources: root ``sources`` ids.
        last_fraction_of_source: per (source, task), the episodes with the highest
            ``source_index`` (the latest of that agent's training), this fraction of them
            (rounded up).
        min_return: episodes whose return is at least this.
        top_fraction: per task, the best this fraction (rounded up) by return (ties: the
            earlier stored episode).
    """
    ds, view = split(data)
    meta = metadata(ds)
    keep = np.concatenate(as_view(data).masks) if ds.shards else np.zeros(0, bool)
    given: dict[str, Any] = dict(view.filters) if view is not None else {}
    if tasks is not None:
        names = _task_names(ds, tasks)
        keep &= np.isin(meta["task"], [ds.task_id(n) for n in names])
        given["tasks"] = tasks if isinstance(tasks, str) else ",".join(tasks)
    if sources is not None:
        ids = [sources] if isinstance(sources, (int, np.integer)) else list(sources)
        count = len(ds.attrs.get("sources", []))
        bad = [s for s in ids if not 0 <= int(s) < count]
        if bad:
            raise ValueError(
                f"sources={bad}: {ds.location} has source ids 0..{count - 1} "
                "(tdmpc2-data stats lists them)."
            )
        keep &= np.isin(meta["source"], ids)
        given["sources"] = [int(s) for s in ids]
    if last_fraction_of_source is not None:
        f = _fraction("last_fraction_of_source", last_fraction_of_source)
        unknown = keep & ((meta["source"] < 0) | (meta["source_index"] < 0))
        if unknown.any():
            shard = ds.shards[int(meta["shard"][np.argmax(unknown)])].path
            raise DatasetError(
                f"{ds.location}/{shard}: {int(unknown.sum())} selected episodes have no recorded "
                "source or source_index (written before format 1.1, or by a writer not given "
                "them), so last_fraction_of_source cannot order them; filter them out with "
                "sources=... or re-convert the data."
            )
        keep &= _top_per_group(keep, (meta["source"], meta["task"]), meta["source_index"], f)
        given["last_fraction_of_source"] = f
    if min_return is not None:
        keep &= meta["episode_return"] >= float(min_return)
        given["min_return"] = float(min_return)
    if top_fraction is not None:
        f = _fraction("top_fraction", top_fraction)
        keep &= _top_per_group(keep, (meta["task"],), meta["episode_return"], f)
        given["top_fraction"] = f
    cuts = np.cumsum([s.episodes for s in ds.shards])[:-1]
    masks = tuple(np.split(keep, cuts)) if ds.shards else ()
    return DatasetView(ds, masks, {k: given[k] for k in FILTERS if k in given})


def _task_names(ds: Dataset, tasks: str | Sequence[str]) -> list[str]:
    items = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else list(tasks)
    names: list[str] = []
    for item in filter(None, items):
        if item in TASK_SETS:
            names += [n for n in TASK_SETS[item] if n in ds.tasks]
        else:
            names.append(ds.tasks[ds.task_id(item)])
    if not names:
        raise ValueError(f"tasks={tasks!r}: none of them is in {ds.location}'s task table.")
    return names


def _fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0 < value <= 1:
        raise ValueError(f"{name}={value!r}; expected a fraction in (0, 1].")
    return value


def _top_per_group(
    keep: np.ndarray, groups: tuple[np.ndarray, ...], score: np.ndarray, fraction: float
) -> np.ndarray:
    """Mask of the ``ceil(fraction * n)`` highest-``score`` kept episodes of each group (ties:
    the earlier episode)."""
    out = np.zeros(keep.shape, bool)
    rows = np.flatnonzero(keep)
    if not rows.size:
        return out
    # sort by group, then score descending, then position ascending
    order = np.lexsort((rows, -score[rows].astype(np.float64), *(g[rows] for g in groups[::-1])))
    ranked = rows[order]
    key = np.stack([g[ranked] for g in groups], axis=1)
    starts = np.flatnonzero(np.concatenate([[True], (np.diff(key, axis=0) != 0).any(axis=1)]))
    sizes = np.diff(np.concatenate([starts, [len(ranked)]]))
    rank = np.arange(len(ranked)) - np.repeat(starts, sizes)
    limit = np.repeat(np.ceil(fraction * sizes - 1e-9).astype(np.int64), sizes)
    out[ranked[rank < limit]] = True
    return out


def parse_selection(spec: str) -> dict[str, Any]:
    """``select`` keyword arguments from ``"tasks=mt30,top_fraction=0.5"`` (a comma-separated
    value continues the key before it: ``tasks=walker-walk,cheetah-run,sources=0,1``)."""
    out: dict[str, list[str]] = {}
    key = None
    for item in (i.strip() for i in spec.split(",")):
        if not item:
            continue
        name, eq, value = item.partition("=")
        if eq:
            key = name.strip().replace("-", "_")
            if key not in FILTERS:
                raise ValueError(
                    f"--select {spec!r}: unknown filter {name!r}; filters: {', '.join(FILTERS)}."
                )
            out[key] = [value.strip()]
        elif key in ("tasks", "sources"):
            out[key].append(item)
        else:
            raise ValueError(
                f"--select {spec!r}: {item!r} is not KEY=VALUE (filters: {', '.join(FILTERS)})."
            )
    args: dict[str, Any] = {}
    for key, values in out.items():
        try:
            if key == "tasks":
                args[key] = ",".join(values)
            elif key == "sources":
                args[key] = [int(v) for v in values]
            else:
                (value,) = values
                args[key] = float(value)
        except ValueError:
            raise ValueError(
                f"--select {spec!r}: {key}={','.join(values)} is not a "
                f"{'list of integers' if key == 'sources' else 'number'}."
            ) from None
    return args


def format_selection(filters: Mapping[str, Any]) -> str:
    """The inverse of `parse_selection`."""
    parts = []
    for key in FILTERS:
        if key in filters:
            value = filters[key]
            value = ",".join(map(str, value)) if isinstance(value, list) else value
            parts.append(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}")
    return ",".join(parts)


# ---------------------------------------------------------------------- stats
def stats(data: Dataset | DatasetView) -> dict[str, Any]:
    """Per task: episodes, transitions, return mean/min/max and quantiles 5/25/50/75/95,
    success rate (tasks with a success flag), sources; and the dataset's size on disk and
    decoded. A view counts its episodes (the size on disk stays the whole dataset's)."""
    ds, view = split(data)
    meta = metadata(ds)
    keep = np.concatenate(as_view(data).masks) if ds.shards else np.zeros(0, bool)
    per_episode = np.repeat(
        [_decoded_bytes_per_episode(ds, i) for i in range(len(ds.shards))],
        [s.episodes for s in ds.shards],
    )
    tasks: dict[str, Any] = {}
    notes = []
    for tid, name in enumerate(ds.tasks):
        rows = keep & (meta["task"] == tid)
        if not rows.any():
            continue
        ret = meta["episode_return"][rows].astype(np.float64)
        success = meta["episode_success"][rows]
        registry = TASKS.get(name)
        has_success = registry.has_success if registry is not None else bool((success >= 0).any())
        sources = meta["source"][rows]
        known = meta["source_index"][rows] >= 0
        tasks[name] = {
            "id": tid,
            "episodes": int(rows.sum()),
            "transitions": int(meta["length"][rows].sum()),
            "return": {
                "mean": float(ret.mean()),
                "min": float(ret.min()),
                "max": float(ret.max()),
                **{
                    f"p{q}": float(v)
                    for q, v in zip(QUANTILES, np.percentile(ret, QUANTILES), strict=True)
                },
            },
            "success_rate": (
                float((success == 1).sum() / (success >= 0).sum())
                if has_success and (success >= 0).any()
                else None
            ),
            "sources": sorted(int(s) for s in np.unique(sources) if s >= 0),
            "unknown_source": int((sources < 0).sum()),
            "source_index_known": int(known.sum()),
        }
    unknown_index = int((keep & (meta["source_index"] < 0)).sum())
    if unknown_index:
        notes.append(
            f"source_index unknown for {unknown_index} episodes (written before format 1.1 or "
            "without it): their position in their source, i.e. training progress, is not "
            "recorded, so last_fraction_of_source cannot select them"
        )
    missing = [
        ds.shards[i].path for i in range(len(ds.shards)) if not ds.has_field(i, "episode_return")
    ]
    if missing:
        notes.append(
            f"{len(missing)} shard(s) predate format 1.1 (no episode_return): returns and "
            "success were computed from the reward/success arrays"
        )
    return {
        "location": ds.location,
        "name": ds.name,
        "format": ".".join(map(str, schema.format_version(ds.attrs))),
        "selection": None if view is None else view.filters,
        "episodes": int(keep.sum()),
        "transitions": int(meta["length"][keep].sum()),
        "disk_bytes": ds.nbytes,
        "decoded_bytes": int(per_episode[keep].sum()),
        "sources": len(ds.attrs.get("sources", [])),
        "tasks": tasks,
        "notes": notes,
    }


def _decoded_bytes_per_episode(ds: Dataset, i: int) -> int:
    """Bytes of one episode of shard ``i`` decoded (every array it stores), from metadata."""
    total = 0
    for f in schema.FIELDS:
        if ds.has_field(i, f):
            arr = ds.array(i, f)
            total += arr.dtype.itemsize * math.prod(arr.shape[1:])
    return total


def format_stats(s: Mapping[str, Any]) -> str:
    """`stats` as the table ``tdmpc2-data stats`` prints."""
    selection = f", selection {format_selection(s['selection'])}" if s["selection"] else ""
    lines = [
        f"{s['location']}: dataset {s['name']!r}, format {s['format']}{selection}",
        f"{s['episodes']} episodes, {s['transitions']} transitions, {len(s['tasks'])} tasks, "
        f"{s['sources']} sources; {s['disk_bytes'] / 1e6:.1f} MB on disk, "
        f"{s['decoded_bytes'] / 1e6:.1f} MB decoded",
        f"{'task':<26} {'episodes':>8} {'transitions':>11} {'mean':>8} {'min':>8} "
        + " ".join(f"{'p' + str(q):>8}" for q in QUANTILES)
        + f" {'max':>8} {'success':>7}  sources",
    ]
    for name, t in s["tasks"].items():
        r = t["return"]
        rate = "-" if t["success_rate"] is None else f"{t['success_rate']:.2f}"
        src = _id_ranges(t["sources"]) + (" +unknown" if t["unknown_source"] else "")
        lines.append(
            f"{name:<26} {t['episodes']:>8} {t['transitions']:>11} {r['mean']:>8.1f} "
            f"{r['min']:>8.1f} " + " ".join(f"{r['p' + str(q)]:>8.1f}" for q in QUANTILES)
            + f" {r['max']:>8.1f} {rate:>7}  {src or '-'}"
        )  # fmt: skip
    lines += [f"note: {n}" for n in s["notes"]]
    return "\n".join(lines)


def _id_ranges(ids: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2,5``."""
    parts, start = [], None
    for k, x in enumerate(ids):
        if start is None:
            start = x
        if k + 1 == len(ids) or ids[k + 1] != x + 1:
            parts.append(str(start) if start == x else f"{start}-{x}")
            start = None
    return ",".join(parts)


def plot_returns(data: Dataset | DatasetView, out_dir: str | Path, bins: int = 30) -> Path:
    """A return histogram per task, as small multiples in one PNG (``OUT/returns.png``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(f"--plot needs matplotlib: {PLOT_EXTRA}") from None
    ds, _ = split(data)
    meta = metadata(ds)
    keep = np.concatenate(as_view(data).masks) if ds.shards else np.zeros(0, bool)
    names = [n for k, n in enumerate(ds.tasks) if (keep & (meta["task"] == k)).any()]
    if not names:
        raise ValueError(f"{ds.location}: no episodes to plot.")
    cols = math.ceil(math.sqrt(len(names)))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 1.7 * rows), squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names, strict=False):
        ret = meta["episode_return"][keep & (meta["task"] == ds.task_id(name))]
        ax.hist(ret, bins=bins, color="tab:blue")
        ax.set_title(f"{name} ({len(ret)})", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"episode returns: {ds.name}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # room for the title
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "returns.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
