"""Convert LeRobotDatasets (local directories) into shard datasets: ``convert SRC OUT --from lerobot``.

A source is the root of a LeRobotDataset (the directory holding ``meta/info.json``); each of
its tasks becomes one `Source`. A dataset whose task strings are not task names needs
``tasks``: one name for all sources or one per source. Frames, tasks and widths:
docs/data.md#source-layouts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tdmpc2_data.convert import import_library
from tdmpc2_data.convert.episodes import Episode, align, squeeze_last
from tdmpc2_data.convert.merge import Source, SourceResult, convert_sources
from tdmpc2_data.tasks import UnknownTaskError, get_task, resolve_task_name, resolve_tasks

FORMAT = "lerobot"
#: The toolkit's own record next to LeRobot's metadata, written by ``export --to lerobot``:
#: the source dataset and each task's real widths.
SIDECAR = "meta/tdmpc2.json"
REQUIRED = ("observation.state", "action", "next.reward")
#: These datasets hold no video; naming a decoder spares LeRobot probing torchcodec (and its
#: page-long warning where torchcodec cannot load).
NO_VIDEO_BACKEND = "pyav"


#: How to get LeRobot (its 0.6 releases need Python >= 3.12 and pins of their own: README).
INSTALL = "install it with `pip install 'tdmpc2-toolkit[lerobot]'` (README: LeRobot)"


def lerobot_dataset_class() -> Any:
    """LeRobot's ``LeRobotDataset`` (a clear error when LeRobot is not installed)."""
    return import_library("lerobot.datasets.lerobot_dataset", INSTALL).LeRobotDataset


def load(path: str | os.PathLike) -> Any:
    """The ``LeRobotDataset`` at the local root ``path``."""
    root = Path(path)
    if not (root / "meta" / "info.json").is_file():
        raise ValueError(f"{root}: not a LeRobotDataset directory (no meta/info.json).")
    LeRobotDataset = lerobot_dataset_class()
    try:
        return LeRobotDataset(
            f"local/{root.resolve().name}", root=root, video_backend=NO_VIDEO_BACKEND
        )
    except Exception as exc:  # LeRobot's own errors (version, missing files) name no path
        raise ValueError(f"{root}: LeRobot cannot open it ({type(exc).__name__}: {exc})") from exc


def _registry_name(name: str) -> str | None:
    try:
        return resolve_task_name(name)
    except UnknownTaskError:
        return None


def _real_dims(root: Path, task: str, obs_width: int, action_width: int) -> tuple[int, int]:
    """(obs_dim, action_dim) of ``task``: from the export's record, else the registry, else
    the features' widths."""
    sidecar = root / SIDECAR
    if sidecar.is_file():
        for t in json.loads(sidecar.read_text()).get("tasks", []):
            if t.get("name") == task:
                return int(t["obs_dim"]), int(t["action_dim"])
    name = _registry_name(task)
    if name is not None:
        spec = get_task(name)
        if spec.obs_dim <= obs_width and spec.action_dim <= action_width:
            return spec.obs_dim, spec.action_dim
    return obs_width, action_width


def open_sources(path: str | os.PathLike) -> list[Source]:
    """One `Source` per task of the LeRobotDataset at ``path`` (metadata read now)."""
    where = str(path)
    dataset = load(path)
    features = dataset.meta.features
    missing = [k for k in REQUIRED if k not in features]
    if missing:
        raise ValueError(
            f"{where}: no {', '.join(missing)} feature (has {', '.join(features)}); TD-MPC2 "
            "data needs observation.state, action and next.reward."
        )
    obs_width = int(np.prod(features["observation.state"]["shape"]))
    action_width = int(np.prod(features["action"]["shape"]))
    by_task: dict[str, list[tuple[int, int, int]]] = {}
    for row in dataset.meta.episodes:
        tasks = list(row["tasks"])
        if len(tasks) != 1:
            raise ValueError(
                f"{where} episode {row['episode_index']}: has tasks {tasks}; TD-MPC2 episodes "
                "have exactly one task."
            )
        span = (
            int(row["episode_index"]),
            int(row["dataset_from_index"]),
            int(row["dataset_to_index"]),
        )
        by_task.setdefault(tasks[0], []).append(span)
    sources = []
    for task, spans in by_task.items():
        obs_dim, action_dim = _real_dims(Path(path), task, obs_width, action_width)
        sources.append(
            Source(
                path=where,
                format=FORMAT,
                obs_dim=obs_dim,
                action_dim=action_dim,
                episodes=_episode_reader(dataset, where, spans, obs_dim, action_dim),
                num_episodes=len(spans),
                task_candidates=[task],
                info={"lerobot_task": task, "repo_id": dataset.meta.repo_id},
            )
        )
    return sources


def open_source(path: str | os.PathLike, task: str | None = None) -> Source:
    """The episodes of one task (a LeRobot task string; may be omitted when there is one)."""
    found = open_sources(path)
    names = [s.info["lerobot_task"] for s in found]
    if task is None and len(found) == 1:
        return found[0]
    for source in found:
        if task is not None and task in (source.info["lerobot_task"], _registry_name(task)):
            return source
    raise ValueError(
        f"{path}: holds tasks {names}; name one (task=) or convert them all with "
        "convert(..., source_format='lerobot')."
    )


def _episode_reader(
    dataset: Any, where: str, spans: list[tuple[int, int, int]], obs_dim: int, action_dim: int
):
    def episodes() -> Iterator[Episode | None]:
        frames = dataset.hf_dataset.with_format("numpy")
        has_next = "next.observation.state" in frames.column_names
        has_success = "next.success" in frames.column_names
        for index, start, stop in spans:
            at = f"{where} episode {index}"
            rows = frames[start:stop]
            obs = _cut(at, "observation.state", rows["observation.state"], obs_dim)
            action = _cut(at, "action", rows["action"], action_dim)
            next_obs = (
                _cut(at, "next.observation.state", rows["next.observation.state"], obs_dim)
                if has_next
                else None
            )
            reward = squeeze_last(np.asarray(rows["next.reward"], np.float32))
            convention = None if has_next else "shards"
            episode = align(at, obs, action, reward, convention, next_obs)
            if episode is not None and has_success:
                success = squeeze_last(np.asarray(rows["next.success"])).astype(bool)
                episode = episode._replace(success=success[: episode.action.shape[0]])
            yield episode

    return episodes


def _cut(where: str, name: str, x: np.ndarray, width: int) -> np.ndarray:
    """[T, width] float32 of ``x``, refusing to cut off padding that is not zero."""
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    if x.shape[1] > width and np.any(x[:, width:]):
        raise ValueError(
            f"{where}: {name} has {x.shape[1]} dims and non-zero values past the task's "
            f"{width}; is the task assignment (--tasks) right?"
        )
    return x[:, :width]


def convert(
    sources: Sequence[str | os.PathLike],
    dst: str | os.PathLike,
    *,
    tasks: str | Sequence[str] | None = None,
    **options: Any,
) -> list[SourceResult]:
    """Append the episodes of the LeRobotDatasets ``sources`` to ``dst`` (see the module
    docstring for ``tasks``); other options as ``merge.convert_sources``."""
    found = [s for path in sources for s in open_sources(path)]
    names = [_registry_name(s.info["lerobot_task"]) for s in found]
    if all(names):
        if tasks:
            spec = tasks if isinstance(tasks, str) else ",".join(tasks)
            keep = set(resolve_tasks(spec))
            picked = [(s, n) for s, n in zip(found, names, strict=True) if n in keep]
            if not picked:
                raise ValueError(
                    f"No episodes of tasks {sorted(keep)} in {', '.join(map(str, sources))} "
                    f"(they hold {sorted(set(names))})."
                )
            found, names = [s for s, _ in picked], [n for _, n in picked]
        return convert_sources(found, dst, tasks=names, **options)
    return convert_sources(found, dst, tasks=tasks, **options)
