"""Merge shard datasets into one, as ``minari combine`` does: ``convert A B OUT --from shards``.

Each (dataset, task) pair becomes one `Source`, so a merge gets what every conversion gets:
the destination's task table (``task_set`` or the tasks in the order met), a ``sources``
entry per pair, and resume (a rerun skips pairs already merged). Episodes are streamed one
shard run at a time, keep their ``success`` flags, and are cut to the task's real widths
(the destination pads to its own); damage (``Dataset.check_decoded``) is refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tdmpc2_data.convert.episodes import Episode
from tdmpc2_data.convert.merge import Source, SourceResult, convert_sources
from tdmpc2_data.reader import Dataset, open_dataset
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
    pairs: list[Source] = []
    for path in sources:
        if Path(path).resolve() == out:
            raise ValueError(f"{path}: a dataset cannot be merged into itself.")
        ds = open_dataset(path)
        pairs += [task_source(ds, name) for name in ds.tasks if keep is None or name in keep]
    if not pairs:
        raise ValueError(
            f"No episodes of tasks {sorted(keep or ())} in {', '.join(map(str, sources))}."
        )
    return convert_sources(pairs, dst, tasks=[p.info["task"] for p in pairs], **options)


def task_source(ds: Dataset, name: str) -> Source:
    """The episodes of task ``name`` in ``ds`` as one single-task source."""
    runs = ds.task_episodes(name)
    task = get_task(name)
    return Source(
        path=ds.location,
        format=FORMAT,
        obs_dim=ds.obs_dim,
        action_dim=ds.action_dim,
        episodes=lambda: read_episodes(ds, runs, task.obs_dim, task.action_dim),
        num_episodes=sum(len(r) for _, r in runs),
        info={"task": name},
    )


def read_episodes(
    ds: Dataset, runs: Sequence[tuple[int, range]], obs_dim: int, action_dim: int
) -> Iterator[Episode]:
    """The episodes of ``runs`` ((shard index, episode range) of one task) at the widths
    ``obs_dim``/``action_dim``, one run decoded at a time and checked (``check_decoded``);
    shared by merging and ``tdmpc2_data.export``."""
    for shard, episodes in runs:
        fields = ("obs", "action", "reward", "task") + (
            ("success",) if ds.has_field(shard, "success") else ()
        )
        data = ds.read_shard(shard, fields, slice(episodes.start, episodes.stop))
        ds.check_decoded(shard, episodes.start, data)
        obs, action = data["obs"][..., :obs_dim], data["action"][..., :action_dim]
        success = data.get("success")
        for e in range(len(episodes)):
            yield Episode(
                obs[e], action[e], data["reward"][e], None if success is None else success[e]
            )
