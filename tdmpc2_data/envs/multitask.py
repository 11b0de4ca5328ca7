"""``MultitaskEnv``: the tasks of a multitask model behind one padded interface.

A multitask TD-MPC2 model sees every task's observation zero-padded to the widest one and
emits actions as wide as the widest action space; the task's own action dims come first
(``action_mask``). This env holds one `PaddedEnv` per task, which does that padding.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from tdmpc2_data.envs.make import make_env
from tdmpc2_data.envs.padded import PaddedEnv
from tdmpc2_data.tasks import (
    ACTION_LIMIT,
    Task,
    get_task,
    padded_dims,
    resolve_tasks,
    table_index,
)


class MultitaskEnv(gym.Env):
    """Envs for a task list or task-set name (``"mt80"``); task ids are list positions.

    ``reset(task=...)`` (or ``options={"task": ...}``) selects a task by name or id; without
    one, a task is drawn uniformly from the env's generator (seeded by ``seed`` and by
    ``reset(seed=...)``, so seeded resets are reproducible). Envs are created on first use.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, tasks: list[str] | str, seed: int = 0, **env_kwargs: Any):
        self.tasks: list[str] = resolve_tasks(tasks)
        self._specs: list[Task] = [get_task(name) for name in self.tasks]
        obs_dim, action_dim = padded_dims(self.tasks)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-ACTION_LIMIT, ACTION_LIMIT, (action_dim,), np.float32)
        self.render_mode = env_kwargs.get("render_mode")
        self._seed = seed
        self.np_random, _ = gym.utils.seeding.np_random(seed)
        self._env_kwargs = env_kwargs
        self._envs: dict[int, PaddedEnv] = {}
        self.task_id: int | None = None  # the current episode's task; None before reset

    @property
    def task(self) -> Task:
        """The current task."""
        return self._specs[self._current()]

    @property
    def action_mask(self) -> np.ndarray:
        """float32 [action_dim]: 1 for the current task's action dims, 0 for padding."""
        return self.env(self._current()).action_mask

    def env(self, task: str | int) -> PaddedEnv:
        """The (lazily created) padded env of a task given by name or id."""
        task_id = self.task_index(task)
        if task_id not in self._envs:
            env = make_env(self.tasks[task_id], seed=self._seed, **self._env_kwargs)
            self._envs[task_id] = PaddedEnv(env, *self.observation_space.shape,
                                            *self.action_space.shape)  # fmt: skip
        return self._envs[task_id]

    def task_index(self, task: str | int) -> int:
        """Task id of a name (any accepted form) or id; ValueError if not in this env's list."""
        return table_index(self.tasks, task, "this env")

    def reset(
        self,
        *,
        seed: int | None = None,
        options: dict[str, Any] | None = None,
        task: str | int | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if task is None and options:
            task = options.get("task")
        if task is None:
            task = int(self.np_random.integers(len(self.tasks)))
        self.task_id = self.task_index(task)
        obs, info = self.env(self.task_id).reset(seed=seed)
        return obs, {**info, "task_id": self.task_id}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env(self._current()).step(action)
        return obs, reward, terminated, truncated, {**info, "task_id": self.task_id}

    def render(self) -> np.ndarray:
        return self.env(self._current()).render()

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()

    def _current(self) -> int:
        if self.task_id is None:
            raise RuntimeError("MultitaskEnv: call reset() first.")
        return self.task_id
