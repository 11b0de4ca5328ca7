"""Roll out a policy in real simulators and append the episodes to a shard dataset.

Used by `tdmpc2-data collect` (random data for quickstarts and tests, or rollouts of a
trained agent). Policies other than ``random`` come from the ``tdmpc2_data.policies``
entry-point group, so this package never imports the model package directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from tdmpc2_data.envs import make_env
from tdmpc2_data.format import ShardWriter
from tdmpc2_data.tasks import get_task, resolve_tasks

#: A policy maps (observation [obs_dim], task name) to an action in [-1, 1]^action_dim.
Policy = Callable[[np.ndarray, str], np.ndarray]


def random_policy(seed: int) -> Policy:
    """Uniform random actions, as in the seeding phase of the paper's agents."""
    rng = np.random.default_rng(seed)

    def act(obs: np.ndarray, task: str) -> np.ndarray:
        return rng.uniform(-1, 1, get_task(task).action_dim).astype(np.float32)

    return act


def load_policy(spec: str, seed: int = 0) -> Policy:
    """``random`` or a checkpoint path/repo, loaded by a registered policy loader."""
    if spec == "random":
        return random_policy(seed)
    loaders = entry_points(group="tdmpc2_data.policies")
    if not loaders:
        raise ValueError(
            f"Policy {spec!r} is not 'random' and no checkpoint loader is installed "
            "(install tdmpc2-toolkit with its model package)."
        )
    return next(iter(loaders)).load()(spec)


#: An actor maps (observation, first step of the episode?) to an action.
Actor = Callable[[np.ndarray, bool], np.ndarray]


def rollout(
    env: Any,
    act: Actor,
    seed: int | None = None,
    on_step: Callable[[], None] | None = None,
    render: bool = False,
) -> dict[str, Any]:
    """One full episode of ``env`` (``seed`` reseeds it; None continues its random stream).

    ``on_step`` runs after every environment step (an online learner updates there).
    Returns obs [T+1, d], action [T, a], reward [T], success [T] (tasks with a success
    flag), the return, and the frames if ``render``.
    """
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards, successes, frames = [obs], [], [], [], []
    done = False
    while not done:
        action = np.asarray(act(obs, len(actions) == 0), dtype=np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        successes.append(bool(info.get("success", False)))
        done = terminated or truncated
        if render:
            frames.append(env.render())
        if on_step is not None:
            on_step()
    episode = {
        "obs": np.stack(observations).astype(np.float32),
        "action": np.stack(actions),
        "reward": np.asarray(rewards, dtype=np.float32),
        "return": float(np.sum(rewards)),
        "frames": frames,
    }
    if env.task.has_success:
        episode["success"] = np.asarray(successes)
    return episode


def collect(
    out_dir: str | Path,
    tasks: Sequence[str],
    episodes: int,
    policy: str | Policy = "random",
    seed: int = 0,
    task_set: str | None = None,
) -> Path:
    """Append ``episodes`` episodes of each task to the dataset at ``out_dir``.

    The task table of a new dataset is ``task_set`` (e.g. ``mt80``, keeping the published
    ids) or the given tasks; an existing dataset keeps its own table.
    """
    names = resolve_tasks(list(tasks))
    table = resolve_tasks(task_set) if task_set else names
    act = load_policy(policy, seed) if isinstance(policy, str) else policy
    source = {
        "description": f"collect policy={policy if isinstance(policy, str) else 'custom'}",
        "seed": seed,
    }
    envs = [make_env(name, seed=seed) for name in names]  # fail before creating the dataset
    with ShardWriter(out_dir, tasks=table, sources=[source]) as writer:
        for task_index, env in enumerate(envs):
            name = env.task.name
            for episode in tqdm(range(episodes), desc=f"collect {name}", unit="ep"):
                data = rollout(
                    env,
                    lambda o, t0, name=name: act(o, name),
                    seed=seed + 1000 * task_index + episode,
                )
                writer.add_episode(
                    name, data["obs"], data["action"], data["reward"], data.get("success"), 0
                )
            env.close()
    return Path(out_dir)
