"""Meta-World v3 tasks, goal-observable (39-dim observation, 4-dim action)."""

from __future__ import annotations

from typing import Any

import metaworld
import numpy as np
from gymnasium.envs.mujoco.mujoco_rendering import MujocoRenderer

from tdmpc2_data.envs.base import RENDER_SIZE, TaskEnv
from tdmpc2_data.tasks import Task


class MetaWorldEnv(TaskEnv):
    """A Meta-World task whose goal (and object placement) is redrawn at every reset from the
    env's own seeded generator, as in the paper's multi-goal tasks. Meta-World's own episode
    limit (500 simulator steps) is never reached: 100 agent steps x 2 = 200."""

    def __init__(self, task: Task, seed: int = 0, render_mode: str | None = None):
        super().__init__(task, seed, render_mode)
        env_cls = metaworld.ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{task.sim_id}-goal-observable"]
        self._env = env_cls(seed=seed, render_mode=render_mode)
        self._env._freeze_rand_vec = False  # a new goal at every reset ...
        self._env.seeded_rand_vec = True  # ... drawn from env.np_random, not numpy's global RNG
        if render_mode is not None:  # the paper's video view instead of the default 480x480
            self._env.mujoco_renderer = MujocoRenderer(
                self._env.model, self._env.data, width=RENDER_SIZE, height=RENDER_SIZE,
                camera_name="corner2",
            )  # fmt: skip

    def _reset_sim(self, seed: int | None) -> np.ndarray:
        if seed is not None:
            self._env.seed(seed)
        obs, _ = self._env.reset()
        return obs

    def _step_sim(self, action: np.ndarray) -> tuple[np.ndarray, float, dict[str, Any]]:
        obs, reward, _, _, info = self._env.step(action)
        info = {k: float(v) for k, v in info.items()}
        return obs, reward, info

    @property
    def goal(self) -> np.ndarray:
        """The current episode's goal position."""
        return self._env._target_pos.copy()

    def _render_sim(self) -> np.ndarray:
        # Meta-World's cameras were set up for mujoco-py's bottom-up frames: flip them back.
        return np.flipud(self._env.render()).copy()
