"""A dataset's content as a comparable value: tests compare datasets by what they hold."""

from __future__ import annotations

import os

from tdmpc2_data import open_dataset
from tdmpc2_data.reader import Dataset


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
