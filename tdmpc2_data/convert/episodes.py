"""Turn the rows of a replay buffer into episodes aligned like the shards (no filler step).

A shard episode is obs [T+1, d], action [T, a], reward [T] with ``action[t]``/``reward[t]``
belonging to obs[t] -> obs[t+1]. Buffers store one row per step in one of three ways:

- with next observations (TorchRL's ``("next", "observation")``, D4RL's
  ``next_observations``): row t = obs[t], action[t], reward[t], next_obs[t], so n rows are n
  transitions and the episode's last obs is ``next_obs`` of its last row;
- ``shards`` convention: row t = obs[t] and the action taken there (D4RL without
  ``next_observations``); the last row's action/reward has no next obs and is dropped;
- ``legacy`` convention (the original TD-MPC2 buffers and published chunks): row t = obs[t]
  and the action/reward that *led to* it; row 0 is a filler (NaN or 0) and is dropped.

Getting this off by one silently ruins training, so every converter goes through `align`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

CONVENTIONS = ("shards", "legacy")

#: Accepted names of each field in flat/per-episode arrays (npz keys, HDF5 datasets).
NAMES: dict[str, tuple[str, ...]] = {
    "obs": ("obs", "observations", "observation"),
    "action": ("action", "actions"),
    "reward": ("reward", "rewards"),
    "next_obs": ("next_obs", "next_observations", "next_observation"),
    "episode": ("episode", "episode_id", "episode_ids"),
    # Any of these ends an episode at its row (they are OR-ed).
    "done": ("done", "dones", "terminals", "timeouts", "terminated", "truncated"),
}


class Episode(NamedTuple):
    """One episode in the shard alignment: obs [T+1, d], action [T, a], reward [T],
    success [T] when the source records it; ``index``: its position in the source when the
    source records one (-1: recorded as unknown), None: the order the source yields it."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    success: np.ndarray | None = None
    index: int | None = None


def find(arrays: Mapping[str, Any], field: str) -> str | None:
    """The key of ``arrays`` holding ``field`` under one of its accepted names (or None)."""
    return next((k for k in NAMES[field] if k in arrays), None)


def require(arrays: Mapping[str, Any], field: str, where: str) -> str:
    """Like `find`, but a missing field is an error naming the file and the accepted names."""
    key = find(arrays, field)
    if key is None:
        raise ValueError(
            f"{where}: no {field} array (looked for {', '.join(NAMES[field])}; "
            f"found {', '.join(sorted(arrays)) or 'nothing'})."
        )
    return key


def split_rows(
    order: np.ndarray, ids: np.ndarray | None = None, done: np.ndarray | None = None
) -> list[np.ndarray]:
    """Storage rows of each episode, in chronological order.

    ``order``: the storage rows in the order they were written (a ring buffer that wrapped
    starts at its cursor). ``ids``: per-row episode ids (rows of one id form an episode even
    when episodes of several envs are interleaved). Otherwise ``done``: per-row flags that
    end an episode at that row (rows after the last flag are an unfinished episode). Neither:
    all rows are one episode. ``ids``/``done`` are indexed by storage row.
    """
    if ids is not None:
        ids = np.asarray(ids)[order]
        by_id = np.argsort(ids, kind="stable")
        _, starts = np.unique(ids[by_id], return_index=True)
        groups = sorted(np.split(by_id, starts[1:]), key=lambda g: g[0] if g.size else -1)
        return [order[g] for g in groups if g.size]
    if done is not None:
        ends = (np.flatnonzero(np.asarray(done)[order]) + 1).tolist()
        bounds = [0, *ends] if ends and ends[-1] == len(order) else [0, *ends, len(order)]
        return [order[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True) if hi > lo]
    return [order]


def episode_rows(arrays: Mapping[str, Any], n: int, where: str) -> list[np.ndarray]:
    """Rows of each episode of ``n`` stacked rows, from an ``episode`` id array, else the OR of
    the ``done``-like flag arrays, else one episode."""
    ids_key = find(arrays, "episode")
    flag_keys = [k for k in NAMES["done"] if k in arrays]
    columns = {}
    for key in [ids_key] if ids_key else flag_keys:
        column = squeeze_last(np.asarray(arrays[key]))
        if column.shape != (n,):
            raise ValueError(f"{where}: {key} has shape {column.shape}; expected ({n},).")
        columns[key] = column
    if ids_key:
        return split_rows(np.arange(n), ids=columns[ids_key])
    if flag_keys:
        return split_rows(np.arange(n), done=np.any(list(columns.values()), axis=0))
    return split_rows(np.arange(n))


def take(x: Any, rows: np.ndarray) -> np.ndarray:
    """``x[rows]`` read as one slice when the rows are consecutive (memmaps, h5py datasets)."""
    if rows.size and rows[-1] - rows[0] + 1 == rows.size and np.all(np.diff(rows) == 1):
        return np.asarray(x[int(rows[0]) : int(rows[-1]) + 1])
    ascending = np.argsort(rows)  # h5py wants increasing indices
    out = np.asarray(x[rows[ascending]])
    result = np.empty_like(out)
    result[ascending] = out
    return result


def squeeze_last(x: np.ndarray) -> np.ndarray:
    """Drop a trailing dimension of size 1 (TorchRL stores reward and flags as [N, 1])."""
    return x[..., 0] if x.ndim >= 2 and x.shape[-1] == 1 else x


def align(
    where: str,
    obs: np.ndarray,
    action: np.ndarray,
    reward: np.ndarray,
    convention: str | None,
    next_obs: np.ndarray | None = None,
) -> Episode | None:
    """One episode in the shard alignment from its rows (None if it holds no transition).

    Rows of obs with action/reward of one row fewer are already aligned. Equal row counts
    need ``convention`` ("shards": drop the last action/reward, "legacy": drop the filler at
    row 0) unless ``next_obs`` is given (then each row is a whole transition).
    """
    reward = squeeze_last(np.asarray(reward))
    n = obs.shape[0]
    if next_obs is not None:
        if n > 1 and not np.array_equal(next_obs[:-1], obs[1:], equal_nan=True):
            row = int(np.flatnonzero(np.any(next_obs[:-1] != obs[1:], axis=-1))[0])
            raise ValueError(
                f"{where}: next obs of step {row} differs from obs of step {row + 1}; the "
                "episode boundaries (episode ids / done flags) do not match the data."
            )
        obs = np.concatenate([obs, next_obs[-1:]])
    elif action.shape[0] == n:
        if convention not in CONVENTIONS:
            raise ValueError(
                f"{where}: obs, action and reward have one row per step and no next obs, so "
                "the index convention is ambiguous: pass --index-convention shards "
                "(action[t] taken at obs[t]) or legacy (row 0 is a filler, action[t] led to "
                "obs[t])."
            )
        keep = slice(1, None) if convention == "legacy" else slice(0, -1)
        action, reward = action[keep], reward[keep]
    if action.shape[0] != obs.shape[0] - 1 or reward.shape != action.shape[:1]:
        raise ValueError(
            f"{where}: obs has {n} steps, action {action.shape[0]}, reward "
            f"{reward.shape[0] if reward.ndim else reward.shape}; expected action and reward "
            "with one step fewer than obs, or (one row per step) all equal."
        )
    if action.shape[0] < 1:
        return None
    for field, x in (("action", action), ("reward", reward)):
        if not np.isfinite(x).all():
            bad = ~np.isfinite(x.reshape(x.shape[0], -1))
            step = int(np.flatnonzero(bad.any(1))[0])
            hint = (
                " (a NaN filler at step 0: the data may use --index-convention legacy)"
                if step == 0 and convention != "legacy"
                else ""
            )
            raise ValueError(f"{where}: {field} of step {step} is NaN or inf{hint}.")
    return Episode(obs, action, reward)


def split_episodes(
    where: str,
    obs: Any,
    action: Any,
    reward: Any,
    next_obs: Any | None,
    rows: Sequence[np.ndarray],
    convention: str | None,
) -> Iterator[Episode | None]:
    """``align`` each episode of flat row-indexed arrays, one episode's rows at a time."""
    for e, idx in enumerate(rows):
        yield align(
            f"{where} episode {e} (rows {idx[0]}-{idx[-1]})",
            take(obs, idx),
            take(action, idx),
            take(reward, idx),
            convention,
            None if next_obs is None else take(next_obs, idx),
        )
