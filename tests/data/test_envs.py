"""The simulator layer: every task steps with the registry's dims and episode length, the
custom DMControl rewards do what spec/tasks.md says, seeding reproduces rollouts, and missing
simulators fail with an error that says how to install them."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from tdmpc2_data.envs import MultitaskEnv, SimulatorUnavailableError, make_env
from tdmpc2_data.tasks import MANISKILL, TASK_SETS, TASKS, UnknownTaskError

SIMULATED = [name for name, task in TASKS.items() if task.domain != MANISKILL]


def rollout(env, seed: int | None, steps: int, action_seed: int = 0):
    """Observations [steps+1, d], rewards [steps] and infos of random actions from a reset."""
    rng = np.random.default_rng(action_seed)
    obs, _ = env.reset(seed=seed)
    observations, rewards, infos = [obs], [], []
    for _ in range(steps):
        obs, reward, _, _, info = env.step(rng.uniform(-1, 1, env.action_space.shape))
        observations.append(obs)
        rewards.append(reward)
        infos.append(info)
    return np.stack(observations), np.array(rewards), infos


# -- every task ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SIMULATED)
def test_every_task_resets_and_steps_with_registry_dims(name):
    task = TASKS[name]
    env = make_env(name, seed=0)
    assert env.task == task
    assert env.observation_space.shape == (task.obs_dim,)
    assert env.action_space.shape == (task.action_dim,)
    assert env.action_space.dtype == np.float32
    assert (env.action_space.low == -1).all() and (env.action_space.high == 1).all()
    obs, info = env.reset()
    assert obs.shape == (task.obs_dim,) and obs.dtype == np.float32
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert obs.shape == (task.obs_dim,) and obs.dtype == np.float32
        assert np.isfinite(obs).all() and np.isfinite(reward)
        assert isinstance(reward, float)
        assert not terminated and not truncated
        assert ("success" in info) == task.has_success
    env.close()


@pytest.mark.parametrize("name", ["walker-walk", "reacher-three-hard", "mw-assembly", "myo-pose"])
def test_episode_is_exactly_episode_length_steps_then_truncated(name):
    env = make_env(name, seed=1)
    length = env.task.episode_length
    for _ in range(2):  # a second episode after reset is as long as the first
        env.reset()
        flags = [env.step(np.zeros(env.task.action_dim))[2:4] for _ in range(length)]
        assert flags[-1] == (False, True)
        assert all(flag == (False, False) for flag in flags[:-1])
        with pytest.raises(RuntimeError, match="call reset"):
            env.step(np.zeros(env.task.action_dim))


def test_dmcontrol_matches_dm_control_with_action_scale_and_repeat():
    """Observation = the flattened dict, actions rescaled by dm_control's wrapper, 2 sim steps
    per agent step with summed rewards."""
    from dm_control import suite
    from dm_control.suite.wrappers import action_scale

    raw = action_scale.Wrapper(suite.load("walker", "walk", task_kwargs={"random": 7}), -1.0, 1.0)
    env = make_env("walker-walk", seed=7)
    time_step = raw.reset()
    expected = np.concatenate([np.ravel(v) for v in time_step.observation.values()])
    np.testing.assert_allclose(env.reset()[0], expected, rtol=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(5):
        action = rng.uniform(-1, 1, 6).astype(np.float32)
        first, second = raw.step(action), raw.step(action)
        obs, reward, *_ = env.step(action)
        expected = np.concatenate([np.ravel(v) for v in second.observation.values()])
        np.testing.assert_allclose(obs, expected, rtol=1e-6)
        assert reward == pytest.approx(first.reward + second.reward)


def test_metaworld_repeats_each_action_twice():
    env = make_env("mw-reach", seed=0)
    env.reset()
    for _ in range(3):
        env.step(np.zeros(4))
    assert env._env.curr_path_length == 6


@pytest.mark.parametrize("name", ["cheetah-run", "mw-push", "myo-key-turn"])
def test_out_of_range_actions_are_clipped(name):
    env = make_env(name, seed=0)
    rng = np.random.default_rng(1)
    actions = rng.uniform(-3, 3, (5, env.task.action_dim))
    results = []
    for scale in (actions, np.clip(actions, -1, 1)):
        env.reset(seed=3)
        results.append([env.step(a)[:2] for a in scale])
    for (obs_a, r_a), (obs_b, r_b) in zip(*results, strict=True):
        np.testing.assert_array_equal(obs_a, obs_b)
        assert r_a == r_b


@pytest.mark.parametrize("name", ["walker-walk", "mw-door-open", "myo-reach", "multitask"])
def test_gymnasium_env_checker_passes(name):
    """Gymnasium's own API checks, including determinism of seeded reset and step."""
    from gymnasium.utils.env_checker import check_env

    env = MultitaskEnv(["walker-walk", "mw-door-open"]) if name == "multitask" else make_env(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns about the unbounded observation space
        check_env(env, skip_render_check=True)


def test_bad_actions_and_misuse_raise_clear_errors():
    env = make_env("cartpole-balance")
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(1))
    env.reset()
    with pytest.raises(ValueError, match=r"shape \(1,\)"):
        env.step(np.zeros(2))
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([np.nan]))
    with pytest.raises(ValueError, match="render_mode"):
        make_env("cartpole-balance", render_mode="human")


# -- seeding ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["walker-walk", "cup-spin", "mw-door-open", "myo-reach-hard"])
def test_same_seed_same_rollout_and_other_seed_other_start(name):
    env = make_env(name, seed=5)
    first = rollout(env, None, 20)  # the first reset uses the constructor's seed
    again = rollout(env, 5, 20)
    fresh = rollout(make_env(name, seed=11), 5, 20)
    for other in (again, fresh):
        np.testing.assert_array_equal(first[0], other[0])
        np.testing.assert_array_equal(first[1], other[1])
    assert not np.array_equal(first[0][0], rollout(env, 6, 0)[0][0])


def test_metaworld_goal_is_redrawn_each_reset_and_reproducible():
    env = make_env("mw-door-open", seed=0)
    goals = []
    for _ in range(4):
        obs, _ = env.reset()
        np.testing.assert_allclose(obs[36:39], env.goal, atol=1e-6)  # goal-observable
        goals.append(env.goal)
    assert len({tuple(g) for g in goals}) == 4
    replay = make_env("mw-door-open", seed=0)
    for goal in goals:
        replay.reset()
        np.testing.assert_array_equal(replay.goal, goal)


def test_success_flags_come_from_the_simulators():
    """Meta-World's reach task succeeds when the hand is driven to the observed goal."""
    env = make_env("mw-reach", seed=0)
    obs, _ = env.reset()
    successes = []
    for _ in range(env.task.episode_length):
        hand, goal = obs[:3], obs[36:39]
        action = np.append(np.clip((goal - hand) * 50, -1, 1), 0.0)
        obs, _, _, _, info = env.step(action)
        successes.append(info["success"])
    assert successes[0] == 0.0 and successes[-1] == 1.0
    myo = make_env("myo-reach", seed=0)
    myo.reset()
    assert myo.step(np.zeros(39))[4]["success"] in (0.0, 1.0)


# -- the custom DMControl tasks -------------------------------------------------------------
def reward_at(name: str, qpos: dict | None = None, qvel: dict | None = None, model=None) -> float:
    """The task's reward in a state set by hand: all joints at 0 except the named ones;
    ``model`` maps (model field, name) to a value, e.g. the target position."""
    env = make_env(name)
    env.reset()
    physics, task = env.dm_env.physics, env.dm_env.task
    with physics.reset_context():
        physics.data.qpos[:] = 0
        physics.data.qvel[:] = 0
        for joint, value in (qpos or {}).items():
            physics.named.data.qpos[joint] = value
        for joint, value in (qvel or {}).items():
            physics.named.data.qvel[joint] = value
        for (field, key), value in (model or {}).items():
            getattr(physics.named.model, field)[key] = value
    return float(task.get_reward(physics))


def test_walker_backwards_rewards_negative_velocity():
    # Standing upright at rest: posture term 1.
    assert reward_at("walker-walk-backwards", qvel={"rootx": -1.0}) == pytest.approx(1.0)
    assert reward_at("walker-walk-backwards", qvel={"rootx": 1.0}) == pytest.approx(1 / 6)
    assert reward_at("walker-run-backwards", qvel={"rootx": -8.0}) == pytest.approx(1.0)
    slow = reward_at("walker-run-backwards", qvel={"rootx": -1.0})
    assert slow == pytest.approx((5 * (1 - 0.5 * 7 / 4) + 1) / 6)  # linear, margin 4


def test_cheetah_run_backwards_rewards_negative_speed():
    assert reward_at("cheetah-run-backwards", qvel={"rootx": -8.0}) == pytest.approx(1.0)
    assert reward_at("cheetah-run-backwards", qvel={"rootx": -4.0}) == pytest.approx(0.5)
    assert reward_at("cheetah-run-backwards", qvel={"rootx": 8.0}) == 0.0


def test_cheetah_run_front_and_back_reward_the_raised_foot_and_speed():
    # Pitch +0.8 lifts the back foot (bfoot), -0.8 the front foot (ffoot).
    back_up, front_up = {"rooty": 0.8, "rootz": 0.3}, {"rooty": -0.8, "rootz": 0.3}
    assert reward_at("cheetah-run-front", back_up) > reward_at("cheetah-run-back", back_up)
    assert reward_at("cheetah-run-back", front_up) > reward_at("cheetah-run-front", front_up)
    still = reward_at("cheetah-run-front", back_up)
    fast = reward_at("cheetah-run-front", back_up, {"rootx": 6.0})
    assert fast == pytest.approx(6 * still)  # up * (5*run + 1)/6 with run 0 -> 1


def test_cheetah_jump_rewards_height_without_horizontal_motion():
    airborne = reward_at("cheetah-jump", {"rootz": 1.0})
    assert airborne == pytest.approx(1.0)
    assert reward_at("cheetah-jump") < 0.5 < airborne
    assert reward_at("cheetah-jump", {"rootz": 1.0}, {"rootx": 1.0}) == pytest.approx(5 / 6)


def test_hopper_hop_backwards_rewards_hopping_backwards():
    assert reward_at("hopper-hop-backwards", qvel={"rootx": -2.0}) == pytest.approx(1.0)
    assert reward_at("hopper-hop-backwards", qvel={"rootx": -0.75}) == pytest.approx(0.75)
    assert reward_at("hopper-hop-backwards", qvel={"rootx": 2.0}) == 0.0


def test_cup_spin_rewards_ball_speed_outside_the_cup():
    in_cup = {"ball_x": 0.0, "ball_z": 0.35}  # the target box centre
    below = {"ball_x": 0.0, "ball_z": 0.0}  # 0.35 below the target
    assert reward_at("cup-spin", in_cup, {"ball_x": 10.0}) == 0.0
    resting = reward_at("cup-spin", below)
    assert resting == pytest.approx((1 - 0.5 * 0.15 / 0.25) / 3)
    assert reward_at("cup-spin", below, {"ball_x": -6.0}) == pytest.approx(resting + 2 / 3)
    assert reward_at("cup-spin", below, {"ball_x": 3.0, "ball_z": 3.0}) > resting


def test_cup_spin_ball_starts_in_the_cup_in_most_episodes():
    env = make_env("cup-spin", seed=0)
    starts = []
    for _ in range(60):
        env.reset()
        starts.append(env.dm_env.physics.in_target())
    assert 0.8 <= np.mean(starts) < 1.0


def test_pendulum_spin_rewards_angular_speed_either_way():
    assert reward_at("pendulum-spin", qvel={"hinge": 10.0}) == pytest.approx(1.0)
    assert reward_at("pendulum-spin", qvel={"hinge": -10.0}) == pytest.approx(1.0)
    assert reward_at("pendulum-spin", qvel={"hinge": 6.75}) == pytest.approx(0.75)
    assert reward_at("pendulum-spin") == 0.0


def test_reacher_three_links_model_and_target_sizes():
    sizes = {}
    for name in ("reacher-three-easy", "reacher-three-hard"):
        env = make_env(name)
        obs, _ = env.reset()
        physics = env.dm_env.physics
        model = physics.named.model
        assert obs.shape == (8,)
        assert physics.model.nu == 3
        np.testing.assert_array_equal(physics.model.jnt_limited, [0, 1, 1])
        np.testing.assert_allclose(
            model.jnt_range[["shoulder1", "wrist"]], np.deg2rad([[-80, 80]] * 2)
        )
        np.testing.assert_allclose(model.geom_size[["arm0", "arm1", "hand"], 0], 0.01)
        np.testing.assert_allclose(obs[3:5], physics.finger_to_target())  # target minus finger
        sizes[name] = model.geom_size["target", 0]
    assert sizes == {"reacher-three-easy": 0.05, "reacher-three-hard": 0.015}
    # Link lengths 0.09, 0.09, 0.1: stretched out, the finger is 0.28 from the shoulder.
    env = make_env("reacher-three-easy")
    env.reset()
    physics = env.dm_env.physics
    with physics.reset_context():
        physics.data.qpos[:] = 0
    assert physics.named.data.geom_xpos["finger", "x"] == pytest.approx(0.28)
    on_target = {("geom_pos", "target"): [0.28, 0.0, 0.01]}
    assert reward_at("reacher-three-hard", model=on_target) == 1.0
    away = {("geom_pos", "target"): [0.0, 0.2, 0.01]}
    assert reward_at("reacher-three-hard", model=away) == 0.0


def test_long_floors_of_the_modified_models():
    def floor(name: str, geom: str):
        physics = make_env(name).dm_env.physics
        return physics.named.model.geom_size[geom, 0], physics.named.model.geom_pos[geom, 0]

    assert floor("walker-walk", "floor") == (250, 248)
    for name in ("walker-walk-backwards", "walker-run-backwards"):
        assert floor(name, "floor") == (500, 248)
    assert floor("cheetah-run", "ground") == (100, 98)
    for name in ("cheetah-run-backwards", "cheetah-run-front", "cheetah-run-back", "cheetah-jump"):
        assert floor(name, "ground") == (200, 98)
    assert floor("hopper-hop-backwards", "floor") == floor("hopper-hop", "floor")


# -- names and missing simulators ------------------------------------------------------------
def test_short_names_resolve_and_bad_names_list_close_matches():
    assert make_env("door-open").task.name == "mw-door-open"
    assert make_env("myo-hand-reach").task.name == "myo-reach"
    with pytest.raises(UnknownTaskError, match="mw-door-open"):
        make_env("door-opn")


@pytest.mark.skipif(importlib.util.find_spec("mani_skill2") is not None, reason="installed")
def test_maniskill_missing_says_how_to_install_it():
    with pytest.raises(SimulatorUnavailableError) as error:
        make_env("lift-cube")
    message = str(error.value)
    for needed in ("mani_skill2==0.5.3", "--no-deps", "numpy<1.24", "sapien==2.2.2", "Vulkan"):
        assert needed in message
    assert "download_asset PickSingleYCB-v0" in message


def test_missing_simulator_names_the_pip_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dm_control", None)  # makes `import dm_control` fail
    monkeypatch.delitem(sys.modules, "tdmpc2_data.envs.dmcontrol", raising=False)
    monkeypatch.delitem(sys.modules, "tdmpc2_data.envs.custom_dmc", raising=False)
    with pytest.raises(SimulatorUnavailableError, match=r"tdmpc2-toolkit\[dmc\]"):
        make_env("walker-walk")


# -- multitask -------------------------------------------------------------------------------
def test_multitask_env_pads_observations_and_masks_actions():
    env = MultitaskEnv(["walker-walk", "mw-door-open", "cartpole-balance"], seed=0)
    assert env.observation_space.shape == (39,) and env.action_space.shape == (6,)
    obs, info = env.reset(task="cartpole-balance")
    assert env.task_id == info["task_id"] == 2 and env.task.name == "cartpole-balance"
    assert obs.shape == (39,) and (obs[5:] == 0).all() and (obs[:5] != 0).any()
    np.testing.assert_array_equal(env.action_mask, [1, 0, 0, 0, 0, 0])
    # Padding entries of the action are ignored.
    env.reset(task=2, seed=1)
    a = env.step(np.array([0.5, 9, 9, 9, 9, 9], np.float32))
    env.reset(task=2, seed=1)
    b = env.step(np.array([0.5, 0, 0, 0, 0, 0], np.float32))
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]
    # Without a task, tasks are drawn: all of them come up, reproducibly from the seed.
    draws = [
        [fresh.reset()[1]["task_id"] for _ in range(30)]
        for fresh in (MultitaskEnv(env.tasks, seed=0), MultitaskEnv(env.tasks, seed=0))
    ]
    assert draws[0] == draws[1] and set(draws[0]) == {0, 1, 2}
    obs, _ = env.reset(options={"task": "door-open"})
    assert env.task_id == 1 and obs.shape == (39,)
    np.testing.assert_array_equal(env.action_mask, [1, 1, 1, 1, 0, 0])
    assert "success" in env.step(np.zeros(6))[4]
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        env.step(np.zeros(4))
    with pytest.raises(ValueError, match="is not in this env"):
        env.reset(task="hopper-hop")


def test_multitask_env_for_a_task_set_creates_envs_lazily():
    env = MultitaskEnv("mt80")
    assert env.tasks == TASK_SETS["mt80"]
    assert env.observation_space.shape == (39,) and env.action_space.shape == (6,)
    assert env._envs == {}
    env.reset(task="mw-hand-insert")
    assert list(env._envs) == [79]


# -- rendering -------------------------------------------------------------------------------
def test_rgb_array_rendering_in_a_subprocess():
    """MUJOCO_GL must be set before MuJoCo is imported, hence the subprocess."""
    script = textwrap.dedent(
        """
        import numpy as np
        from tdmpc2_data.envs import make_env
        for name in ["walker-walk", "mw-door-open", "myo-reach"]:
            env = make_env(name, render_mode="rgb_array")
            env.reset()
            frame = env.render()
            assert frame.shape == (384, 384, 3) and frame.dtype == np.uint8, frame.shape
            assert frame.std() > 5, name
            env.close()
        print("rendered")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if "rendered" not in result.stdout and ("EGL" in result.stderr or "OpenGL" in result.stderr):
        pytest.skip(f"no OpenGL backend here: {result.stderr.strip().splitlines()[-1]}")
    assert "rendered" in result.stdout, result.stderr
