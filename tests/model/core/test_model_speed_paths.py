"""The fast execution paths that bench/model.py measures give sane results: bf16-mixed
planning keeps its MPPI statistics in float32, bf16-mixed updates learn, and a compiled
``act`` plans like the eager one."""

import numpy as np
import pytest
import torch

from tdmpc2_data.batch import Batch
from tdmpc2_model import TDMPC2, TDMPC2Config
from tdmpc2_model.core.planner import estimate_value


def small_agent(tasks: str = "mt30") -> TDMPC2:
    torch.manual_seed(0)
    agent = TDMPC2(TDMPC2Config(size="1M", tasks=tasks, num_samples=256, num_elites=32))
    with torch.no_grad():  # nonzero heads, so that values differ between samples
        agent.model._reward[-1].weight.normal_(0, 0.1)
        agent.model._Qs.params[-1].weight.normal_(0, 0.1)
    return agent


def test_bf16_mixed_planning_keeps_float32_statistics():
    agent = small_agent()
    obs = torch.randn(5)  # cartpole-swingup: 5 obs dims, 1 action dim
    with torch.autocast("cpu", dtype=torch.bfloat16):
        action = agent.act(obs, t0=True, task="cartpole-swingup")
        action = agent.act(obs, task="cartpole-swingup")
    assert action.dtype == torch.float32 and agent._prev_mean.dtype == torch.float32
    assert torch.all(action.abs() <= 1) and torch.all(action[1:] == 0)


def test_bf16_mixed_updates_learn():
    agent = small_agent("walker-walk")
    g = torch.Generator().manual_seed(0)
    batch = Batch.of_task(
        obs=torch.randn(4, 64, 24, generator=g),
        action=torch.rand(3, 64, 6, generator=g) * 2 - 1,
        reward=torch.rand(3, 64, generator=g),
    )
    losses = []
    for _ in range(12):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses.append(agent.update(batch)["total_loss"])
    assert all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0]
    assert all(p.dtype == torch.float32 for p in agent.model.parameters())


@pytest.mark.slow
def test_compiled_planning_matches_eager():
    import torch._inductor.config as inductor

    # eager's random streams; the config's own patch (monkeypatch would delete the option)
    with inductor.patch(fallback_random=True):
        check_compiled_planning()


def check_compiled_planning() -> None:
    options = {"pattern_matcher": False}
    agent = small_agent()
    wm, task = agent.model, torch.tensor([1])
    z, actions = wm.encode(torch.randn(256, 24), task), torch.rand(3, 256, 6) * 2 - 1
    values = []
    for fn in (estimate_value, torch.compile(estimate_value, options=options)):
        torch.manual_seed(5)
        values.append(fn(wm, z, actions, task, 0.99))
    torch.testing.assert_close(values[1], values[0], rtol=1e-5, atol=1e-4)
    # one MPPI iteration: the same elites, so the same action (more iterations compound
    # float differences through the elite choice, like any change of summation order)
    agent.cfg.iterations = 1
    act = torch.compile(agent.act, options=options)
    obs = torch.randn(24)
    for t0 in (True, False):
        state, prev = torch.random.get_rng_state(), agent._prev_mean.clone()
        eager = agent.act(obs, t0=t0, task="walker-walk")
        torch.random.set_rng_state(state)
        agent._prev_mean.copy_(prev)
        torch.testing.assert_close(act(obs, t0=t0, task="walker-walk"), eager, rtol=0, atol=1e-4)
