"""The TD-MPC2 objectives (paper Sec. 3.2, Eq. 3-4) as plain functions, shared by the online
agent (``TDMPC2.update``) and the Lightning module: no optimizer or framework code here.

Shapes: obs [H+1, B, obs_dim], action [H, B, action_dim], reward [H, B], task [B] (or None).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from tdmpc2_model.core import functional as Fn
from tdmpc2_model.core.config import TDMPC2Config
from tdmpc2_model.core.world_model import WorldModel


class RunningScale(nn.Module):
    """Running scale of Q-values for the policy loss: EMA (rate tau) of the 5th-95th
    percentile range over the batch, at least 1."""

    def __init__(self, tau: float):
        super().__init__()
        self.tau = tau
        self.register_buffer("value", torch.ones(1))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.detach().flatten(1).float()
        low, high = torch.quantile(x, x.new_tensor([0.05, 0.95]), dim=0)
        self.value.lerp_(torch.clamp(high - low, min=1.0), self.tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.value


def _rho_weights(cfg: TDMPC2Config, n: int, device: torch.device) -> torch.Tensor:
    return cfg.rho ** torch.arange(n, device=device, dtype=torch.float32)


def task_discount(
    discount: torch.Tensor | float, task: torch.Tensor | None
) -> torch.Tensor | float:
    """Per-sample discount [B] of a multitask model (a table indexed by task), else the float."""
    return discount[task] if task is not None and isinstance(discount, torch.Tensor) else discount


@torch.no_grad()
def td_targets(
    model: WorldModel,
    next_z: torch.Tensor,
    reward: torch.Tensor,
    task: torch.Tensor | None,
    discount: torch.Tensor | float,
) -> torch.Tensor:
    """r + gamma * min of two random target Q heads at (z', pi(z')); [H, B]."""
    action, _ = model.pi(next_z, task)
    q = model.Q(next_z, action, task, return_type="min", target=True).squeeze(-1)
    return reward + task_discount(discount, task) * q


def model_loss(
    model: WorldModel,
    obs: torch.Tensor,
    action: torch.Tensor,
    reward: torch.Tensor,
    task: torch.Tensor | None,
    discount: torch.Tensor | float,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Joint-embedding prediction, reward and value losses over an H-step latent rollout.

    Returns (total loss, latent rollout zs [H+1, B, latent] for the policy loss, parts).
    """
    cfg = model.cfg
    horizon = action.shape[0]
    with torch.no_grad():
        next_z = model.encode(obs[1:], task)
        targets = td_targets(model, next_z, reward, task, discount)

    z = model.encode(obs[0], task)
    zs = [z]
    for t in range(horizon):
        z = model.next(z, action[t], task)
        zs.append(z)
    zs = torch.stack(zs)
    rho = _rho_weights(cfg, horizon, obs.device)
    consistency = (F.mse_loss(zs[1:], next_z, reduction="none").mean((1, 2)) * rho).sum() / horizon

    qs = model.Q(zs[:-1], action, task, return_type="all")  # [num_q, H, B, bins]
    reward_logits = model.reward(zs[:-1], action, task)
    reward_loss = (
        Fn.soft_ce(reward_logits, reward, cfg.vmin, cfg.vmax).mean(-1) * rho
    ).sum() / horizon
    value_ce = Fn.soft_ce(qs, targets, cfg.vmin, cfg.vmax).mean(-1)  # [num_q, H]
    value_loss = (value_ce * rho).sum() / (horizon * cfg.num_q)

    total = (
        cfg.consistency_coef * consistency
        + cfg.reward_coef * reward_loss
        + cfg.value_coef * value_loss
    )
    parts = {
        "consistency_loss": consistency,
        "reward_loss": reward_loss,
        "value_loss": value_loss,
        "total_loss": total,
    }
    return total, zs, parts


def policy_loss(
    model: WorldModel, zs: torch.Tensor, task: torch.Tensor | None, scale: RunningScale
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Maximise scaled Q plus the entropy bonus along the (detached) latent rollout; updates
    the running Q scale with the first step's values. Gradients reach only the policy
    through its actions (the Q-functions are evaluated with detached weights)."""
    cfg = model.cfg
    zs = zs.detach()
    action, info = model.pi(zs, task)
    qs = model.Q(zs, action, task, return_type="avg", detach=True)
    scale.update(qs[0])
    qs = scale(qs)
    rho = _rho_weights(cfg, zs.shape[0], zs.device)
    loss = (-(cfg.entropy_coef * info["scaled_entropy"] + qs).mean((1, 2)) * rho).mean()
    parts = {
        "pi_loss": loss,
        "pi_entropy": info["entropy"].mean(),
        "pi_scaled_entropy": info["scaled_entropy"].mean(),
        "pi_scale": scale.value[0],
    }
    return loss, parts
