"""Write shard episodes as Minari datasets: one dataset per task, at the task's real widths.

Each task becomes ``tdmpc2/<task>/<name>-v0`` under the output directory, which is then a
``MINARI_DATASETS_PATH`` root. Conventions (time-limit ends, ``infos["success"]``, the
``EnvSpec``), which ``convert --from minari`` reads back: docs/design.md#minari-export.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from tdmpc2_data.convert import import_library
from tdmpc2_data.convert.episodes import Episode
from tdmpc2_data.export import TaskSelection, task_episodes
from tdmpc2_data.reader import Dataset
from tdmpc2_data.tasks import ACTION_LIMIT

NAMESPACE = "tdmpc2"
VERSION = 0
BATCH_EPISODES = 64


def require() -> Any:
    """Minari (and h5py, its storage), or `LibraryUnavailableError` with what to install."""
    install = "install it with `pip install 'tdmpc2-toolkit[convert]'`"
    import_library("h5py", install)
    return import_library("minari", install)


def dataset_id(task: str, name: str) -> str:
    """The Minari id of one task's dataset (its task is the middle part, as ``from_minari``
    finds it)."""
    return f"{NAMESPACE}/{task}/{name}-v{VERSION}"


def _minari_name(name: str) -> str:
    """``name`` with what a Minari dataset name cannot hold replaced by ``_``."""
    clean = re.sub(r"[^\w-]+", "_", name).strip("_-")
    clean = re.sub(r"-v(\d+)$", r"_v\1", clean)  # would read as the version
    return clean or "dataset"


@contextmanager
def _datasets_path(root: Path) -> Iterator[None]:
    """Point Minari at ``root`` (it places new datasets under ``MINARI_DATASETS_PATH``)."""
    before = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if before is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = before


def _buffer(episode: Episode) -> Any:
    from minari.data_collector import EpisodeBuffer

    steps = episode.action.shape[0]
    truncations = np.zeros(steps, bool)
    truncations[-1] = True
    infos = {}
    if episode.success is not None:
        infos["success"] = np.concatenate([[False], episode.success.astype(bool)])
    return EpisodeBuffer(
        observations=np.asarray(episode.obs, np.float32),
        actions=np.asarray(episode.action, np.float32),
        rewards=np.asarray(episode.reward, np.float32),
        terminations=np.zeros(steps, bool),
        truncations=truncations,
        infos=infos,
    )


def _task_env(task: str) -> Any:
    """The task's env made through its gymnasium id (Minari keeps its spec), or None when
    its simulator is not installed here."""
    import gymnasium

    from tdmpc2_data.envs import SimulatorUnavailableError, gym_id

    try:
        return gymnasium.make(gym_id(task))
    except SimulatorUnavailableError:
        return None


def write(
    ds: Dataset, selection: list[TaskSelection], root: Path, bar: Any, name: str | None = None
) -> list[str]:
    """Write one Minari dataset per selected task under ``root``; returns their ids."""
    minari = require()

    name = _minari_name(name or ds.name)
    root.mkdir(parents=True)
    ids = []
    with _datasets_path(root), warnings.catch_warnings():
        # Minari asks for authors, e-mails and code links the shards do not record.
        warnings.filterwarnings("ignore", message=r".*is set to None", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"env_spec is None", category=UserWarning)
        for sel in selection:
            did = dataset_id(sel.name, name)
            obs_space = spaces.Box(-np.inf, np.inf, (sel.obs_dim,), np.float32)
            action_space = spaces.Box(-ACTION_LIMIT, ACTION_LIMIT, (sel.action_dim,), np.float32)
            episodes = task_episodes(ds, sel)
            dataset = None
            while batch := [_buffer(e) for e in islice(episodes, BATCH_EPISODES)]:
                if dataset is None:
                    env = _task_env(sel.name)
                    try:
                        dataset = minari.create_dataset_from_buffers(
                            did,
                            batch,
                            env=env,
                            observation_space=obs_space,
                            action_space=action_space,
                            algorithm_name="tdmpc2-data export",
                            description=f"Task {sel.name} of the shard dataset {ds.name!r} "
                            f"({ds.location}), exported by tdmpc2-data.",
                        )
                    finally:
                        if env is not None:
                            env.close()
                else:
                    dataset.update_dataset_from_buffer(batch)
                bar.update(len(batch))
            ids.append(did)
    return ids
