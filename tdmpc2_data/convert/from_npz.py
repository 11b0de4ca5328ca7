"""Convert ``.npz`` files (one agent/seed each) into a shard dataset.

Accepted arrays (names as in `episodes.NAMES`: obs|observations, action|actions,
reward|rewards, next_obs|next_observations, episode, done|terminals|timeouts|...):

- per episode: ``obs [E, T+1, d]`` with ``action [E, T, a]``, ``reward [E, T]`` (already
  aligned), or ``action [E, T+1, a]``, ``reward [E, T+1]`` (one row per step: pass
  ``index_convention``);
- stacked transitions: ``obs [N, d]``, ``action [N, a]``, ``reward [N]``, split into episodes
  by ``episode`` ids or by ``done`` flags (a flag ends the episode at its row), with
  ``next_obs [N, d]`` or an ``index_convention``.

Optional scalars: ``task`` (a task name) and ``seed``. Files saved without compression
(``np.savez``) are memory-mapped, so a large file streams episode by episode; compressed
members are read whole. Object arrays are refused (they would need pickle).
"""

from __future__ import annotations

import os
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tdmpc2_data.convert.episodes import (
    Episode,
    align,
    episode_rows,
    find,
    require,
    split_episodes,
)
from tdmpc2_data.convert.merge import Source

FORMAT = "npz"


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an npz file: memory maps for stored members, loaded arrays otherwise."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not an .npz archive")
    arrays = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as f:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            if info.compress_type != zipfile.ZIP_STORED:
                with archive.open(info) as member:
                    arrays[name] = _read_npy(member, path, name)
                continue
            f.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", f.read(4))
            f.seek(info.header_offset + 30 + name_len + extra_len)
            shape, fortran, dtype = _npy_header(f, path, name)
            arrays[name] = np.memmap(
                path, dtype, "r", f.tell(), shape, order="F" if fortran else "C"
            )
    return arrays


def _npy_header(f: Any, path: Path, name: str) -> tuple:
    version = np.lib.format.read_magic(f)
    read = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read(f)
    if dtype.hasobject:
        raise ValueError(f"{path}: array {name!r} holds Python objects (pickle); refused.")
    return shape, fortran, dtype


def _read_npy(member: Any, path: Path, name: str) -> np.ndarray:
    shape, fortran, dtype = _npy_header(member, path, name)
    data = np.frombuffer(member.read(), dtype)
    return data.reshape(shape, order="F" if fortran else "C")


def open_source(path: str | os.PathLike, index_convention: str | None = None) -> Source:
    """Read the layout of one npz file (shapes, task, seed); episodes stream later."""
    arrays = load_arrays(path)
    where = str(path)
    keys = {f: require(arrays, f, where) for f in ("obs", "action", "reward")}
    obs, action = arrays[keys["obs"]], arrays[keys["action"]]
    if obs.ndim not in (2, 3) or action.ndim != obs.ndim:
        raise ValueError(
            f"{where}: {keys['obs']} has shape {obs.shape} and {keys['action']} {action.shape}; "
            "expected [N, d] and [N, a] (stacked rows) or [E, T+1, d] and [E, T, a] (per episode)."
        )
    info = {}
    if "seed" in arrays:
        info["seed"] = int(np.asarray(arrays["seed"]).item())
    task = [str(np.asarray(arrays["task"]).item())] if "task" in arrays else []
    if obs.ndim == 3:
        episodes, count = _per_episode(arrays, keys, where, index_convention), obs.shape[0]
    else:
        episodes, count = _stacked(arrays, keys, where, index_convention)
    return Source(str(path), FORMAT, obs.shape[-1], action.shape[-1], episodes, count, task, info)


def _per_episode(arrays, keys, where, convention):
    def episodes() -> Iterator[Episode | None]:
        data = load_arrays(where)
        obs, action, reward = (data[keys[f]] for f in ("obs", "action", "reward"))
        if not obs.shape[0] == action.shape[0] == reward.shape[0]:
            raise ValueError(
                f"{where}: obs, action and reward hold {obs.shape[0]}, {action.shape[0]} and "
                f"{reward.shape[0]} episodes."
            )
        for e in range(obs.shape[0]):
            yield align(f"{where} episode {e}", obs[e], action[e], reward[e], convention)

    return episodes


def _stacked(arrays, keys, where, convention):
    n = arrays[keys["obs"]].shape[0]
    for key in (keys["action"], keys["reward"]):
        if arrays[key].shape[0] != n:
            raise ValueError(f"{where}: {key} has {arrays[key].shape[0]} rows, obs {n}.")
    rows = episode_rows(arrays, n, where)
    next_key = find(arrays, "next_obs")

    def episodes() -> Iterator[Episode | None]:
        data = load_arrays(where)
        obs, action, reward = (data[keys[f]] for f in ("obs", "action", "reward"))
        next_obs = data[next_key] if next_key else None
        yield from split_episodes(where, obs, action, reward, next_obs, rows, convention)

    return episodes, len(rows)
