"""`TDMPC2`: the agent. Owns the world model, its two optimizers and the running Q scale;
acts by MPPI planning (``planner.plan``) and learns with ``update`` (``losses``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn

from tdmpc2_model import losses
from tdmpc2_model.config import TDMPC2Config
from tdmpc2_model.functional import fast_kernels
from tdmpc2_model.hub import HubMixin
from tdmpc2_model.planner import plan
from tdmpc2_model.world_model import WorldModel


def _adam(params: Any, **kwargs: Any) -> torch.optim.Adam:
    """Adam, fused where this torch supports it (about 10x faster steps on CPU)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, foreach=True, **kwargs)


def make_optimizers(model: WorldModel) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """(model optimizer, policy optimizer) of the paper: Adam at ``lr`` with the encoder at
    ``lr * enc_lr_scale``; the policy prior separately with ``pi_adam_eps``."""
    cfg = model.cfg
    groups = [
        {"params": model._encoder.parameters(), "lr": cfg.lr * cfg.enc_lr_scale},
        {"params": model._dynamics.parameters()},
        {"params": model._reward.parameters()},
        {"params": model._Qs.parameters()},
    ]
    if cfg.multitask:
        groups.append({"params": model._task_emb.parameters()})
    optim = _adam(groups, lr=cfg.lr)
    return optim, _adam(model._pi.parameters(), lr=cfg.lr, eps=cfg.pi_adam_eps)


class TDMPC2(nn.Module, HubMixin):
    """TD-MPC2 agent for single-task and multitask models.

    >>> agent = TDMPC2(TDMPC2Config(size="1M", tasks="walker-walk"))
    >>> action = agent.act(obs, t0=True)           # MPPI plan, eval mode
    >>> info = agent.update(batch)                 # one gradient step; dict of floats
    """

    def __init__(self, cfg: TDMPC2Config):
        super().__init__()
        self.cfg = cfg
        self.model = WorldModel(cfg)
        self.scale = losses.RunningScale(cfg.tau)
        self.optim, self.pi_optim = make_optimizers(self.model)
        self.register_buffer("discount", torch.tensor(cfg.discounts, dtype=torch.float32))
        self.register_buffer("_prev_mean", torch.zeros(cfg.horizon, cfg.action_dim))
        self._model_loss = losses.model_loss
        self._policy_loss = losses.policy_loss
        self.model.eval()

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_state_dict(cls, cfg: TDMPC2Config, state_dict: dict[str, torch.Tensor]) -> TDMPC2:
        """Agent with world-model weights ``state_dict`` (this package's layout, strict)."""
        agent = cls(cfg)
        agent.model.load_state_dict(state_dict)
        return agent

    @property
    def device(self) -> torch.device:
        return self.discount.device

    def compile_update(self, **kwargs: Any) -> TDMPC2:
        """Compile the loss computations with ``torch.compile`` (kwargs passed on).

        Inductor's pattern matcher is off by default: its randperm-index rewrite fails on
        the Q head pick ``out[randperm(num_q)[:2]]`` (torch 2.13)."""
        options = {"pattern_matcher": False, **kwargs.pop("options", {})}
        self._model_loss = torch.compile(losses.model_loss, options=options, **kwargs)
        self._policy_loss = torch.compile(losses.policy_loss, options=options, **kwargs)
        return self

    # ----------------------------------------------------------------------- acting
    def _task(self, task: str | int | torch.Tensor | None) -> torch.Tensor | None:
        """Task id tensor for multitask models (name, id or tensor accepted); None otherwise."""
        if not self.cfg.multitask:
            if task is not None and not isinstance(task, torch.Tensor) and self.cfg.task_names:
                self.cfg.task_id(task)  # rejects a task this model was not made for
            return None
        if task is None:
            raise ValueError("This is a multitask model; pass task= (a task name or id).")
        if isinstance(task, torch.Tensor):
            return task.to(self.device, torch.long)
        return torch.tensor([self.cfg.task_id(task)], device=self.device)

    @torch.no_grad()
    def act(
        self,
        obs: np.ndarray | torch.Tensor,
        t0: bool = False,
        eval_mode: bool = True,
        task: str | int | None = None,
    ) -> np.ndarray | torch.Tensor:
        """Action for one observation [obs_dim] (shorter observations are zero padded).

        ``t0`` marks the first step of an episode (planning starts fresh instead of from
        the previous plan). Returns the padded action [action_dim] (padding dims are 0),
        as a numpy array for numpy input, else a CPU tensor.
        """
        as_numpy = isinstance(obs, np.ndarray)
        obs = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        if obs.ndim != 1 or obs.shape[0] > self.cfg.obs_dim:
            raise ValueError(
                f"Got obs of shape {tuple(obs.shape)}; expected one observation of at most "
                f"{self.cfg.obs_dim} values."
            )
        obs = torch.nn.functional.pad(obs, (0, self.cfg.obs_dim - obs.shape[0])).unsqueeze(0)
        task_id = self._task(task)
        if self.cfg.mpc:
            discount = losses.task_discount(self._discount(), task_id)
            prev = None if t0 else self._prev_mean
            action, mean = plan(self.model, obs, task_id, discount, prev, eval_mode)
            self._prev_mean.copy_(mean)
        else:
            sample, info = self.model.pi(self.model.encode(obs, task_id), task_id)
            action = (info["mean"] if eval_mode else sample)[0]
        action = action.cpu()
        return action.numpy() if as_numpy else action

    def _discount(self) -> torch.Tensor | float:
        return self.discount if self.cfg.multitask else float(self.cfg.discounts[0])

    # --------------------------------------------------------------------- learning
    def _batch(self, batch: Any) -> tuple[torch.Tensor, ...]:
        if isinstance(batch, (tuple, list)):
            obs, action, reward, task = (*batch, None)[:4]
        else:
            get = batch.get if isinstance(batch, dict) else lambda k: getattr(batch, k, None)
            obs, action, reward, task = get("obs"), get("action"), get("reward"), get("task")
        obs = obs.to(self.device, torch.float32, non_blocking=True)
        action = action.to(self.device, torch.float32, non_blocking=True)
        reward = reward.to(self.device, torch.float32, non_blocking=True)
        if reward.ndim == 3:
            reward = reward.squeeze(-1)
        horizon, size = action.shape[:2]
        expected = {
            "obs": (obs, (horizon + 1, size, self.cfg.obs_dim)),
            "action": (action, (horizon, size, self.cfg.action_dim)),
            "reward": (reward, (horizon, size)),
        }
        for name, (tensor, shape) in expected.items():
            if tuple(tensor.shape) != shape:
                raise ValueError(
                    f"Got batch.{name} of shape {tuple(tensor.shape)}; expected {shape}."
                )
        if self.cfg.multitask:
            if task is None:
                raise ValueError("A multitask model needs batch.task (task ids [B]).")
            task = task.to(self.device, torch.long, non_blocking=True).reshape(size)
        else:
            task = None
        return obs, action, reward, task

    def update(self, batch: Any) -> dict[str, float]:
        """One update of model, policy and target Q (paper Sec. 3.2) on a batch with
        ``obs`` [H+1, B, D], ``action`` [H, B, A], ``reward`` [H, B], ``task`` [B] (an
        object with those attributes, a dict, or a tuple in that order). Returns the
        losses and gradient norms as floats."""
        obs, action, reward, task = self._batch(batch)
        model, clip = self.model, self.cfg.grad_clip_norm
        model.train()
        try:
            with fast_kernels():
                total, zs, info = self._model_loss(
                    model, obs, action, reward, task, self._discount()
                )
                total.backward()
                info["grad_norm"] = nn.utils.clip_grad_norm_(model.parameters(), clip, foreach=True)
                self.optim.step()
                self.optim.zero_grad(set_to_none=True)

                pi_loss, pi_info = self._policy_loss(model, zs, task, self.scale)
                pi_loss.backward()
                pi_info["pi_grad_norm"] = nn.utils.clip_grad_norm_(
                    model._pi.parameters(), clip, foreach=True
                )
                self.pi_optim.step()
                # Both optimizers clear right after their step, as the original does: the
                # model's grad norm spans all parameters and must see no policy gradients,
                # while the policy loss's task-embedding gradients carry into the next model
                # step exactly as in the original implementation.
                self.pi_optim.zero_grad(set_to_none=True)
                model.soft_update_target_Q()
        finally:
            model.eval()
        info.update(pi_info)
        values = torch.stack([v.detach().float().reshape(()) for v in info.values()]).tolist()
        return dict(zip(info, values, strict=True))
