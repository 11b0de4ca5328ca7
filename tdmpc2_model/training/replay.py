"""The online replay buffer: the episodes of one task in RAM, sampled as `tdmpc2_data.Batch`
windows like the shard `WindowSampler`'s, so that online RL runs the same update as
pretraining."""

from __future__ import annotations

import numpy as np
import torch

from tdmpc2_data.batch import Batch


class ReplayBuffer:
    """Episodes of one task (one length T) in RAM, oldest dropped beyond ``capacity`` steps;
    windows of H+1 observations drawn uniformly over transitions (episodes of equal length:
    uniform episode, then uniform start 0..T-H).

    The shard `WindowSampler` plans once over a fixed dataset; online data grows every
    episode, so this small in-memory sampler serves the online loop instead. ``task`` is what every batch carries (the task's id in the model's table; default 0).
    """

    def __init__(
        self,
        capacity: int,
        episode_length: int,
        obs_dim: int,
        action_dim: int,
        device: torch.device | str = "cpu",
        seed: int = 0,
        task: int = 0,
    ) -> None:
        self.length, self.device = episode_length, torch.device(device)
        self.max_episodes = max(1, capacity // episode_length)
        self.obs = torch.empty(0, episode_length + 1, obs_dim, device=self.device)
        self.action = torch.empty(0, episode_length, action_dim, device=self.device)
        self.reward = torch.empty(0, episode_length, device=self.device)
        self.task = task
        self.episodes = 0  # stored (<= max_episodes)
        self.added = 0  # ever added
        self.generator = torch.Generator().manual_seed(seed)  # the online loop reseeds it

    @property
    def num_transitions(self) -> int:
        return self.episodes * self.length

    def add(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray) -> None:
        """Add one episode: obs [T+1, D], action [T, A], reward [T] (padded widths)."""
        if self.episodes == len(self.obs) < self.max_episodes:  # grow by doubling
            grow = min(self.max_episodes, max(16, 2 * len(self.obs))) - len(self.obs)
            self.obs, self.action, self.reward = (
                torch.cat([x, x.new_zeros(grow, *x.shape[1:])])
                for x in (self.obs, self.action, self.reward)
            )
        i = self.added % self.max_episodes
        for dst, src in ((self.obs, obs), (self.action, action), (self.reward, reward)):
            dst[i] = torch.as_tensor(src, dtype=torch.float32)
        self.added += 1
        self.episodes = min(self.added, self.max_episodes)

    def sample(self, batch_size: int, horizon: int) -> Batch:
        """``batch_size`` random windows of ``horizon`` steps (obs [H+1, B, D], action
        [H, B, A], reward [H, B], time first)."""
        if self.episodes == 0:
            raise RuntimeError("The replay buffer is empty; finish an episode first.")
        if horizon > self.length:
            raise ValueError(f"horizon={horizon} is longer than the episodes ({self.length}).")
        ep = torch.randint(self.episodes, (batch_size, 1), generator=self.generator)
        t = torch.randint(self.length - horizon + 1, (batch_size, 1), generator=self.generator)
        t = t + torch.arange(horizon + 1)
        ep, t = ep.to(self.device), t.to(self.device)
        return Batch.of_task(
            self.obs[ep, t].transpose(0, 1),
            self.action[ep, t[:, :-1]].transpose(0, 1),
            self.reward[ep, t[:, :-1]].transpose(0, 1),
            self.task,
        )
