"""Convert Minari datasets (one agent/seed each) into a shard dataset.

A source is a local Minari dataset id (``namespace/name-v0``, looked up under
``MINARI_DATASETS_PATH`` like ``minari.load_dataset``) or the path of a dataset directory
(the one holding ``data/``, or ``data/`` itself). Episodes come from
``dataset.iterate_episodes()`` one at a time; Minari already stores them aligned like the
shards (observations [T+1], actions [T], rewards [T]). Dict/tuple observations are flattened
in the order of the dataset's observation space (as ``gymnasium.spaces.flatten`` does).
The task comes from ``tasks`` or else from the env id / dataset id when one of them, or
one part of the dataset id, names a registry task (``tdmpc2/walker-walk/expert-v0``).
Actions are mapped from the dataset's action space to the tasks' [-1, 1] when its bounds
are finite and differ (Pendulum's [-2, 2]); the bounds are kept in the source's provenance.
Per-step success flags come from ``infos["success"]`` when the episodes record it (Minari
infos have T+1 entries, the reset's first; ``tdmpc2-data export --to minari`` writes them so).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from tdmpc2_data.convert.episodes import Episode, align
from tdmpc2_data.convert.merge import Source, path_bytes
from tdmpc2_data.tasks import ACTION_LIMIT

FORMAT = "minari"


def load(source: str | os.PathLike) -> Any:
    """The ``MinariDataset`` of a local dataset id or dataset directory."""
    import minari

    path = Path(source)
    if path.is_dir():
        data = path / "data" if (path / "data").is_dir() else path
        if not (data / "metadata.json").is_file():
            raise ValueError(f"{path}: not a Minari dataset directory (no metadata.json).")
        return minari.MinariDataset(data)
    try:
        return minari.load_dataset(str(source))
    except (FileNotFoundError, ValueError) as exc:
        raise ValueError(
            f"{source}: neither a Minari dataset directory nor a local dataset id ({exc})."
        ) from None


def flatten(space: spaces.Space, x: Any, where: str) -> np.ndarray:
    """[N, ...] observations (arrays, or dicts/tuples of them) as [N, flatdim] float arrays."""
    if isinstance(space, spaces.Dict):
        return np.concatenate([flatten(s, x[k], where) for k, s in space.spaces.items()], -1)
    if isinstance(space, spaces.Tuple):
        return np.concatenate([flatten(s, x[i], where) for i, s in enumerate(space.spaces)], -1)
    if isinstance(space, spaces.Box):
        x = np.asarray(x)
        return x.reshape(x.shape[0], -1)
    raise ValueError(f"{where}: {type(space).__name__} spaces are not supported (Box/Dict/Tuple).")


def _task_candidates(dataset: Any) -> list[str]:
    """Names that may name the dataset's task: env id, dataset id and its parts."""
    spec = dataset.spec
    names = []
    if spec.env_spec is not None:
        names += [spec.env_spec.id, re.sub(r"-v\d+$", "", spec.env_spec.id)]
    dataset_id = re.sub(r"-v\d+$", "", spec.dataset_id)
    names += [dataset_id, *dataset_id.split("/")]
    return list(dict.fromkeys(names))


def _action_rescaling(space: spaces.Box) -> Callable[[np.ndarray], np.ndarray] | None:
    """The affine map from a finite Box other than [-1, 1] onto [-1, 1] (None: keep as is;
    infinite bounds are left to the writer's range check)."""
    low, high = space.low.ravel().astype(np.float64), space.high.ravel().astype(np.float64)
    if not (np.isfinite(low).all() and np.isfinite(high).all()) or (
        (low == -ACTION_LIMIT).all() and (high == ACTION_LIMIT).all()
    ):
        return None
    scale = 2 * ACTION_LIMIT / (high - low)
    return lambda a: ((a - low) * scale - ACTION_LIMIT).astype(np.float32)


def _success(infos: Any, steps: int, where: str) -> np.ndarray | None:
    """Per-step success [T] from an episode's ``infos["success"]`` ([T+1] or [T]), if any."""
    flags = infos.get("success") if isinstance(infos, dict) else None
    if flags is None:
        return None
    flags = np.asarray(flags).reshape(-1)
    if flags.shape[0] == steps + 1:
        flags = flags[1:]
    if flags.shape[0] != steps:
        raise ValueError(
            f"{where}: infos['success'] has {flags.shape[0]} entries for {steps} steps; "
            f"expected {steps + 1} (one per observation) or {steps}."
        )
    return flags.astype(bool)


def open_source(source: str | os.PathLike) -> Source:
    """Read one Minari dataset's metadata; episodes stream later."""
    where = str(source)
    dataset = load(source)
    if not isinstance(dataset.action_space, spaces.Box):
        raise ValueError(
            f"{where}: action space {dataset.action_space} is not continuous (Box); TD-MPC2 "
            "needs continuous actions."
        )
    obs_space = dataset.observation_space
    info = {"dataset_id": dataset.spec.dataset_id, "bytes": path_bytes(dataset.spec.data_path)}
    if dataset.spec.env_spec is not None:
        info["env_id"] = dataset.spec.env_spec.id
    to_task_range = _action_rescaling(dataset.action_space)
    if to_task_range is not None:
        info["action_bounds"] = [
            dataset.action_space.low.ravel().tolist(),
            dataset.action_space.high.ravel().tolist(),
        ]

    def episodes() -> Iterator[Episode | None]:
        for episode in load(source).iterate_episodes():
            at = f"{where} episode {episode.id}"
            obs = flatten(obs_space, episode.observations, at)
            action = np.asarray(episode.actions).reshape(len(episode.actions), -1)
            if to_task_range is not None:
                action = to_task_range(action)
            aligned = align(at, obs, action, np.asarray(episode.rewards), None)
            if aligned is not None:
                aligned = aligned._replace(success=_success(episode.infos, len(action), at))
            yield aligned

    return Source(
        where,
        FORMAT,
        spaces.flatdim(obs_space),
        spaces.flatdim(dataset.action_space),
        episodes,
        dataset.total_episodes,
        _task_candidates(dataset),
        info,
    )
