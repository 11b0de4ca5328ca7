"""``PaddedEnv``: one task's env at a model's widths, the one place where observations are
zero padded and padded actions are cut to the task's own dims.

A model acting on several tasks (or a dataset holding them) sees every observation zero
padded to its ``obs_dim`` and emits actions ``action_dim`` wide whose first dims are the
task's (``action_mask``); the padding dims of an action are ignored.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from tdmpc2_data.envs.base import TaskEnv
from tdmpc2_data.schema import action_masks, zero_pad
from tdmpc2_data.tasks import ACTION_LIMIT, Task


class PaddedEnv(gym.Wrapper):
    """``env`` with observations zero padded to ``obs_dim`` and actions taken ``action_dim``
    wide (those of ``env.task`` come first)."""

    def __init__(self, env: TaskEnv, obs_dim: int, action_dim: int) -> None:
        super().__init__(env)
        task = env.task
        if task.obs_dim > obs_dim or task.action_dim > action_dim:
            raise ValueError(
                f"Task {task.name!r} has obs/action dims {task.obs_dim}/{task.action_dim}; "
                f"cannot pad them to {obs_dim}/{action_dim}."
            )
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-ACTION_LIMIT, ACTION_LIMIT, (action_dim,), np.float32)
        #: float32 [action_dim]: 1 on the task's action dims, 0 on the padding
        self.action_mask = action_masks([task.action_dim], action_dim)[0]

    @property
    def task(self) -> Task:
        return self.env.task

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        return self._pad(obs), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float32)
        if action.shape != self.action_space.shape:
            raise ValueError(
                f"{self.task.name}: actions are padded to shape {self.action_space.shape}, "
                f"got {action.shape}."
            )
        obs, reward, terminated, truncated, info = self.env.step(action[: self.task.action_dim])
        return self._pad(obs), reward, terminated, truncated, info

    def random_action(self, rng: np.random.Generator) -> np.ndarray:
        """Uniform in [-1, 1] on the task's dims, 0 on the padding (the seeding phase's)."""
        action = rng.uniform(-ACTION_LIMIT, ACTION_LIMIT, self.task.action_dim)
        return zero_pad(action, self.action_space.shape[0])

    def _pad(self, obs: np.ndarray) -> np.ndarray:
        return zero_pad(obs, self.observation_space.shape[0])
