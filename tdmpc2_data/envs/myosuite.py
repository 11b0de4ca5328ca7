"""MyoSuite hand tasks (39 muscle actions; no action repeat; success = ``info["solved"]``)."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import gymnasium as gym
import numpy as np

from tdmpc2_data.envs.base import RENDER_SIZE, TaskEnv
from tdmpc2_data.tasks import Task

with contextlib.redirect_stdout(io.StringIO()):  # some MyoSuite versions print a banner
    import myosuite  # noqa: F401  (registers the myo* ids with gymnasium)


class MyoSuiteEnv(TaskEnv):
    """The bare MyoSuite env, without its registered wrappers: their episode limits (50-200
    steps) and early termination (on instability or a task's own ``done``) would cut the
    paper's fixed 100-step episodes."""

    def __init__(self, task: Task, seed: int = 0, render_mode: str | None = None):
        super().__init__(task, seed, render_mode)
        self._env = gym.make(
            task.sim_id, render_mode=render_mode, disable_env_checker=True
        ).unwrapped

    def _reset_sim(self, seed: int | None) -> np.ndarray:
        obs, _ = self._env.reset(seed=seed)
        return obs

    def _step_sim(self, action: np.ndarray) -> tuple[np.ndarray, float, dict[str, Any]]:
        obs, reward, _, _, info = self._env.step(action)
        return obs, reward, {"success": float(info["solved"])}

    def _render_sim(self) -> np.ndarray:
        return self._env.render(
            width=RENDER_SIZE, height=RENDER_SIZE, camera_name="hand_side_inter"
        )
