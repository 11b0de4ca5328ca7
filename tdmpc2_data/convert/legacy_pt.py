"""Convert the original TD-MPC2's published data chunks (``mt80/chunk_*.pt``, ``mt30/chunk_*.pt``).

A chunk is a pickled TensorDict of batch [episodes, T+1] (obs, action, reward, task) whose
step 0 of action/reward is a filler (NaN or 0): ``action[:, 1:]`` and ``reward[:, 1:]`` are
the transitions obs[t] -> obs[t+1]. Task ids are the published mt80/mt30 ids.

Memory stays ~ one shard buffer, not one chunk: the chunk is memory-mapped
(``safe_pickle``), read in slices of consecutive same-task episodes, and its pages are
released after each slice. Resumable: each chunk becomes a root ``sources`` entry
(file name, size, tasks) marked ``complete`` once its shards are on disk; a rerun skips
complete chunks and redoes interrupted ones after deleting their partial shards.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tdmpc2_data.convert.safe_pickle import TorchZip, as_tensordict
from tdmpc2_data.progress import progress_bar
from tdmpc2_data.tasks import TASK_SETS, resolve_tasks
from tdmpc2_data.writer import ShardWriter, removed_if_left_empty

FORMAT = "legacy-pt"
#: (T+1, obs width) of the published chunks -> their task set.
KNOWN_LAYOUTS = {(101, 39): "mt80", (501, 24): "mt30"}
#: Uncompressed bytes of legacy input handled per slice.
SLICE_BYTES = 32 << 20


@dataclass
class ChunkResult:
    """What converting one chunk did (``skipped``: it was already converted)."""

    path: str
    task_set: str
    episodes: int = 0
    transitions: int = 0
    input_bytes: int = 0
    seconds: float = 0.0
    skipped: bool = False
    left_out: str = ""  # "N episodes of TASKS" outside the task set (``drop_other_tasks``)

    def __str__(self) -> str:
        if self.skipped:
            return f"{self.path}: already converted, skipped"
        rate = self.input_bytes / max(self.seconds, 1e-9) / 1e6
        dropped = f"; left out {self.left_out} (not in {self.task_set})" if self.left_out else ""
        return (
            f"{self.path}: {self.episodes} episodes, {self.transitions} transitions "
            f"({self.task_set}) in {self.seconds:.1f} s, {rate:.0f} MB/s{dropped}"
        )


def convert(
    sources: Sequence[str | os.PathLike],
    dst: str | os.PathLike,
    *,
    tasks: str | Sequence[str] | None = None,
    task_set: str | None = None,
    progress: bool = False,
    drop_other_tasks: bool = False,
) -> list[ChunkResult]:
    """Convert legacy chunks into the shard dataset ``dst``, one chunk at a time."""
    with removed_if_left_empty(dst):
        return [
            convert_chunk(
                p,
                dst,
                tasks=tasks,
                task_set=task_set,
                progress=progress,
                drop_other_tasks=drop_other_tasks,
            )  # fmt: skip
            for p in sources
        ]


def convert_chunk(
    path: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    tasks: str | Sequence[str] | None = None,
    task_set: str | None = None,
    progress: bool = False,
    episodes_per_shard: int | None = None,
    drop_other_tasks: bool = False,
) -> ChunkResult:
    """Convert one chunk into ``dst`` (created with the chunk's task set as its task table).

    ``task_set``: "mt80" or "mt30" (default: inferred, 101 steps x 39 dims -> mt80,
    501 x 24 -> mt30). ``tasks``: keep only these tasks (ids stay the task set's).
    Episodes of tasks outside ``task_set`` (an mt80 chunk into mt30) are refused before
    anything is written, or, with ``drop_other_tasks``, left out and counted in the result.
    """
    path = Path(path)
    start = time.perf_counter()
    with TorchZip(path) as archive:
        td = as_tensordict(archive.load(), str(path))
        obs, action, reward, task = _fields(td.fields, path)
        episodes, steps = task.shape
        first_task = _first_steps(task, archive)
        task_set = task_set or _infer_task_set(path, steps, obs.shape[2])
        if task_set not in TASK_SETS:
            raise ValueError(f"--task-set {task_set!r}: expected one of {', '.join(TASK_SETS)}.")
        table = TASK_SETS[task_set]
        wanted = set(resolve_tasks(tasks) if tasks is not None else table)
        unknown = wanted - set(table)
        if unknown:
            raise ValueError(f"--tasks {sorted(unknown)} are not in task set {task_set}.")
        result = ChunkResult(str(path), task_set)
        result.left_out = _outside_table(first_task, (steps, obs.shape[2]), task_set)
        if result.left_out and not drop_other_tasks:
            raise ValueError(
                f"{path}: {result.left_out} not in --task-set {task_set}; pass "
                "--drop-other-tasks to convert without them, or a task set that holds them "
                "(nothing was written)."
            )
        with ShardWriter(
            dst, tasks=table, name=task_set, episodes_per_shard=episodes_per_shard
        ) as writer:
            todo = _remaining_tasks(writer, path, wanted, table)
            if not todo:
                result.skipped = True
                return result
            info = {"format": FORMAT, "file": path.name, "bytes": path.stat().st_size}
            if todo != set(table):
                info["tasks"] = sorted(todo, key=table.index)
            for old in writer.sources():  # partial shards of an interrupted run
                if old.get("file") == path.name and not old.get("complete"):
                    writer.discard_source(old["id"])
            source = {**info, "complete": False}
            source_id = writer.source_id(source)
            ids = [table.index(n) for n in todo]
            per_episode = obs[0].nbytes + action[0].nbytes + reward[0].nbytes + task[0].nbytes
            bar = progress_bar(total=episodes, unit="episode", desc=path.name, enabled=progress)
            try:
                for lo, hi, tid in _runs(first_task, max(1, SLICE_BYTES // per_episode)):
                    if tid in ids:
                        n = _add_slice(
                            writer, path, table, tid, source, obs, action, reward, task, lo, hi
                        )
                        result.episodes += n
                        result.transitions += n * (steps - 1)
                    archive.drop_pages()
                    bar.update(hi - lo)
                writer.flush()
            except BaseException:  # leave no part of this chunk behind (a kill is undone on rerun)
                writer.discard_buffer()
                writer.discard_source(source_id)
                raise
            finally:
                bar.close()
            writer.update_source(source_id, complete=True, episodes=result.episodes)
        result.input_bytes = path.stat().st_size
        del td, obs, action, reward, task
    result.seconds = time.perf_counter() - start
    return result


def _fields(fields: dict, path: Path) -> tuple[np.ndarray, ...]:
    """obs [N, T+1, D], action [N, T+1, A], reward [N, T+1], task [N, T+1] of a chunk, checked."""
    missing = {"obs", "action", "reward", "task"} - set(fields)
    if missing:
        raise ValueError(f"{path}: chunk lacks {sorted(missing)} (has {sorted(fields)})")
    obs, action = fields["obs"], fields["action"]
    reward, task = (_squeeze_last(fields[k]) for k in ("reward", "task"))
    if obs.ndim != 3 or action.ndim != 3 or reward.ndim != 2 or task.ndim != 2:
        raise ValueError(
            f"{path}: expected obs [N, T+1, D], action [N, T+1, A], reward/task [N, T+1]; "
            f"got {obs.shape}, {action.shape}, {reward.shape}, {task.shape}"
        )
    if not obs.shape[:2] == action.shape[:2] == reward.shape == task.shape:
        raise ValueError(f"{path}: fields disagree on [episodes, T+1]")
    if task.shape[1] < 2:
        raise ValueError(f"{path}: episodes of {task.shape[1]} step(s) hold no transition")
    return obs, action, reward, task


def _first_steps(task: np.ndarray, archive: TorchZip) -> np.ndarray:
    """``task[:, 0]``, the episodes' task ids, read in slices whose pages are released (a
    column of a [N, T+1] field touches every page of it: 400 MB in a real chunk)."""
    first = np.empty(task.shape[0], task.dtype)
    step = max(1, SLICE_BYTES // max(1, task[0].nbytes))
    for lo in range(0, len(first), step):
        first[lo : lo + step] = task[lo : lo + step, 0]
        archive.drop_pages()
    return first


def _squeeze_last(x: np.ndarray) -> np.ndarray:
    return x[..., 0] if x.ndim == 3 and x.shape[2] == 1 else x


def _infer_task_set(path: Path, steps: int, width: int) -> str:
    try:
        return KNOWN_LAYOUTS[(steps, width)]
    except KeyError:
        raise ValueError(
            f"{path}: episodes of {steps} steps with {width}-dim obs match neither mt80 "
            "(101 x 39) nor mt30 (501 x 24); pass --task-set."
        ) from None


def _outside_table(first_task: np.ndarray, layout: tuple[int, int], task_set: str) -> str:
    """ "N episodes of NAME (n), ..." for the chunk's episodes whose task id is outside
    ``task_set``, named by the set of the chunk's ``layout`` (T+1, obs width) when it is a
    published one; "" when there are none."""
    ids, counts = np.unique(first_task, return_counts=True)
    size = len(TASK_SETS[task_set])
    outside = [(int(i), int(n)) for i, n in zip(ids, counts, strict=True) if not 0 <= i < size]
    if not outside:
        return ""
    names = TASK_SETS.get(KNOWN_LAYOUTS.get(layout, ""), [])
    parts = ", ".join(
        f"{names[i] if 0 <= i < len(names) else f'task id {i}'} ({n})" for i, n in outside
    )
    return f"{sum(n for _, n in outside)} episodes of {parts}"


def converted_chunks(sources: list[dict[str, Any]], table: list[str]) -> dict[tuple[str, int], set]:
    """(chunk file name, size in bytes) -> tasks that complete conversions recorded in a
    dataset's ``sources`` wrote; the size tells versions of a chunk apart."""
    done: dict[tuple[str, int], set] = {}
    for s in sources:
        if s.get("format") == FORMAT and s.get("complete"):
            done.setdefault((s["file"], s["bytes"]), set()).update(s.get("tasks", table))
    return done


def _remaining_tasks(writer: ShardWriter, path: Path, wanted: set[str], table: list[str]) -> set:
    """Tasks of ``wanted`` that no complete earlier conversion of this file already wrote."""
    done = converted_chunks(writer.sources(), table)
    return wanted - done.get((path.name, path.stat().st_size), set())


def _runs(first_task: np.ndarray, limit: int):
    """(start, stop, task id) of runs of consecutive same-task episodes, at most ``limit`` long."""
    edges = np.flatnonzero(np.diff(first_task)) + 1
    bounds = np.concatenate([[0], edges, [first_task.shape[0]]])
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        for s in range(lo, hi, limit):
            yield int(s), int(min(s + limit, hi)), int(first_task[lo])


def _add_slice(writer, path, table, tid, source, obs, action, reward, task, lo, hi) -> int:
    """Check one same-task slice of the chunk and hand it to the writer without the filler."""
    name = table[tid] if 0 <= tid < len(table) else None
    if name is None:
        raise ValueError(f"{path}: task id {tid} (episodes {lo}-{hi}) is outside the task set")
    if (task[lo:hi] != tid).any():
        raise ValueError(f"{path}: task id changes inside an episode in {lo}-{hi}")
    info = writer.task_info[writer.task_id(name)]
    d, a = info["obs_dim"], info["action_dim"]
    o = obs[lo:hi]
    act, rew = action[lo:hi, 1:], reward[lo:hi, 1:]  # drop the filler step
    for field, x, real in (("obs", o, d), ("action", act, a)):
        if x[..., real:].any():
            raise ValueError(
                f"{path}: {field}[{lo}:{hi}, ..., {real}:] is not zero, but task {name!r} has "
                f"{field} dim {real}; the chunk is not the published layout."
            )
    # the chunk is the source; the episode's row in it is its position (the buffer's order)
    writer.add_episodes(name, o[..., :d], act[..., :a], rew, source=source, source_index=lo)
    return hi - lo
