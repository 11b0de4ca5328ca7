"""`PaddedEnv` speaks a multitask model's widths to a real DMControl task: observations zero
padded, padded actions cut to the task's dims, the task's row of the model's action masks."""

from __future__ import annotations

import numpy as np
import pytest

from tdmpc2_data.envs import PaddedEnv, make_env
from tdmpc2_model import TDMPC2Config
from tdmpc2_model.core.world_model import action_masks

TASK = "cartpole-balance"  # 5 observations, 1 action


def test_padded_env_pads_observations_and_slices_actions_to_a_multitask_models_widths():
    cfg = TDMPC2Config(size="1M", tasks=["walker-walk", TASK])  # 24/6 wide
    env = PaddedEnv(make_env(TASK, seed=3), cfg.obs_dim, cfg.action_dim)
    raw = make_env(TASK, seed=3)
    assert env.observation_space.shape == (24,) and env.action_space.shape == (6,)
    np.testing.assert_array_equal(env.action_mask, action_masks(cfg)[cfg.task_id(TASK)].numpy())
    obs, _ = env.reset(seed=1)
    expected, _ = raw.reset(seed=1)
    assert obs.dtype == np.float32 and obs.shape == (24,)
    np.testing.assert_array_equal(obs[:5], expected)
    assert not obs[5:].any()
    padded = np.array([0.5, 9, 9, 9, 9, 9], np.float32)  # padding dims are ignored
    obs, reward, terminated, truncated, _ = env.step(padded)
    expected, raw_reward, *_ = raw.step(padded[:1])
    np.testing.assert_array_equal(obs, np.pad(expected, (0, 19)))
    assert reward == raw_reward and not terminated and not truncated
    action = env.random_action(np.random.default_rng(0))
    assert action.shape == (6,) and -1 <= action[0] <= 1 and not action[1:].any()
    with pytest.raises(ValueError, match=r"padded to shape \(6,\), got \(1,\)"):
        env.step(padded[:1])
    with pytest.raises(ValueError, match="cannot pad them to 4/6"):
        PaddedEnv(make_env(TASK), 4, 6)
    env.close()
    raw.close()
