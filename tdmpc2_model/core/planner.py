"""MPPI planning in the latent space of the world model (paper Sec. 3.3, Eq. 5).

Sampled action sequences are scored by the model's H-step return plus the terminal value;
the Gaussian (mean, std) is refit to the elites, weighted by exp(temperature * value).
A fraction of the sequences comes from the policy prior, and the mean is warm-started from
the previous step's plan shifted by one step. The executed action follows
``cfg.plan_action``: a drawn elite's first action (the original code) or the mean's.
"""

from __future__ import annotations

import torch

from tdmpc2_model.core import functional as Fn
from tdmpc2_model.core.functional import fast_kernels
from tdmpc2_model.core.world_model import WorldModel


@torch.no_grad()
def estimate_value(
    model: WorldModel,
    z: torch.Tensor,
    actions: torch.Tensor,
    task: torch.Tensor | None,
    discount: float | torch.Tensor,
) -> torch.Tensor:
    """Discounted model return of ``actions`` [H, N, A] from latents ``z`` [N, L] plus the
    discounted value of the policy prior's action at the last latent; [N, 1]."""
    cfg = model.cfg
    value, gamma = 0.0, 1.0
    for t in range(actions.shape[0]):
        reward = Fn.two_hot_inv(model.reward(z, actions[t], task), cfg.vmin, cfg.vmax)
        z = model.next(z, actions[t], task)
        value = value + gamma * reward
        gamma = gamma * discount
    action, _ = model.pi(z, task)
    return value + gamma * model.Q(z, action, task, return_type="avg")


@torch.no_grad()
def plan(
    model: WorldModel,
    obs: torch.Tensor,
    task: torch.Tensor | None,
    discount: float | torch.Tensor,
    prev_mean: torch.Tensor | None = None,
    eval_mode: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plan from one observation ``obs`` [1, obs_dim]; returns (action [A] in [-1, 1], the
    plan's mean [H, A] to warm-start the next step). ``prev_mean`` None starts fresh
    (first step of an episode). Executes the first action of one elite sequence drawn with
    probability proportional to its score (``plan_action="elite"``, as the original code) or
    of the plan mean (``"mean"``, the paper's Sec. 3.3 wording); training mode adds the
    plan's std times Gaussian noise as exploration. Masked (padding) action dims are
    exactly 0."""
    with fast_kernels():
        return _plan(model, obs, task, discount, prev_mean, eval_mode)


def _plan(
    model: WorldModel,
    obs: torch.Tensor,
    task: torch.Tensor | None,
    discount: float | torch.Tensor,
    prev_mean: torch.Tensor | None,
    eval_mode: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = model.cfg
    horizon, num, num_pi, dim = cfg.horizon, cfg.num_samples, cfg.num_pi_trajs, cfg.action_dim
    mask = model._action_masks[task] if cfg.multitask else None  # [1, A]
    z = model.encode(obs, task)
    # MPPI statistics stay in the observation's float type when the model runs in bf16
    actions = torch.empty(horizon, num, dim, device=z.device, dtype=obs.dtype)
    if num_pi > 0:
        _z = z.expand(num_pi, -1)
        for t in range(horizon):
            actions[t, :num_pi], _ = model.pi(_z, task)
            if t < horizon - 1:
                _z = model.next(_z, actions[t, :num_pi], task)

    z = z.expand(num, -1)
    mean = torch.zeros(horizon, dim, device=z.device, dtype=obs.dtype)
    std = torch.full((horizon, dim), cfg.max_std, device=z.device, dtype=obs.dtype)
    if prev_mean is not None:
        mean[:-1] = prev_mean[1:]
    for _ in range(cfg.iterations):
        noise = torch.randn(horizon, num - num_pi, dim, device=z.device, dtype=obs.dtype)
        actions[:, num_pi:] = (mean.unsqueeze(1) + std.unsqueeze(1) * noise).clamp(-1, 1)
        if mask is not None:
            actions = actions * mask
        value = estimate_value(model, z, actions, task, discount).nan_to_num(0)
        elite_idx = torch.topk(value.squeeze(1), cfg.num_elites, dim=0).indices
        elite_value, elite_actions = value[elite_idx], actions[:, elite_idx]
        score = torch.exp(cfg.temperature * (elite_value - elite_value.max(0).values))
        score = (score / score.sum(0)).unsqueeze(0)  # [1, E, 1]
        mean = (score * elite_actions).sum(1) / (score.sum(1) + 1e-9)
        var = (score * (elite_actions - mean.unsqueeze(1)) ** 2).sum(1) / (score.sum(1) + 1e-9)
        std = var.sqrt().clamp(cfg.min_std, cfg.max_std)
        if mask is not None:
            mean, std = mean * mask, std * mask
    return select_action(elite_actions, score[0, :, 0], mean, std, cfg.plan_action, eval_mode), mean


def select_action(
    elite_actions: torch.Tensor,
    score: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    plan_action: str,
    eval_mode: bool,
) -> torch.Tensor:
    """The executed action [A] of a finished plan: the first action of one elite [H, E, A]
    drawn with probability ``score`` [E] ("elite"), or of the ``mean`` [H, A] ("mean");
    training mode adds ``std[0]`` times Gaussian noise. Clamped to [-1, 1]."""
    if plan_action == "elite":
        action = elite_actions[0, Fn.gumbel_max_sample(score)]
    else:
        action = mean[0]
    if not eval_mode:
        action = action + std[0] * torch.randn_like(action)
    return action.clamp(-1, 1)
