"""The stepping conventions every simulator family shares (spec/tasks.md), in one base class.

A family module only says how to reset its simulator and take one simulator step; this
class adds what the published agents assumed everywhere: actions in [-1, 1] (clipped), the
task's action repeat with summed rewards, exactly ``task.episode_length`` agent steps and
then ``truncated=True`` (never ``terminated``), flat float32 observations of ``task.obs_dim``
and seeding where the same seed gives the same rollout for the same actions.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from tdmpc2_data.tasks import ACTION_LIMIT, Task

#: Frame size of ``render()`` (the paper's videos are 384x384).
RENDER_SIZE = 384


class SimulatorUnavailableError(RuntimeError):
    """A task's simulator package is missing or cannot run here; the message says how to fix it."""


class TaskEnv(gym.Env):
    """A gymnasium env for one registry task. Subclasses keep their simulator in ``_env``,
    implement ``_reset_sim`` and ``_step_sim`` (one simulator step) and may implement
    ``_render_sim``.

    ``reset()`` without a seed continues the env's random stream; the first reset of a fresh
    env uses the seed given to the constructor, so ``make_env(t, seed=s)`` is reproducible.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, task: Task, seed: int = 0, render_mode: str | None = None):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}.")
        self.task = task
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (task.obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(
            -ACTION_LIMIT, ACTION_LIMIT, (task.action_dim,), np.float32
        )
        self._initial_seed: int | None = seed
        self._steps: int | None = None  # agent steps since reset; None before the first reset

    # -- what a simulator family implements -------------------------------------------------
    def _reset_sim(self, seed: int | None) -> np.ndarray:
        """Start an episode (reseeding first when ``seed`` is given); return the observation."""
        raise NotImplementedError

    def _step_sim(self, action: np.ndarray) -> tuple[np.ndarray, float, dict[str, Any]]:
        """One simulator step: (observation, reward, info)."""
        raise NotImplementedError

    def _render_sim(self) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} cannot render.")

    # -- gymnasium API ------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        seed = self._initial_seed if seed is None else seed
        self._initial_seed = None
        super().reset(seed=seed)
        obs = self._observation(self._reset_sim(seed))
        self._steps = 0
        return obs, {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._steps is None:
            raise RuntimeError(f"{self.task.name}: call reset() before step().")
        if self._steps >= self.task.episode_length:
            raise RuntimeError(
                f"{self.task.name}: the episode ended after {self.task.episode_length} steps "
                "(truncated=True); call reset() to start a new one."
            )
        action = np.asarray(action, dtype=np.float32)
        if action.shape != self.action_space.shape:
            raise ValueError(
                f"{self.task.name}: action must have shape {self.action_space.shape}, "
                f"got {action.shape}."
            )
        if not np.all(np.isfinite(action)):
            raise ValueError(f"{self.task.name}: action has non-finite entries: {action}.")
        action = np.clip(action, -ACTION_LIMIT, ACTION_LIMIT)
        reward = 0.0
        for _ in range(self.task.action_repeat):
            obs, sim_reward, info = self._step_sim(action)
            reward += float(sim_reward)
        self._steps += 1
        truncated = self._steps >= self.task.episode_length
        return self._observation(obs), reward, False, truncated, info

    def render(self) -> np.ndarray:
        if self.render_mode != "rgb_array":
            raise RuntimeError(
                f"{self.task.name}: create the env with render_mode='rgb_array' to render "
                "(make_env then picks a headless MUJOCO_GL when there is no display)."
            )
        return self._render_sim()

    def __str__(self) -> str:
        return f"<{type(self).__name__} {self.task.name}>"

    def close(self) -> None:
        if hasattr(self, "_env"):  # absent when the constructor failed
            self._env.close()

    def _observation(self, obs: np.ndarray) -> np.ndarray:
        obs = np.array(obs, dtype=np.float32).reshape(-1)  # a copy: simulators reuse buffers
        if obs.shape != self.observation_space.shape:
            raise RuntimeError(
                f"{self.task.name}: the simulator returned a {obs.shape[0]}-dim observation, "
                f"the task registry expects {self.task.obs_dim}; the installed simulator "
                "version differs from the pinned one (see constraints.txt)."
            )
        return obs
