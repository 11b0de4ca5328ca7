"""TDMPC2 agent: the update learns and touches the right parameters, the target Q follows by
EMA, MPPI respects bounds and action masks, warm start shifts the previous plan."""

import numpy as np
import pytest
import torch

from tdmpc2_data.batch import Batch
from tdmpc2_model import TDMPC2, TDMPC2Config
from tdmpc2_model.core.planner import plan


def random_batch(cfg: TDMPC2Config, batch: int = 32, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    h = cfg.horizon
    task = torch.randint(0, cfg.num_tasks, (batch,), generator=g)
    return Batch(
        obs=torch.randn(h + 1, batch, cfg.obs_dim, generator=g),
        action=torch.rand(h, batch, cfg.action_dim, generator=g) * 2 - 1,
        reward=torch.rand(h, batch, generator=g),
        task=task,
    )


@pytest.fixture(params=["cheetah-run", "mt30"])
def agent(request):
    torch.manual_seed(0)
    return TDMPC2(TDMPC2Config(size="1M", tasks=request.param))


def test_updates_reduce_the_loss_without_nan(agent):
    batch = random_batch(agent.cfg)
    first = agent.update(batch)
    for _ in range(15):
        last = agent.update(batch)
    assert set(first) >= {"consistency_loss", "reward_loss", "value_loss", "total_loss",
                          "grad_norm", "pi_loss", "pi_grad_norm", "pi_scale"}  # fmt: skip
    assert all(np.isfinite(v) for v in last.values())
    assert last["total_loss"] < 0.8 * first["total_loss"]
    assert not agent.model.training  # back in eval mode for acting


def test_update_takes_only_a_batch_of_the_models_shapes(agent):
    batch = random_batch(agent.cfg, batch=8)
    assert np.isfinite(agent.update(batch)["total_loss"])
    with pytest.raises(TypeError, match="type dict; expected a tdmpc2_data.Batch"):
        agent.update(batch._asdict())
    with pytest.raises(ValueError, match=r"batch.reward of shape \(2, 8\); expected \(3, 8\)"):
        agent.update(batch._replace(reward=batch.reward[:2]))
    with pytest.raises(ValueError, match=r"batch.task of shape \(4,\); expected \(8,\)"):
        agent.update(batch._replace(task=batch.task[:4]))
    with pytest.raises(ValueError, match=r"batch.obs of shape \(8, 5\); expected \[H\+1, B, "):
        agent.update(batch._replace(obs=batch.obs[0, :, :5]))


def test_target_q_moves_by_tau_and_policy_loss_trains_only_the_policy(agent):
    wm = agent.model
    before = {k: v.clone() for k, v in wm.state_dict().items()}
    agent.update(random_batch(agent.cfg))
    after = wm.state_dict()
    tau = agent.cfg.tau
    for key in (k for k in after if k.startswith("_target_Qs_params")):
        online = after[key.replace("_target_Qs_params", "_Qs.params")]
        expected = before[key] + tau * (online - before[key])
        torch.testing.assert_close(after[key], expected)
    assert not torch.equal(after["_pi.0.weight"], before["_pi.0.weight"])
    assert not torch.equal(after["_Qs.params.2.weight"], before["_Qs.params.2.weight"])
    # the policy's gradients never reach the Q-functions (detached weights)
    wm.zero_grad(set_to_none=True)
    z = torch.randn(4, agent.cfg.latent_dim, requires_grad=True)
    task = torch.zeros(4, dtype=torch.long) if agent.cfg.multitask else None
    action, _ = wm.pi(z, task)
    wm.Q(z, action, task, return_type="avg", detach=True).sum().backward()
    assert all(p.grad is None for p in wm._Qs.parameters())
    assert wm._pi[0].weight.grad is not None


def test_dropout_only_in_training_mode(agent):
    wm = agent.model
    with torch.no_grad():  # the output layer starts at zero, which would hide dropout
        wm._Qs.params[-1].weight.normal_()
    z, a = torch.randn(16, agent.cfg.latent_dim), torch.rand(16, agent.cfg.action_dim)
    task = torch.zeros(16, dtype=torch.long) if agent.cfg.multitask else None
    assert torch.equal(wm.Q(z, a, task, "all"), wm.Q(z, a, task, "all"))
    wm.train()
    assert not torch.equal(wm.Q(z, a, task, "all"), wm.Q(z, a, task, "all"))
    assert torch.equal(wm.Q(z, a, task, "all", target=True), wm.Q(z, a, task, "all", target=True))
    wm.eval()


@pytest.mark.parametrize("eval_mode", [True, False])
def test_multitask_actions_are_bounded_and_masked(eval_mode):
    torch.manual_seed(0)
    agent = TDMPC2(TDMPC2Config(size="1M", tasks="mt30", num_samples=128, num_elites=16))
    with torch.no_grad():  # large outputs so that unclamped actions would leave [-1, 1]
        agent.model._pi[-1].bias.add_(5.0)
    for name, obs_dim, act_dim in [("cartpole-swingup", 5, 1), ("hopper-hop", 15, 4)]:
        action = agent.act(np.random.randn(obs_dim).astype(np.float32), t0=True,
                           eval_mode=eval_mode, task=name)  # fmt: skip
        assert isinstance(action, np.ndarray) and action.shape == (6,)
        assert np.all(np.abs(action) <= 1.0)
        assert np.all(action[act_dim:] == 0.0) and np.any(action[:act_dim] != 0.0)
    with pytest.raises(ValueError, match="task="):
        agent.act(np.zeros(24, np.float32))


def test_act_accepts_torch_and_checks_shapes():
    agent = TDMPC2(TDMPC2Config(size="1M", tasks="cheetah-run", num_samples=64, num_elites=8))
    action = agent.act(torch.randn(17), t0=True)
    assert isinstance(action, torch.Tensor) and action.shape == (6,)
    with pytest.raises(ValueError, match="obs of shape"):
        agent.act(torch.randn(2, 17))
    with pytest.raises(ValueError, match="walker-walk"):
        agent.act(torch.randn(17), task="walker-walk")


def test_warm_start_shifts_the_previous_plan():
    # no policy samples and a tiny std: every sample equals the initial mean, so the plan's
    # mean is the warm start itself
    cfg = TDMPC2Config(size="1M", tasks="cheetah-run", num_pi_trajs=0, num_samples=16,
                       num_elites=4, min_std=1e-6, max_std=1e-6)  # fmt: skip
    agent = TDMPC2(cfg)
    obs = torch.randn(1, cfg.obs_dim)
    prev = torch.rand(cfg.horizon, cfg.action_dim) * 1.6 - 0.8
    action, mean = plan(agent.model, obs, None, 0.99, prev_mean=prev)
    torch.testing.assert_close(mean[:-1], prev[1:])
    assert torch.all(mean[-1].abs() < 1e-5)
    torch.testing.assert_close(action, prev[1])
    action, mean = plan(agent.model, obs, None, 0.99, prev_mean=None)  # episode start
    assert torch.all(mean.abs() < 1e-5)
    # the agent keeps its plan between steps and forgets it at t0
    agent.act(obs[0], t0=True)
    kept = agent._prev_mean.clone()
    torch.testing.assert_close(agent.act(obs[0]), kept[1])


def test_policy_only_acting_without_mpc():
    agent = TDMPC2(TDMPC2Config(size="1M", tasks="cheetah-run", mpc=False))
    obs = torch.randn(17)
    torch.testing.assert_close(agent.act(obs), agent.act(obs))  # eval: the policy mean


def test_optimizers_follow_the_paper(agent):
    cfg, model = agent.cfg, agent.model
    lrs = {id(p): g["lr"] for g in agent.optim.param_groups for p in g["params"]}
    assert lrs[id(model._encoder["state"][0].weight)] == pytest.approx(cfg.lr * 0.3)
    assert lrs[id(model._Qs.params[0].weight)] == cfg.lr
    if cfg.multitask:
        assert lrs[id(model._task_emb.weight)] == cfg.lr
    learnable = [p for p in model.parameters() if p.requires_grad]
    pi_params = {id(p) for p in model._pi.parameters()}
    assert set(lrs) | pi_params == {id(p) for p in learnable} and not set(lrs) & pi_params
    assert agent.pi_optim.param_groups[0]["eps"] == 1e-5


@pytest.mark.slow
def test_compiled_update_trains():
    torch.manual_seed(0)
    agent = TDMPC2(TDMPC2Config(size="1M", tasks="mt30")).compile_update()
    batch = random_batch(agent.cfg)
    first = agent.update(batch)
    for _ in range(5):
        last = agent.update(batch)
    assert all(np.isfinite(v) for v in last.values())
    assert last["total_loss"] < first["total_loss"]


def test_learned_reward_steers_the_plan():
    # reward = 2 * a[0] on random states: after a few dozen updates the plan pushes a[0] up
    torch.manual_seed(0)
    agent = TDMPC2(TDMPC2Config(size="1M", tasks="cheetah-run", num_samples=256))
    g = torch.Generator().manual_seed(1)
    for _ in range(60):
        action = torch.rand(3, 64, 6, generator=g) * 2 - 1
        obs = torch.randn(4, 64, 17, generator=g)
        agent.update(Batch.of_task(obs, action, 2 * action[..., 0]))
    first = torch.stack([agent.act(torch.randn(17, generator=g), t0=True) for _ in range(4)])[:, 0]
    assert (first > 0.5).all(), first
