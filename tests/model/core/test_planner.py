"""Which action a plan executes (`TDMPC2Config.plan_action`): a drawn elite's first action,
as the original code does, or the plan mean's; exploration noise only in training mode."""

import numpy as np
import pytest
import torch

from tdmpc2_model import TDMPC2, TDMPC2Config
from tdmpc2_model.core.planner import plan, select_action


def _agent(plan_action: str) -> TDMPC2:
    # one MPPI iteration, no policy samples: the plan's candidates are exactly
    # max_std * the first torch.randn call, which a test can replay from the seed
    cfg = TDMPC2Config(size="1M", tasks="cheetah-run", num_pi_trajs=0, iterations=1,
                       num_samples=64, num_elites=8, plan_action=plan_action)  # fmt: skip
    return TDMPC2(cfg)


def _candidates(cfg: TDMPC2Config, seed: int) -> torch.Tensor:
    """First actions [N, A] of the samples ``plan`` draws after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    noise = torch.randn(cfg.horizon, cfg.num_samples, cfg.action_dim)
    return (cfg.max_std * noise[0]).clamp(-1, 1)


@pytest.mark.parametrize("plan_action", ["elite", "mean"])
def test_the_executed_action_is_a_sampled_elite_or_the_mean(plan_action):
    agent = _agent(plan_action)
    obs = torch.randn(1, agent.cfg.obs_dim)
    hits = 0
    for seed in range(5):
        candidates = _candidates(agent.cfg, seed)
        torch.manual_seed(seed)
        action, mean = plan(agent.model, obs, None, 0.99)
        is_sample = (candidates - action).abs().amax(1).min() < 1e-6
        hits += int(is_sample)
        if plan_action == "mean":
            torch.testing.assert_close(action, mean[0].clamp(-1, 1))
    assert hits == (5 if plan_action == "elite" else 0)


def test_elites_are_drawn_in_proportion_to_their_scores():
    torch.manual_seed(0)
    horizon, elites, dim = 3, 4, 2
    elite_actions = (
        torch.arange(elites, dtype=torch.float32).view(1, elites, 1).repeat(horizon, 1, dim) / 10
    )
    score = torch.tensor([0.1, 0.2, 0.3, 0.4])
    mean, std = torch.zeros(horizon, dim), torch.ones(horizon, dim)
    draws = 20_000
    picked = torch.stack(
        [select_action(elite_actions, score, mean, std, "elite", True) for _ in range(draws)]
    )
    counts = np.bincount((picked[:, 0] * 10).round().long().numpy(), minlength=elites)
    expected = score.numpy() * draws
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 16.3, (counts, expected)  # p = 0.001 for 3 degrees of freedom
    assert (picked[:, 0] == picked[:, 1]).all()  # one elite's whole action, never a mix


@pytest.mark.parametrize("plan_action", ["elite", "mean"])
def test_noise_only_in_training_mode(plan_action):
    torch.manual_seed(0)
    elite_actions = torch.full((3, 2, 4), 0.25)
    score, mean = torch.tensor([0.5, 0.5]), torch.full((3, 4), 0.25)
    std = torch.tensor([[0.1, 0.1, 0.0, 0.0]]).repeat(3, 1)  # the last two dims are padding
    evals = torch.stack([select_action(elite_actions, score, mean, std, plan_action, True)
                         for _ in range(200)])  # fmt: skip
    assert (evals == 0.25).all()
    trains = torch.stack([select_action(elite_actions, score, mean, std, plan_action, False)
                          for _ in range(2000)])  # fmt: skip
    assert trains[:, 2:].eq(0.25).all()  # no noise where std is 0 (masked dims)
    assert trains[:, :2].std(0).sub(0.1).abs().max() < 0.01
    assert trains[:, :2].mean(0).sub(0.25).abs().max() < 0.01


def test_plan_action_is_validated_and_old_configs_load_with_the_original_choice():
    with pytest.raises(ValueError, match=r"plan_action='best'; use one of \('elite', 'mean'\)"):
        TDMPC2Config(size="1M", tasks="cheetah-run", plan_action="best")
    saved = TDMPC2Config(size="1M", tasks="cheetah-run").to_dict()
    del saved["plan_action"]  # a config.json written before the option existed
    assert TDMPC2Config.from_dict(saved).plan_action == "elite"
