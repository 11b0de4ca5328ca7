"""Write shard episodes as a LeRobotDataset, through LeRobot's own ``LeRobotDataset.create`` /
``add_frame`` / ``save_episode`` / ``finalize`` (so the files are what LeRobot itself writes).

One frame per transition t of an episode (obs[t] -> obs[t+1]):

====================== ============ ==================================================
feature                dtype, shape value
====================== ============ ==================================================
observation.state      float32 [D]  obs[t]
action                 float32 [A]  action[t]
next.reward            float32 [1]  reward[t]
next.observation.state float32 [D]  obs[t+1]
next.success           bool [1]     success[t] (only when every selected shard has it)
task                   string       the task's registry name (LeRobot's task string)
episode_index          int64        running number of the exported episode (LeRobot's)
====================== ============ ==================================================

``next.observation.state`` keeps each episode's final observation, so the round trip
(``convert --from lerobot``) gives the shards back. D and A are the widths of the widest task
*exported* (one task: unpadded); a multitask export records each task's real dims in
``meta/tdmpc2.json``. ``fps`` (default ``DEFAULT_FPS``) only sets LeRobot's timestamps.
Why: docs/design.md#lerobot-export.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from tdmpc2_data.convert.episodes import Episode
from tdmpc2_data.convert.from_lerobot import NO_VIDEO_BACKEND, SIDECAR, lerobot_dataset_class
from tdmpc2_data.export import TaskSelection, task_episodes
from tdmpc2_data.reader import Dataset
from tdmpc2_data.schema import zero_pad
from tdmpc2_data.versions import __version__

#: LeRobot's usual recording rate; only sets the timestamps (see the module docstring).
DEFAULT_FPS = 30


def require() -> None:
    """Fail early, with what to install, when LeRobot is missing."""
    lerobot_dataset_class()


def default_repo_id(ds: Dataset) -> str:
    """``tdmpc2/<dataset name>``: LeRobot wants an ``owner/name`` id even for local data."""
    return "tdmpc2/" + (re.sub(r"[^\w.-]+", "_", ds.name).strip("_.-") or "dataset")


def features(obs_dim: int, action_dim: int, success: bool) -> dict[str, dict[str, Any]]:
    """The LeRobot feature spec of an export (see the module docstring)."""
    state = {"dtype": "float32", "shape": (obs_dim,), "names": [f"obs_{i}" for i in range(obs_dim)]}
    spec = {
        "observation.state": state,
        "action": {
            "dtype": "float32",
            "shape": (action_dim,),
            "names": [f"action_{i}" for i in range(action_dim)],
        },
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
        "next.observation.state": state,
    }
    if success:
        spec["next.success"] = {"dtype": "bool", "shape": (1,), "names": None}
    return spec


def write(
    ds: Dataset,
    selection: list[TaskSelection],
    root: Path,
    bar: Any,
    repo_id: str | None = None,
    fps: int = DEFAULT_FPS,
) -> list[str]:
    """Write the selection as one LeRobotDataset at ``root``; returns ``[repo_id]``."""
    LeRobotDataset = lerobot_dataset_class()
    if fps <= 0:
        raise ValueError(f"--fps {fps}: expected a positive frame rate.")
    repo_id = repo_id or default_repo_id(ds)
    obs_dim = max(s.obs_dim for s in selection)
    action_dim = max(s.action_dim for s in selection)
    success = all(ds.has_field(shard, "success") for s in selection for shard, _ in s.runs)
    dataset = LeRobotDataset.create(
        repo_id,
        fps,
        features(obs_dim, action_dim, success),
        root=root,
        use_videos=False,
        video_backend=NO_VIDEO_BACKEND,
    )
    with _quiet_datasets():  # `datasets` shows a bar per saved episode
        try:
            for sel in selection:
                for episode in task_episodes(ds, sel):
                    _add_episode(dataset, sel.name, episode, obs_dim, action_dim, success)
                    bar.update()
        finally:
            dataset.finalize()
    sidecar = {
        "exported_by": f"tdmpc2-toolkit {__version__}",
        "source": {"location": ds.location, "name": ds.name},
        "tasks": [
            {"name": s.name, "obs_dim": s.obs_dim, "action_dim": s.action_dim} for s in selection
        ],
    }
    (root / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n")
    return [repo_id]


def _add_episode(
    dataset: Any, task: str, episode: Episode, obs_dim: int, action_dim: int, success: bool
) -> None:
    """One episode as frames (see the module docstring), then LeRobot's ``save_episode``."""
    obs = _pad(episode.obs, obs_dim)
    action = _pad(episode.action, action_dim)
    reward = episode.reward.astype(np.float32)
    for t in range(action.shape[0]):
        frame = {
            "observation.state": obs[t],
            "action": action[t],
            "next.reward": reward[t : t + 1],
            "next.observation.state": obs[t + 1],
            "task": task,
        }
        if success:
            frame["next.success"] = episode.success[t : t + 1].astype(bool)
        dataset.add_frame(frame)
    dataset.save_episode()


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    import datasets

    shown = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if shown:
            datasets.enable_progress_bars()


def _pad(x: np.ndarray, width: int) -> np.ndarray:
    return zero_pad(x, width) if x.shape[-1] != width else x.astype(np.float32, copy=False)
