"""Roll out a policy in real simulators and append the episodes to a shard dataset.

Used by `tdmpc2-data collect` (random data for quickstarts and tests, or rollouts of a
trained agent). Policies other than ``random`` come from the ``tdmpc2_data.policies``
entry-point group, so this package never imports the model package directly.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np

from tdmpc2_data.envs import make_env
from tdmpc2_data.episode import rollout
from tdmpc2_data.progress import progress_bar
from tdmpc2_data.reader import open_dataset
from tdmpc2_data.tasks import get_task, resolve_tasks
from tdmpc2_data.writer import ShardWriter, compact, finalize, root_lock

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


def episode_seed(seed: int, task: str, episode: int) -> int:
    """Reset seed of a collection's ``episode``-th episode of ``task``: a function of the
    collection seed, the task and the episode number only, so that the data of a task does
    not depend on which other tasks were collected with it, and a resumed collection draws
    exactly the episodes an uninterrupted one would have."""
    return int(
        np.random.SeedSequence([seed, zlib.crc32(task.encode()), episode]).generate_state(1)[0]
    )


def _collected(root: Path, source_id: int) -> dict[str, int]:
    """Episodes per task name that ``root`` already holds from the source ``source_id``
    (after indexing shards that a killed run wrote but did not index)."""
    finalize(root)
    counts: dict[str, int] = {}
    with root_lock(root):  # no other collection's compaction deletes a shard read here
        ds = open_dataset(root)
        for i in range(len(ds.shards)):
            if not ds.has_field(i, "source"):
                continue
            data = ds.read_shard(i, fields=("task", "source"))
            for tid in data["task"][data["source"] == source_id]:
                counts[ds.tasks[tid]] = counts.get(ds.tasks[tid], 0) + 1
    return counts


def collect(
    out_dir: str | Path,
    tasks: Sequence[str],
    episodes: int,
    policy: str | Policy = "random",
    seed: int = 0,
    task_set: str | None = None,
    progress: bool = True,
) -> Path:
    """Collect ``episodes`` episodes of each task into the dataset at ``out_dir``.

    A collection is identified by its policy and seed (its ``sources`` entry): ``episodes``
    is how many episodes per task it should hold. Each finished episode is written at once
    (a crash or Ctrl-C loses at most the episode in progress), and rerunning the same
    collection continues where it stopped: episodes already there are never drawn again.
    More data of the same tasks needs another ``seed``. The task table of a new dataset is
    ``task_set`` (e.g. ``mt80``, keeping the published ids) or the given tasks; an existing
    dataset keeps its own table.
    """
    if not str(out_dir).strip():
        raise ValueError("collect: the dataset directory is an empty string; give a path.")
    if episodes < 1:
        raise ValueError(f"collect: episodes={episodes}; must be >= 1 (episodes per task).")
    names = resolve_tasks(list(tasks))
    table = resolve_tasks(task_set) if task_set else names
    loaded = load_policy(policy, seed) if isinstance(policy, str) and policy != "random" else policy
    source = {
        "description": f"collect policy={policy if isinstance(policy, str) else 'custom'}",
        "seed": seed,
    }
    envs = [make_env(name, seed=seed) for name in names]  # fail before creating the dataset
    root = Path(out_dir)
    with ShardWriter(root, tasks=table, sources=[source]) as writer:
        done = _collected(root, writer.source_id(source))
        for env in envs:
            name = env.task.name
            have = min(done.get(name, 0), episodes)
            bar = progress_bar(range(have, episodes), desc=f"collect {name}", unit="ep",
                               total=episodes, initial=have, enabled=progress)  # fmt: skip
            for episode in bar:
                ep_seed = episode_seed(seed, name, episode)
                act = random_policy(ep_seed) if loaded == "random" else loaded
                data = rollout(env, lambda o, t0, name=name, act=act: act(o, name), seed=ep_seed)
                writer.add_episode(name, data["obs"], data["action"], data["reward"],
                                   data.get("success"), 0, source_index=episode)  # fmt: skip
                writer.flush()
            env.close()
    compact(root)
    return root
