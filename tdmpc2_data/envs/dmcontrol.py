"""DMControl tasks (28 stock suite tasks + the 11 custom ones of ``custom_dmc``)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from tdmpc2_data.envs.base import RENDER_SIZE, TaskEnv
from tdmpc2_data.tasks import Task

with warnings.catch_warnings():  # dm_control probes GLFW, which warns when there is no display
    warnings.simplefilter("ignore")
    from dm_control import suite
    from dm_control.suite.wrappers import action_scale

    from tdmpc2_data.envs import custom_dmc


class DMControlEnv(TaskEnv):
    """A dm_control task; the observation is every entry of its observation dict, flattened
    in dict order, and [-1, 1] actions map to the actuator bounds with dm_control's
    action-scale wrapper. The episode length is ours, so dm_control's time limit is off."""

    def __init__(self, task: Task, seed: int = 0, render_mode: str | None = None):
        super().__init__(task, seed, render_mode)
        if task.custom:
            env = custom_dmc.load(task.sim_id, random=seed)
        else:
            domain, name = task.sim_id.split("/")
            env = suite.load(domain, name, task_kwargs={"random": seed, "time_limit": float("inf")})
        self._env = action_scale.Wrapper(env, minimum=-1.0, maximum=1.0)
        self._camera_id = 2 if task.sim_id.startswith("quadruped/") else 0

    @property
    def dm_env(self):
        """The dm_control Environment (``.physics``, ``.task``), for analysis and tests."""
        return self._env

    def _reset_sim(self, seed: int | None) -> np.ndarray:
        if seed is not None:
            # dm_control tasks draw every episode's randomness from this RandomState.
            self._env.task._random = np.random.RandomState(seed)
        return _flatten(self._env.reset().observation)

    def _step_sim(self, action: np.ndarray) -> tuple[np.ndarray, float, dict[str, Any]]:
        step = self._env.step(action)
        return _flatten(step.observation), step.reward, {}

    def _render_sim(self) -> np.ndarray:
        return self._env.physics.render(RENDER_SIZE, RENDER_SIZE, camera_id=self._camera_id)


def _flatten(observation: dict[str, Any]) -> np.ndarray:
    return np.concatenate(
        [np.asarray(v, dtype=np.float32).reshape(-1) for v in observation.values()]
    )
