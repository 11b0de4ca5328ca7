"""Simulator throughput: ``make_env`` next to the bare simulator, one task per domain.

Prints creation time and agent steps per second (random actions, resets at episode end) for
``tdmpc2_data.envs.make_env`` and, as the baseline in the same run, the simulator used
directly with the same number of simulator steps (dm_control with its action-scale wrapper,
Meta-World's goal-observable class, MyoSuite through ``gymnasium.make``). The difference is
the cost of the wrapper (clipping, repeat, float32 flattening, episode bookkeeping).

    python bench/envs.py [--steps 2000] [--rounds 3]

Each number is the best of ``--rounds`` alternating runs (the machine may be shared), after
one untimed creation of each env so that file caches are warm for both.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from tdmpc2_data.envs import make_env
from tdmpc2_data.tasks import get_task

TASKS = ["walker-walk", "dog-run", "mw-door-open", "myo-reach"]


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def bench_ours(name: str, steps: int) -> tuple[float, float]:
    env, create_s = _timed(lambda: make_env(name, seed=0))
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps, env.task.action_dim)).astype(np.float32)
    env.reset()

    def run() -> None:
        for action in actions:
            if env.step(action)[3]:
                env.reset()

    _, run_s = _timed(run)
    env.close()
    return create_s, steps / run_s


def _raw_dmcontrol(name: str):
    from dm_control import suite
    from dm_control.suite.wrappers import action_scale

    domain, task = get_task(name).sim_id.split("/")
    env = action_scale.Wrapper(suite.load(domain, task, task_kwargs={"random": 0}), -1.0, 1.0)
    env.reset()

    def step(action):  # dm_control ends episodes itself (1000 sim steps)
        if env.step(action).last():
            env.reset()

    return step


def _raw_metaworld(name: str):
    import metaworld

    cls = metaworld.ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{get_task(name).sim_id}-goal-observable"]
    env = cls(seed=0)
    env.reset()

    def step(action):
        if env.step(action)[3]:  # truncated at Meta-World's 500 steps
            env.reset()

    return step


def _raw_myosuite(name: str):
    import gymnasium as gym
    import myosuite  # noqa: F401

    env = gym.make(get_task(name).sim_id)
    env.reset(seed=0)

    def step(action):
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()

    return step


_RAW = {"dmcontrol": _raw_dmcontrol, "metaworld": _raw_metaworld, "myosuite": _raw_myosuite}


def bench_raw(name: str, steps: int) -> tuple[float, float]:
    task = get_task(name)
    step, create_s = _timed(lambda: _RAW[task.domain](name))
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps, task.action_dim)).astype(np.float32)

    def run() -> None:
        for action in actions:
            for _ in range(task.action_repeat):
                step(action)

    _, run_s = _timed(run)
    return create_s, steps / run_s


def _best(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return min(c for c, _ in runs), max(r for _, r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="agent steps per task")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs; best is kept")
    args = parser.parse_args()
    header = (
        f"{'task':<14} {'create s':>9} {'raw create s':>13} {'agent steps/s':>14} "
        f"{'raw steps/s':>12} {'overhead':>9}"
    )
    print(header)
    print("-" * len(header))
    for name in TASKS:
        steps = args.steps // 4 if name == "dog-run" else args.steps
        bench_ours(name, 1), bench_raw(name, 1)  # warm-up: imports and file caches
        ours, raw = [], []
        for _ in range(args.rounds):
            ours.append(bench_ours(name, steps))
            raw.append(bench_raw(name, steps))
        (create, rate), (raw_create, raw_rate) = _best(ours), _best(raw)
        overhead = raw_rate / rate - 1
        print(
            f"{name:<14} {create:>9.3f} {raw_create:>13.3f} {rate:>14.0f} {raw_rate:>12.0f} "
            f"{overhead:>8.0%}"
        )
    print("agent step = action_repeat simulator steps (2 for DMControl/Meta-World, 1 MyoSuite)")


if __name__ == "__main__":
    main()
