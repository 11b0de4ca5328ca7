"""`Batch`: the one training-batch type. The shard `WindowSampler` (pretraining) and the online
replay buffer (``tdmpc2_model.training.replay``) both produce it; the update (``tdmpc2_model.core.update``)
takes only it."""

from __future__ import annotations

from typing import NamedTuple

import torch

#: H, the paper's window length (TD-MPC2 Sec. 4): the default of the sampler and of the model
HORIZON = 3


class Batch(NamedTuple):
    """B windows of H steps, time first; each window is a slice of one episode."""

    obs: torch.Tensor  # [H+1, B, D] float32
    action: torch.Tensor  # [H, B, A] float32; action[h] leads from obs[h] to obs[h+1]
    reward: torch.Tensor  # [H, B] float32; reward[h] is received for action[h]
    task: torch.Tensor  # [B] int64, ids into the producer's task table

    @classmethod
    def of_task(
        cls,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        task: int = 0,
    ) -> Batch:
        """A batch whose windows all come from one task (the online replay buffer's): task id
        ``task`` for every window."""
        ids = torch.full((action.shape[1],), task, dtype=torch.long, device=action.device)
        return cls(obs, action, reward, ids)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(*(x.to(device, non_blocking=non_blocking) for x in self))

    def pin_memory(self) -> Batch:
        return Batch(*(x.pin_memory() for x in self))


def batch_bytes(batch_size: int, horizon: int, obs_dim: int, action_dim: int) -> int:
    """Bytes of one `Batch` of ``batch_size`` windows of ``horizon`` steps."""
    return batch_size * 4 * ((horizon + 1) * obs_dim + horizon * (action_dim + 1) + 2)


__all__ = ["HORIZON", "Batch", "batch_bytes"]
