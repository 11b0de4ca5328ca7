"""Merge single-task buffers (one agent/seed each) into one multitask shard dataset.

Shared by the torchrl, minari, npz and hdf5 converters: each opens its files as `Source`
objects (metadata read up front, episodes streamed), and `convert_sources` decides each
source's task, builds the task table, records provenance and writes through `ShardWriter`.

- Task of a source: ``tasks`` (one name for all sources, or one per source, in order), else
  the first of the source's own metadata candidates that names a registry task.
- Task table: ``task_set`` (e.g. mt80 keeps the published ids) or the sources' tasks in the
  order given. An existing dataset is appended to (its table must hold the tasks).
- Provenance: each source is a root ``sources`` entry (format, path, bytes, task, seed ...)
  and every episode records its id and its position in the source (``source_index``: the
  order the source yields its episodes, unless the source records one). A source is flushed to its own shards and then marked
  ``complete``: a rerun skips complete sources and redoes interrupted ones after deleting
  their shards; a source that fails midway has its shards deleted before the error.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tdmpc2_data.convert.episodes import CONVENTIONS, Episode
from tdmpc2_data.progress import progress_bar
from tdmpc2_data.tasks import (
    TASK_SETS,
    UnknownTaskError,
    get_task,
    resolve_task_name,
    resolve_tasks,
)
from tdmpc2_data.writer import ShardWriter, removed_if_left_empty


@dataclass
class Source:
    """One single-task buffer: where it is, what its metadata says, and its episodes.

    ``episodes()`` opens the file and yields `Episode` objects one at a time (streaming).
    ``task_candidates``: names from the source's metadata that may name its task.
    ``info``: extra provenance (seed, dataset id ...) for its root ``sources`` entry.
    """

    path: str
    format: str
    obs_dim: int
    action_dim: int
    episodes: Callable[[], Iterator[Episode]]
    num_episodes: int | None = None
    task_candidates: Sequence[str] = ()
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class SourceResult:
    """What converting one source did (``skipped``: an earlier run already converted it)."""

    path: str
    task: str
    episodes: int = 0
    transitions: int = 0
    empty: int = 0  # episodes without a transition (fewer than 2 observations), left out
    seconds: float = 0.0
    skipped: bool = False

    def __str__(self) -> str:
        if self.skipped:
            return f"{self.path} ({self.task}): already converted, skipped"
        empty = f", {self.empty} empty episodes left out" if self.empty else ""
        return (
            f"{self.path} ({self.task}): {self.episodes} episodes, {self.transitions} "
            f"transitions in {self.seconds:.1f} s{empty}"
        )


def path_bytes(path: str | os.PathLike) -> int:
    """Size of a file, or of all files under a directory (identifies a source on rerun)."""
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def convert_sources(
    sources: Sequence[Source],
    dst: str | os.PathLike,
    *,
    tasks: str | Sequence[str] | None = None,
    task_set: str | None = None,
    progress: bool = False,
    episodes_per_shard: int | None = None,
) -> list[SourceResult]:
    """Append the episodes of ``sources`` to the shard dataset ``dst`` (see module docstring)."""
    names = assign_tasks(sources, tasks)
    table = _task_table(sources, names, task_set)
    for source, name in zip(sources, names, strict=True):
        _check_dims(source, name)
    with removed_if_left_empty(dst):
        writer = ShardWriter(
            Path(dst),
            tasks=table,
            name=task_set if task_set in TASK_SETS else None,
            episodes_per_shard=episodes_per_shard,
        )
        results = [
            _convert_one(writer, s, n, progress) for s, n in zip(sources, names, strict=True)
        ]
    writer.close()
    return results


def convert_files(
    open_source: Callable[..., Source],
    paths: Sequence[str | os.PathLike],
    dst: str | os.PathLike,
    *,
    index_convention: str | None = None,
    **options: Any,
) -> list[SourceResult]:
    """Open each path with ``open_source`` (given ``index_convention`` when set: npz, hdf5,
    torchrl) and merge the sources into ``dst`` with ``convert_sources(**options)``."""
    if index_convention not in (None, *CONVENTIONS):
        raise ValueError(f"index_convention={index_convention!r}; expected one of {CONVENTIONS}")
    given = {} if index_convention is None else {"index_convention": index_convention}
    return convert_sources([open_source(p, **given) for p in paths], dst, **options)


def assign_tasks(sources: Sequence[Source], tasks: str | Sequence[str] | None) -> list[str]:
    """The registry task name of each source (see module docstring)."""
    given = [t for t in tasks.split(",") if t.strip()] if isinstance(tasks, str) else tasks or []
    given = [resolve_task_name(t) for t in given]
    if len(given) == 1:
        return given * len(sources)
    if given and len(given) != len(sources):
        raise ValueError(
            f"--tasks names {len(given)} tasks for {len(sources)} sources; give one task for "
            "all sources or one per source, in the order of the sources."
        )
    return given or [_task_from_metadata(s) for s in sources]


def _task_from_metadata(source: Source) -> str:
    for candidate in source.task_candidates:
        try:
            return resolve_task_name(candidate)
        except UnknownTaskError:
            continue
    said = f" (its metadata says {', '.join(map(repr, source.task_candidates))})"
    raise ValueError(
        f"{source.path}: cannot tell which task this {source.format} source holds"
        f"{said if source.task_candidates else ''}; pass --tasks (one for all sources or one "
        "per source)."
    )


def _task_table(sources: Sequence[Source], names: list[str], task_set: str | None) -> list[str]:
    if task_set is None:
        return list(dict.fromkeys(names))
    table = resolve_tasks(task_set)
    for source, name in zip(sources, names, strict=True):
        if name not in table:
            raise ValueError(
                f"{source.path}: its task {name!r} is not in --task-set {task_set} "
                f"({len(table)} tasks)."
            )
    return table


def _check_dims(source: Source, name: str) -> None:
    """Refuse a source whose widths cannot be the task's before anything is written."""
    task = get_task(name)
    for what, have, real in (
        ("obs", source.obs_dim, task.obs_dim),
        ("action", source.action_dim, task.action_dim),
    ):
        if have < real:
            raise ValueError(
                f"{source.path}: {what} has {have} dims, but task {name!r} has {real}; is "
                "the task assignment (--tasks or the source's metadata) right?"
            )


def _same_file(entry: dict[str, Any], info: dict[str, Any]) -> bool:
    return all(entry.get(k) == info.get(k) for k in ("format", "path", "bytes", "task", "origin"))


def _convert_one(writer: ShardWriter, source: Source, task: str, progress: bool) -> SourceResult:
    start = time.perf_counter()
    result = SourceResult(source.path, task)
    info = {
        "format": source.format,
        "path": source.path,
        "bytes": path_bytes(source.path) if os.path.exists(source.path) else None,
        "task": task,
        **source.info,
    }
    earlier = [s for s in writer.sources() if _same_file(s, info)]
    if any(s.get("complete") for s in earlier):
        result.skipped = True
        return result
    for old in earlier:  # shards of an interrupted run
        writer.discard_source(old["id"])
    entry = {**info, "complete": False}
    source_id = writer.source_id(entry)
    bar = progress_bar(
        total=source.num_episodes,
        unit="ep",
        desc=Path(source.path).name,
        enabled=progress,
    )
    try:
        for i, episode in enumerate(source.episodes()):
            bar.update()
            if episode is None:
                result.empty += 1
                continue
            try:
                index = i if episode.index is None else episode.index
                writer.add_episode(task, episode.obs, episode.action, episode.reward,
                                   episode.success, entry, None if index < 0 else index)  # fmt: skip
            except ValueError as exc:  # the writer's checks name the dataset, not the source
                raise ValueError(f"{source.path} episode {i}: {exc}") from None
            result.episodes += 1
            result.transitions += episode.action.shape[0]
        writer.flush()
    except BaseException:
        writer.discard_source(source_id)
        raise
    finally:
        bar.close()
    writer.update_source(
        source_id, complete=True, episodes=result.episodes, transitions=result.transitions
    )
    result.seconds = time.perf_counter() - start
    return result
