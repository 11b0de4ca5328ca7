"""One episode of an env, acted step by step and recorded: ``rollout`` runs it whole (data
collection, evaluation); the online loop steps it itself to update between steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

#: An actor maps (observation, first step of the episode?) to an action.
Actor = Callable[[np.ndarray, bool], np.ndarray]


class Episode:
    """An episode in progress: reset with ``seed`` (None continues the env's random stream),
    then one `step` per action of ``act``."""

    def __init__(self, env: Any, act: Actor, seed: int | None = None, render: bool = False):
        self.env, self.act, self.render = env, act, render
        self.obs, _ = env.reset(seed=seed)
        self.observations, self.actions, self.rewards = [self.obs], [], []
        self.successes, self.frames = [], []
        self.done = False

    def step(self) -> None:
        """Act on the last observation and step the env."""
        action = np.asarray(self.act(self.obs, not self.actions), dtype=np.float32)
        self.obs, reward, terminated, truncated, info = self.env.step(action)
        self.observations.append(self.obs)
        self.actions.append(action)
        self.rewards.append(reward)
        self.successes.append(bool(info.get("success", False)))
        self.done = terminated or truncated
        if self.render:
            self.frames.append(self.env.render())

    def data(self) -> dict[str, Any]:
        """obs [T+1, d], action [T, a], reward [T], success [T] (tasks with a success flag),
        the return, and the frames if rendered."""
        episode = {
            "obs": np.stack(self.observations).astype(np.float32),
            "action": np.stack(self.actions),
            "reward": np.asarray(self.rewards, dtype=np.float32),
            "return": float(np.sum(self.rewards)),
            "frames": self.frames,
        }
        if self.env.task.has_success:
            episode["success"] = np.asarray(self.successes)
        return episode


def rollout(env: Any, act: Actor, seed: int | None = None, render: bool = False) -> dict[str, Any]:
    """One full episode of ``env`` (``seed`` reseeds it; None continues its random stream):
    `Episode.data`."""
    episode = Episode(env, act, seed, render)
    while not episode.done:
        episode.step()
    return episode.data()
