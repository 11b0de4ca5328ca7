"""The TD-MPC2 implicit world model (paper Sec. 3.1): encoder, latent dynamics, reward,
policy prior and an ensemble of Q-functions, one method per equation.

``task`` arguments are task ids (LongTensor [B] or an int) for multitask models and None
for single-task models, as in the original implementation.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from tdmpc2_data import schema
from tdmpc2_model.core import functional as Fn
from tdmpc2_model.core.config import TDMPC2Config
from tdmpc2_model.core.layers import (
    SimNorm,
    ensemble_forward,
    full_tensor,
    init_weights,
    mlp,
    stacked_mlp,
)


def action_masks(cfg: TDMPC2Config) -> torch.Tensor:
    """[num_tasks, action_dim]: 1 on each task's real action dims, 0 on the padding."""
    return torch.from_numpy(schema.action_masks(cfg.action_dims, cfg.action_dim))


class Ensemble(nn.Module):
    """``num`` Q-function MLPs with stacked weights (``params``), evaluated in one batched op."""

    def __init__(self, num: int, dims: list[int], dropout: float):
        super().__init__()
        self.params = stacked_mlp(num, dims)
        self.dropout = dropout
        for layer in self.params:
            layer.reset_parameters()

    def forward(
        self, x: torch.Tensor, detach: bool = False, heads: torch.Tensor | None = None
    ) -> torch.Tensor:
        drop = self.dropout if self.training else 0.0
        return ensemble_forward(self.params, x, drop, detach, heads)


class WorldModel(nn.Module):
    """Encoder h, dynamics d, reward R, policy prior p and Q ensemble of TD-MPC2.

    ``_target_Qs_params`` is the EMA target ensemble (buffers, never learnable);
    ``Q(..., detach=True)`` evaluates the online ensemble through detached views of its
    weights, so the policy loss trains only the policy.
    """

    def __init__(self, cfg: TDMPC2Config):
        super().__init__()
        self.cfg = cfg
        latent, act, td, hid = cfg.latent_dim, cfg.action_dim, cfg.task_dim, cfg.mlp_dim
        if cfg.multitask:
            self._task_emb = nn.Embedding(cfg.num_tasks, td, max_norm=1)
            self.register_buffer("_action_masks", action_masks(cfg))
        enc_hidden = max(cfg.num_enc_layers - 1, 1) * [cfg.enc_dim]
        self._encoder = nn.ModuleDict(
            {"state": mlp(cfg.obs_dim + td, enc_hidden, latent, act=SimNorm(cfg.simnorm_dim))}
        )
        self._dynamics = mlp(latent + act + td, 2 * [hid], latent, act=SimNorm(cfg.simnorm_dim))
        self._reward = mlp(latent + act + td, 2 * [hid], cfg.num_bins)
        self._pi = mlp(latent + td, 2 * [hid], 2 * act)
        self.apply(init_weights)
        q_dims = [latent + act + td, hid, hid, cfg.num_bins]
        self._Qs = Ensemble(cfg.num_q, q_dims, cfg.dropout)
        with torch.no_grad():  # zero output layers: reward and values start at 0
            self._reward[-1].weight.zero_()
            self._Qs.params[-1].weight.zero_()
        self._target_Qs_params = stacked_mlp(cfg.num_q, q_dims, learnable=False)
        self._target_Qs_params.load_state_dict(self._Qs.params.state_dict())

    @property
    def networks(self) -> dict[str, nn.Module]:
        """The learnable networks by name, task embedding last: the units the optimizers
        step and FSDP shards (the target Q ensemble is a buffer, not among them)."""
        nets = {"encoder": self._encoder["state"], "dynamics": self._dynamics,
                "reward": self._reward, "Qs": self._Qs, "pi": self._pi}  # fmt: skip
        if self.cfg.multitask:
            nets["task_emb"] = self._task_emb
        return nets

    @torch.no_grad()
    def update_target_Q(self) -> None:
        """Polyak averaging of the target Q ensemble towards the online one (rate tau); sharded
        online weights are gathered first (the target ensemble is a replicated buffer)."""
        targets = list(self._target_Qs_params.state_dict(keep_vars=True).values())
        weights = self._Qs.params.state_dict(keep_vars=True).values()
        online = [full_tensor(w.detach()) for w in weights]
        torch._foreach_lerp_(targets, online, self.cfg.tau)

    @property
    def total_params(self) -> int:
        """Learnable parameters (the paper's model size)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _task_tensor(self, task: torch.Tensor | int, device: torch.device) -> torch.Tensor:
        if task is None:
            raise ValueError("This is a multitask model; pass task ids (LongTensor [B] or int).")
        if isinstance(task, int):
            return torch.tensor([task], device=device)
        return task.long()

    @torch.no_grad()
    def task_embeddings(self) -> torch.Tensor:
        """The task embedding table [tasks, task_dim] as the model uses it: rows renormed to
        norm <= 1 (the embedding's ``max_norm``, which a lookup applies), without changing it."""
        w = self._task_emb.weight
        return w * (1 / w.norm(dim=1, keepdim=True).clamp_min(1)).to(w.dtype)

    def task_emb(self, x: torch.Tensor, task: torch.Tensor | int) -> torch.Tensor:
        """Concatenate the task embedding (broadcast over leading dims of ``x``) to ``x``."""
        emb = self._task_emb(self._task_tensor(task, x.device))
        return torch.cat([x, emb.expand(*x.shape[:-1], emb.shape[-1])], dim=-1)

    def _with_task(self, x: torch.Tensor, task: torch.Tensor | int | None) -> torch.Tensor:
        return self.task_emb(x, task) if self.cfg.multitask else x

    def encode(self, obs: torch.Tensor, task: torch.Tensor | int | None) -> torch.Tensor:
        """z = h(s, e): latent state of an observation."""
        return self._encoder["state"](self._with_task(obs, task))

    def next(
        self, z: torch.Tensor, a: torch.Tensor, task: torch.Tensor | int | None
    ) -> torch.Tensor:
        """z' = d(z, a, e): next latent state."""
        return self._dynamics(torch.cat([self._with_task(z, task), a], dim=-1))

    def reward(
        self, z: torch.Tensor, a: torch.Tensor, task: torch.Tensor | int | None
    ) -> torch.Tensor:
        """R(z, a, e): reward logits over the two-hot bins."""
        return self._reward(torch.cat([self._with_task(z, task), a], dim=-1))

    def pi(self, z: torch.Tensor, task: torch.Tensor | int | None) -> tuple[torch.Tensor, dict]:
        """Sample a ~ p(z, e) (squashed Gaussian, reparameterised). Returns the action and
        info with mean, log_std, entropy and scaled_entropy (entropy x action dims)."""
        mean, log_std = self._pi(self._with_task(z, task)).chunk(2, dim=-1)
        log_std = Fn.log_std(
            log_std, self.cfg.log_std_min, self.cfg.log_std_max - self.cfg.log_std_min
        )
        eps = torch.randn_like(mean)
        if self.cfg.multitask:  # unused action dims: zero mean, std 1 (log 0), zero noise
            mask = self._action_masks[self._task_tensor(task, z.device)]
            mean, log_std, eps = mean * mask, log_std * mask, eps * mask
            size = mask.sum(-1, keepdim=True)
        else:
            size = eps.shape[-1]
        log_prob = Fn.gaussian_logprob(eps, log_std)
        scaled_log_prob = log_prob * size
        action = mean + eps * log_std.exp()
        mean, action, log_prob = Fn.squash(mean, action, log_prob)
        entropy_scale = scaled_log_prob / (log_prob + 1e-8)
        info = {
            "mean": mean,
            "log_std": log_std,
            "entropy": -log_prob,
            "scaled_entropy": -log_prob * entropy_scale,
        }
        return action, info

    def Q(
        self,
        z: torch.Tensor,
        a: torch.Tensor,
        task: torch.Tensor | int | None,
        return_type: str = "min",
        target: bool = False,
        detach: bool = False,
    ) -> torch.Tensor:
        """Q(z, a, e). ``all``: logits of every head [num_q, ..., bins]; ``min``/``avg``: min or
        mean of two randomly chosen heads' values [..., 1]. ``target`` uses the EMA ensemble,
        ``detach`` the online ensemble without gradients to its weights."""
        if return_type not in ("min", "avg", "all"):
            raise ValueError(f"Got return_type={return_type!r}; must be 'min', 'avg' or 'all'.")
        x = torch.cat([self._with_task(z, task), a], dim=-1)
        # min/avg: only the two picked heads are evaluated (the original runs all of them
        # and then picks; same pick for the same seed, as no dropout draws come first in eval)
        heads = None
        if return_type != "all":
            heads = torch.randperm(self.cfg.num_q, device=x.device)[:2]
        if target:
            out = ensemble_forward(self._target_Qs_params, x, heads=heads)
        else:
            out = self._Qs(x, detach=detach, heads=heads)
        if return_type == "all":
            return out
        q = Fn.two_hot_inv(out, self.cfg.vmin, self.cfg.vmax)
        return q.min(0).values if return_type == "min" else q.sum(0) / 2
