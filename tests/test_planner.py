"""Which action the MPPI plan executes: by default one elite sequence drawn by score (as the
original code), its first action, plus std noise only in training mode; "mean" keeps the
refit mean. Config validation and old configs without the field."""

import json

import pytest
import torch

from tdmpc2_model import TDMPC2, TDMPC2Config
from tdmpc2_model.planner import draw_index, estimate_value, plan

#: every sample is an elite and there is one MPPI iteration, so the candidates of the draw
#: are exactly the first Gaussian samples, which a test can reproduce from the seed
ONE_ROUND = dict(size="1M", tasks="cheetah-run", num_pi_trajs=0, num_samples=32,
                 num_elites=32, iterations=1)  # fmt: skip


def make_agent(**kwargs) -> TDMPC2:
    """A fresh agent with every weight perturbed: a fresh model's reward and Q heads are
    zero, so all sequences would tie."""
    torch.manual_seed(0)
    agent = TDMPC2(TDMPC2Config(**{**ONE_ROUND, **kwargs}))
    with torch.no_grad():
        for p in agent.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return agent


def first_samples(cfg: TDMPC2Config, seed: int) -> torch.Tensor:
    """The plan's first Gaussian samples [H, N, A] for ``seed`` (mean 0, std max_std)."""
    torch.manual_seed(seed)
    noise = torch.randn(cfg.horizon, cfg.num_samples, cfg.action_dim)
    return (cfg.max_std * noise).clamp(-1, 1)


def test_draw_index_follows_the_probabilities():
    probs = torch.tensor([0.5, 0.25, 0.15, 0.07, 0.03])
    torch.manual_seed(0)
    n = 20_000
    counts = torch.bincount(torch.stack([draw_index(probs) for _ in range(n)]), minlength=5)
    expected = probs * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 18.47, (chi2, counts)  # chi-square, 4 dof, p = 0.001
    # a one-hot score always picks its elite
    assert {int(draw_index(torch.tensor([0.0, 1.0, 0.0]))) for _ in range(50)} == {1}


def test_eval_action_is_a_drawn_elites_first_action():
    agent = make_agent()
    obs = torch.randn(1, agent.cfg.obs_dim)
    picked = set()
    for seed in range(20):
        candidates = first_samples(agent.cfg, seed)[0]  # [N, A]
        torch.manual_seed(seed)
        action, mean = plan(agent.model, obs, None, 0.99)
        match = (candidates == action).all(1).nonzero().flatten().tolist()
        assert len(match) == 1, "the action is not one of the sampled first actions"
        assert not torch.allclose(action, mean[0])
        picked.add(match[0])
    assert len(picked) > 3  # drawn, not always the same elite


def test_a_sharp_score_draws_the_best_sequence():
    # temperature 1e4: the score is one-hot on the highest-valued sample
    agent = make_agent(temperature=1e4)
    cfg, obs = agent.cfg, torch.randn(1, agent.cfg.obs_dim)
    for seed in range(5):
        samples = first_samples(cfg, seed)  # the RNG continues as inside the plan
        z = agent.model.encode(obs, None).expand(cfg.num_samples, -1)
        best = estimate_value(agent.model, z, samples, None, 0.99).squeeze(1).argmax()
        torch.manual_seed(seed)
        action, _ = plan(agent.model, obs, None, 0.99)
        torch.testing.assert_close(action, samples[0, best])


@pytest.mark.parametrize("plan_action", ["elite", "mean"])
def test_noise_only_in_training_mode(plan_action):
    # min_std == max_std fixes the plan's std, so the training action is the eval action
    # plus std times the next Gaussian draw
    std = 0.3
    agent = make_agent(min_std=std, max_std=std, plan_action=plan_action)
    obs = torch.randn(1, agent.cfg.obs_dim)
    torch.manual_seed(5)
    eval_action, _ = plan(agent.model, obs, None, 0.99, eval_mode=True)
    noise = torch.randn(agent.cfg.action_dim)
    torch.manual_seed(5)
    again, _ = plan(agent.model, obs, None, 0.99, eval_mode=True)
    torch.testing.assert_close(again, eval_action)
    torch.manual_seed(5)
    train_action, _ = plan(agent.model, obs, None, 0.99, eval_mode=False)
    torch.testing.assert_close(train_action, (eval_action + std * noise).clamp(-1, 1))
    assert not torch.equal(train_action, eval_action)


def test_mean_option_executes_the_mean():
    agent = make_agent(num_samples=64, num_elites=8, iterations=6, plan_action="mean")
    obs = torch.randn(1, agent.cfg.obs_dim)
    for prev in (None, torch.rand(agent.cfg.horizon, agent.cfg.action_dim) - 0.5):
        action, mean = plan(agent.model, obs, None, 0.99, prev_mean=prev)
        torch.testing.assert_close(action, mean[0].clamp(-1, 1))


def test_plan_action_is_validated_and_defaults_for_old_configs():
    with pytest.raises(ValueError, match="plan_action='best'"):
        TDMPC2Config(size="1M", tasks="cheetah-run", plan_action="best")
    cfg = TDMPC2Config(size="1M", tasks="cheetah-run")
    assert cfg.plan_action == "elite"
    old = json.loads(json.dumps(cfg.to_dict()))
    del old["plan_action"]  # a config.json written before the field existed
    assert TDMPC2Config.from_dict(old).plan_action == "elite"
    mean = TDMPC2Config(size="1M", tasks="cheetah-run", plan_action="mean")
    assert TDMPC2Config.from_dict(mean.to_dict()).plan_action == "mean"
