"""Convert HDF5 files (one agent/seed each, read with h5py) into a shard dataset.

Two layouts, detected from the file: D4RL-style flat rows at the root, or one root group per
episode (a Minari ``main_data.hdf5``); accepted names are in `episodes.NAMES`. Layouts and
``index_convention``: docs/data.md#source-layouts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import h5py

from tdmpc2_data.convert.episodes import (
    NAMES,
    Episode,
    align,
    episode_rows,
    find,
    require,
    split_episodes,
)
from tdmpc2_data.convert.merge import Source

FORMAT = "hdf5"


def open_source(path: str | os.PathLike, index_convention: str | None = None) -> Source:
    """Read the layout of one HDF5 file (shapes, task, seed); episodes stream later."""
    where = str(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{where}: not a readable HDF5 file ({exc})") from None
    with f:
        info = {"seed": int(f.attrs["seed"])} if "seed" in f.attrs else {}
        task = [_text(f.attrs["task"])] if "task" in f.attrs else []
        if find(f, "obs") is not None:
            dims, count, episodes = _flat(f, where, index_convention or "shards")
        else:
            dims, count, episodes = _groups(f, where, index_convention)
    return Source(where, FORMAT, *dims, episodes, count, task, info)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _dataset(f: h5py.Group, field: str, where: str) -> h5py.Dataset:
    key = require(f, field, where)
    if not isinstance(f[key], h5py.Dataset):
        raise ValueError(
            f"{where}: {f[key].name} is a group, not an array (dict observations are not "
            "supported here; Minari datasets convert with --from minari)."
        )
    return f[key]


def _flat(f: h5py.File, where: str, convention: str):
    obs, action, reward = (_dataset(f, k, where) for k in ("obs", "action", "reward"))
    n = obs.shape[0]
    for d in (action, reward):
        if d.shape[0] != n:
            raise ValueError(f"{where}: {d.name} has {d.shape[0]} rows, {obs.name} {n}.")
    if obs.ndim != 2 or action.ndim != 2:
        raise ValueError(
            f"{where}: {obs.name} {obs.shape} and {action.name} {action.shape}; expected [N, d] "
            "and [N, a]."
        )
    columns = {k: f[k][()] for k in (*NAMES["episode"], *NAMES["done"]) if k in f}
    rows = episode_rows(columns, n, where)
    names = {k: d.name for k, d in (("obs", obs), ("action", action), ("reward", reward))}
    next_key = find(f, "next_obs")

    def episodes() -> Iterator[Episode | None]:
        with h5py.File(where, "r") as g:
            o, a, r = (g[names[k]] for k in ("obs", "action", "reward"))
            nxt = g[next_key] if next_key else None
            yield from split_episodes(where, o, a, r, nxt, rows, convention)

    return (obs.shape[1], action.shape[1]), len(rows), episodes


def _natural(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _groups(f: h5py.File, where: str, convention: str | None):
    groups = sorted((k for k in f if isinstance(f[k], h5py.Group)), key=_natural)
    if not groups:
        raise ValueError(
            f"{where}: neither flat rows (observations/actions/rewards at the root) nor "
            f"per-episode groups; found {', '.join(sorted(f)) or 'nothing'}."
        )
    first = f[groups[0]]
    obs, action = (_dataset(first, k, f"{where}:{first.name}") for k in ("obs", "action"))

    def episodes() -> Iterator[Episode | None]:
        with h5py.File(where, "r") as g:
            for name in groups:
                group, at = g[name], f"{where}:/{name}"
                o, a, r = (_dataset(group, k, at)[()] for k in ("obs", "action", "reward"))
                nxt = find(group, "next_obs")
                yield align(at, o, a, r, convention, None if nxt is None else group[nxt][()])

    return (obs.shape[-1], action.shape[-1]), len(groups), episodes
