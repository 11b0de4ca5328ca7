"""A dataset's content as a comparable value: tests compare datasets by what they hold."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tdmpc2_data import open_dataset
from tdmpc2_data.reader import Dataset
from tdmpc2_data.tasks import get_task
from tdmpc2_data.writer import ShardWriter


def episodes(ds: Dataset | str | os.PathLike) -> list[tuple[str, bytes]]:
    """(task name, bytes of obs/action/reward) of every episode, sorted."""
    ds = ds if isinstance(ds, Dataset) else open_dataset(ds)
    out = []
    for i in range(len(ds.shards)):
        data = ds.read_shard(i)
        for e in range(ds.shards[i].episodes):
            blob = b"".join(data[k][e].tobytes() for k in ("obs", "action", "reward"))
            out.append((ds.tasks[data["task"][e]], blob))
    return sorted(out)


def write_random(root, tasks, episodes: int, seed: int = 0, length: int = 20,
                 success: bool = True, **writer: Any) -> dict[str, list[tuple]]:  # fmt: skip
    """A shard dataset of random episodes at each task's real widths (``writer``: more
    ShardWriter options); returns {task: [(obs, action, reward, success)]} in writing order."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[tuple]] = {t: [] for t in tasks}
    with ShardWriter(root, tasks=tasks, **writer) as w:
        for task in tasks:
            spec = get_task(task)
            for _ in range(episodes):
                ep = (
                    rng.normal(size=(length + 1, spec.obs_dim)).astype(np.float32),
                    rng.uniform(-1, 1, (length, spec.action_dim)).astype(np.float32),
                    rng.normal(size=length).astype(np.float32),
                    rng.uniform(size=length) > 0.5 if success else None,
                )
                w.add_episode(task, *ep)
                written[task].append(ep)
    return written


def real_width_episodes(root) -> dict[str, list[tuple]]:
    """{task: [(obs, action, reward, success or None)]} of a shard dataset at the tasks' real
    widths, in storage order (the padding checked to be zero)."""
    ds = open_dataset(root)
    out: dict[str, list[tuple]] = {}
    for i in range(len(ds.shards)):
        fields = ("obs", "action", "reward", "task", "success")
        data = ds.read_shard(i, fields if ds.has_field(i, "success") else fields[:-1])
        for e, tid in enumerate(data["task"]):
            info = ds.task_info[int(tid)]
            d, a = info["obs_dim"], info["action_dim"]
            assert not data["obs"][e][:, d:].any() and not data["action"][e][:, a:].any()
            success = data["success"][e] if "success" in data else None
            out.setdefault(info["name"], []).append(
                (data["obs"][e][:, :d], data["action"][e][:, :a], data["reward"][e], success)
            )
    return out
