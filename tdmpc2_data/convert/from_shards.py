"""Merge shard datasets into one, as ``minari combine`` does: ``convert A B OUT --from shards``
(or ``tdmpc2-data merge A B OUT``).

Each (dataset, task, source of the episodes) triple becomes one `Source`, so a merge gets what
every conversion gets: the destination's task table (``task_set`` or the tasks in the order
met), a ``sources`` entry per triple, and resume (a rerun skips triples already merged).
Provenance survives: the entry names the dataset and, under ``origin``, the episodes' own
``sources`` entry there (``null`` for episodes whose source was not recorded), and every
episode keeps its ``source_index`` (its return and success are recomputed from the rewards,
so they stay consistent). Episodes are streamed one shard run at a time, keep their
``success`` flags, and are cut to the task's real widths (the destination pads to its own);
damage (``Dataset.check_decoded``) is refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tdmpc2_data.convert.episodes import Episode
from tdmpc2_data.convert.merge import Source, SourceResult, convert_sources
from tdmpc2_data.reader import Dataset, open_dataset
from tdmpc2_data.schema import UNKNOWN
from tdmpc2_data.tasks import get_task, resolve_tasks

FORMAT = "shards"


def convert(
    sources: Sequence[str | os.PathLike],
    dst: str | os.PathLike,
    *,
    tasks: str | Sequence[str] | None = None,
    **options: Any,
) -> list[SourceResult]:
    """Append the episodes of the shard datasets ``sources`` to ``dst``.

    ``tasks``: keep only these tasks (names or task sets; default all). Other options as
    ``merge.convert_sources`` (task_set, progress, episodes_per_shard).
    """
    keep = set(resolve_tasks(tasks)) if tasks else None
    out = Path(dst).resolve()
    parts: list[Source] = []
    for path in sources:
        if Path(path).resolve() == out:
            raise ValueError(f"{path}: a dataset cannot be merged into itself.")
        ds = open_dataset(path)
        for name in ds.tasks:
            if keep is None or name in keep:
                parts += task_sources(ds, name)
    if not parts:
        raise ValueError(
            f"No episodes of tasks {sorted(keep or ())} in {', '.join(map(str, sources))}."
        )
    return convert_sources(parts, dst, tasks=[p.info["task"] for p in parts], **options)


def task_sources(ds: Dataset, name: str) -> list[Source]:
    """The episodes of task ``name`` in ``ds``, one single-task source per source id they
    record (in order of first appearance; -1, not recorded, is one more)."""
    runs = ds.task_episodes(name)
    task = get_task(name)
    found: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for shard, episodes in runs:
        meta = ds.episode_metadata(shard)
        src = meta["source"][episodes.start : episodes.stop]
        index = meta["source_index"][episodes.start : episodes.stop]
        for sid in dict.fromkeys(src.tolist()):
            rows = np.flatnonzero(src == sid)
            found.setdefault(int(sid), []).append((shard, episodes.start + rows, index[rows]))
    entries = ds.attrs.get("sources", [])
    out = []
    for sid, parts in found.items():
        origin = None
        if 0 <= sid < len(entries):
            origin = {k: v for k, v in entries[sid].items() if k not in ("id", "complete")}
        out.append(
            Source(
                path=ds.location,
                format=FORMAT,
                obs_dim=ds.obs_dim,
                action_dim=ds.action_dim,
                episodes=lambda parts=parts: read_rows(ds, parts, task.obs_dim, task.action_dim),
                num_episodes=sum(len(rows) for _, rows, _ in parts),
                info={"task": name, "origin": origin},
            )
        )
    return out


def read_episodes(
    ds: Dataset, runs: Sequence[tuple[int, range]], obs_dim: int, action_dim: int
) -> Iterator[Episode]:
    """The episodes of ``runs`` ((shard index, episode range) of one task) at the widths
    ``obs_dim``/``action_dim``, one run decoded at a time and checked (``check_decoded``),
    with their ``source_index`` (``Episode.index``); shared by merging and
    ``tdmpc2_data.export``."""
    parts = []
    for shard, episodes in runs:
        rows = np.arange(episodes.start, episodes.stop)
        parts.append((shard, rows, ds.episode_metadata(shard)["source_index"][rows]))
    return read_rows(ds, parts, obs_dim, action_dim)


def read_rows(
    ds: Dataset,
    parts: Sequence[tuple[int, np.ndarray, np.ndarray]],
    obs_dim: int,
    action_dim: int,
) -> Iterator[Episode]:
    """The episodes ``rows`` (ascending) of each (shard, rows, source_index) part, one read
    covering a part's rows, with their recorded positions in their source."""
    for shard, rows, index in parts:
        if not len(rows):
            continue
        fields = ("obs", "action", "reward", "task") + (
            ("success",) if ds.has_field(shard, "success") else ()
        )
        first, last = int(rows[0]), int(rows[-1]) + 1
        data = ds.read_shard(shard, fields, slice(first, last))
        ds.check_decoded(shard, first, data)
        obs, action = data["obs"][..., :obs_dim], data["action"][..., :action_dim]
        success = data.get("success")
        for e, i in zip(rows - first, index, strict=True):
            yield Episode(
                obs[e],
                action[e],
                data["reward"][e],
                None if success is None else success[e],
                int(i) if i != UNKNOWN else UNKNOWN,
            )
