"""The TD-MPC2 update (paper Sec. 3.2), the one step both training paths run: online RL
(``TDMPC2.update``) and Lightning pretraining (``TDMPC2Module.training_step``).

One update on a `tdmpc2_data.Batch`: the world-model loss (``losses.model_loss``) -> backward
-> clip -> model optimizer step -> zero; then the policy loss against the updated Q-functions
(``losses.policy_loss``) -> backward -> clip -> policy optimizer step -> zero; then the
target-Q EMA. What differs between the callers is passed in: the optimizers (Lightning's
wrapped model optimizer counts the update) and how a loss is backpropagated
(``manual_backward``). Sharded (FSDP2) parameters are gathered where a whole tensor is needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch

from tdmpc2_data.batch import Batch
from tdmpc2_model.core.config import TDMPC2Config
from tdmpc2_model.core.functional import fast_kernels
from tdmpc2_model.core.layers import full_tensor
from tdmpc2_model.core.world_model import WorldModel


class Learner(Protocol):
    """What an update needs of the agent (``TDMPC2``): its model, optimizers, losses, running
    Q scale and discount; core never imports the agent."""

    cfg: TDMPC2Config
    device: torch.device
    model: WorldModel
    optim: torch.optim.Optimizer
    pi_optim: torch.optim.Optimizer
    scale: Any
    gamma: Any

    def model_loss(self, *args: Any) -> tuple[torch.Tensor, Any, dict[str, torch.Tensor]]: ...

    def policy_loss(self, *args: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


#: the loss terms of an update, checked for NaN/Inf by both training loops
LOSS_TERMS = ("consistency_loss", "reward_loss", "value_loss", "pi_loss")


class NonFiniteLossError(RuntimeError):
    """A training loop met a NaN/Inf loss; it stops before saving the weights it made."""


def nonfinite_loss_error(update: int, terms: list[str]) -> NonFiniteLossError:
    """The error for update number ``update`` (1-based) whose ``terms`` are NaN/Inf."""
    return NonFiniteLossError(
        f"update {update}: non-finite {', '.join(terms)}; training stopped before saving "
        "weights from it (the data or the weights hold NaN/Inf, or the learning rate is too "
        "high)."
    )


def check_losses(info: Mapping[str, Any], update: int) -> None:
    """Raise `NonFiniteLossError` when a loss term of update ``update`` is NaN/Inf (one sync:
    the online loop reads its losses as floats anyway)."""
    bad = [k for k in LOSS_TERMS if not math.isfinite(float(info[k]))]
    if bad:
        raise nonfinite_loss_error(update, bad)


def check_batch(
    batch: Batch, cfg: TDMPC2Config, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(obs, action, reward, task) of ``batch`` on ``device``, after checking every shape
    against the model; task is None for a single-task model (it has no task embedding)."""
    if not isinstance(batch, Batch):
        raise TypeError(
            f"Got a batch of type {type(batch).__name__}; expected a tdmpc2_data.Batch "
            "(obs, action, reward, task)."
        )
    if batch.obs.ndim != 3 or batch.obs.shape[0] < 2:
        raise ValueError(
            f"Got batch.obs of shape {tuple(batch.obs.shape)}; expected [H+1, B, {cfg.obs_dim}] "
            "with H >= 1."
        )
    steps, size = batch.obs.shape[0] - 1, batch.obs.shape[1]
    expected = {
        "obs": (steps + 1, size, cfg.obs_dim),
        "action": (steps, size, cfg.action_dim),
        "reward": (steps, size),
        "task": (size,),
    }
    for name, shape in expected.items():
        got = tuple(getattr(batch, name).shape)
        if got != shape:
            raise ValueError(f"Got batch.{name} of shape {got}; expected {shape}.")
    obs, action, reward = (x.to(device, torch.float32, non_blocking=True) for x in batch[:3])
    task = batch.task.to(device, torch.long, non_blocking=True) if cfg.multitask else None
    return obs, action, reward, task


def clip_gradients(optimizer: Any, max_norm: float) -> torch.Tensor:
    """Clip the gradients of the parameters ``optimizer`` steps; returns their total norm
    before clipping. Under DDP/FSDP the gradients are already averaged over ranks."""
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    return full_tensor(torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True))


def update_step(
    agent: Learner,
    batch: Batch,
    optimizers: tuple[Any, Any] | None = None,
    backward: Callable[[torch.Tensor], Any] | None = None,
) -> dict[str, torch.Tensor]:
    """One update of ``agent``'s model, policy and target Q on ``batch``; returns the losses,
    gradient norms and policy statistics as 0-dim tensors.

    ``optimizers``: the (model, policy) pair to step, default the agent's own. ``backward``:
    how a loss is backpropagated, default ``loss.backward()``. The model is in training mode
    (Q dropout) during the update and back in its previous mode after it.
    """
    obs, action, reward, task = check_batch(batch, agent.cfg, agent.device)
    model_optim, pi_optim = optimizers or (agent.optim, agent.pi_optim)
    backward = backward or torch.Tensor.backward
    model, clip = agent.model, agent.cfg.grad_clip_norm
    training = model.training
    model.train()
    try:
        with fast_kernels():
            total, zs, info = agent.model_loss(model, obs, action, reward, task, agent.gamma)
            backward(total)
            info["grad_norm"] = clip_gradients(model_optim, clip)
            model_optim.step()
            model_optim.zero_grad(set_to_none=True)

            pi_loss, pi_info = agent.policy_loss(model, zs, task, agent.scale)
            backward(pi_loss)
            pi_info["pi_grad_norm"] = clip_gradients(pi_optim, clip)
            pi_optim.step()
            # Both optimizers clear right after their step, as the original does: the
            # model's grad norm must see no policy gradients, while the policy loss's
            # task-embedding gradients carry into the next model step exactly as there.
            pi_optim.zero_grad(set_to_none=True)
            model.update_target_Q()
    finally:
        model.train(training)
    return {**info, **pi_info}
