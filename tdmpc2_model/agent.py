"""`TDMPC2`: the agent. Owns the world model, its two optimizers and the running Q scale;
acts by MPPI planning (``planner.plan``) and learns with ``update`` (``update.update_step``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn

from tdmpc2_data.batch import Batch
from tdmpc2_model.core import losses
from tdmpc2_model.core.config import TDMPC2Config
from tdmpc2_model.core.memory import check_memory
from tdmpc2_model.core.planner import plan
from tdmpc2_model.core.update import update_step
from tdmpc2_model.core.world_model import WorldModel, action_masks
from tdmpc2_model.formats.pretrained import world_model_of
from tdmpc2_model.hub.mixin import HubMixin


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
    cfg, nets = model.cfg, dict(model.networks)
    encoder, pi = nets.pop("encoder"), nets.pop("pi")
    groups = [{"params": encoder.parameters(), "lr": cfg.lr * cfg.enc_lr_scale}]
    groups += [{"params": net.parameters()} for net in nets.values()]
    optim = _adam(groups, lr=cfg.lr)
    return optim, _adam(pi.parameters(), lr=cfg.lr, eps=cfg.pi_adam_eps)


class TDMPC2(nn.Module, HubMixin):
    """TD-MPC2 agent for single-task and multitask models.

    >>> agent = TDMPC2(TDMPC2Config(size="1M", tasks="walker-walk"))
    >>> action = agent.act(obs, t0=True)           # MPPI plan, eval mode
    >>> info = agent.update(batch)                 # one update on a Batch; dict of floats
    """

    def __init__(self, cfg: TDMPC2Config, model: WorldModel | None = None):
        """A new agent of ``cfg``; ``model``: its world model, already made (a loaded one)."""
        super().__init__()
        self.cfg = cfg
        check_memory(cfg, new_model=model is None)
        self.model = WorldModel(cfg) if model is None else model
        self.scale = losses.RunningScale(cfg.tau)
        self.optim, self.pi_optim = make_optimizers(self.model)
        self.register_buffer("discount", torch.tensor(cfg.discounts, dtype=torch.float32))
        self.register_buffer("_prev_mean", torch.zeros(cfg.horizon, cfg.action_dim))
        self.model_loss, self.policy_loss = losses.model_loss, losses.policy_loss
        self.model.eval()

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_state_dict(cls, cfg: TDMPC2Config, state_dict: dict[str, torch.Tensor]) -> TDMPC2:
        """Agent with world-model weights ``state_dict`` (this package's layout, strict), made
        of those tensors (``world_model_of``): nothing is allocated for fresh weights first."""
        return cls(cfg, model=world_model_of(cfg, state_dict, "state_dict"))

    def with_task(self, task: str) -> TDMPC2:
        """This multitask agent with ``task`` appended to its task table, to finetune it on a
        task it was not pretrained on (the paper's few-shot set-up: the mt70 models). The
        task embedding gets a row initialised as the original initialises one (uniform in
        +-0.02, seed 0) and the action masks the task's row; every other tensor is shared
        with this agent (keep one of the two); the running Q scale, checkpoint defaults and
        provenance are carried over."""
        if not self.cfg.multitask:
            raise ValueError("with_task: a single-task model has no task table to extend.")

        def extended(cfg: TDMPC2Config) -> TDMPC2Config:
            return TDMPC2Config.from_dict({**cfg.to_dict(), "tasks": [*cfg.task_names, task]})

        cfg = extended(self.cfg)
        state = self.model.state_dict()
        emb = state["_task_emb.weight"]
        row = torch.empty(1, emb.shape[1]).uniform_(
            -0.02, 0.02, generator=torch.Generator().manual_seed(0)
        )
        state["_task_emb.weight"] = torch.cat([emb, row.to(emb)])
        state["_action_masks"] = action_masks(cfg).to(emb.device)
        agent = type(self)(cfg, model=world_model_of(cfg, state, f"adding {task}")).to(self.device)
        agent.scale.value.copy_(self.scale.value)
        defaults = getattr(self, "model_defaults", None)
        agent.model_defaults = extended(defaults) if defaults is not None else None
        agent.hub_provenance = getattr(self, "hub_provenance", None)
        return agent

    @property
    def device(self) -> torch.device:
        return self.discount.device

    def compile_update(self, **kwargs: Any) -> TDMPC2:
        """Compile the loss computations with ``torch.compile`` (kwargs passed on).

        Inductor's pattern matcher is off by default: its randperm-index rewrite fails on
        the Q head pick ``out[randperm(num_q)[:2]]`` (torch 2.13)."""
        options = {"pattern_matcher": False, **kwargs.pop("options", {})}
        self.model_loss = torch.compile(losses.model_loss, options=options, **kwargs)
        self.policy_loss = torch.compile(losses.policy_loss, options=options, **kwargs)
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
            discount = losses.task_discount(self.gamma, task_id)
            prev = None if t0 else self._prev_mean
            action, mean = plan(self.model, obs, task_id, discount, prev, eval_mode)
            self._prev_mean.copy_(mean)
        else:
            sample, info = self.model.pi(self.model.encode(obs, task_id), task_id)
            action = (info["mean"] if eval_mode else sample)[0]
        action = action.cpu()
        return action.numpy() if as_numpy else action

    # --------------------------------------------------------------------- learning
    @property
    def gamma(self) -> torch.Tensor | float:
        """Discount of the TD targets: the per-task table [T] of a multitask model (indexed by
        each sample's task), the float of a single-task one."""
        return self.discount if self.cfg.multitask else float(self.cfg.discounts[0])

    def update(self, batch: Batch) -> dict[str, float]:
        """One update of model, policy and target Q (paper Sec. 3.2; ``update.update_step``)
        on a `tdmpc2_data.Batch`. Returns the losses and gradient norms as floats."""
        info = update_step(self, batch)
        values = torch.stack([v.detach().float().reshape(()) for v in info.values()]).tolist()
        return dict(zip(info, values, strict=True))
