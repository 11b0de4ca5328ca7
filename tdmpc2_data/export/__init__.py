"""Export shard datasets into other libraries' formats: ``tdmpc2-data export DATA OUT --to X``.

One module per format writes a selection of episodes with the library's own writing API;
`export` does what they share (selection at real widths, refusing a non-empty ``out``
unless ``overwrite``, atomic rename into place, one progress bar). Register a new format with
one line in ``EXPORTERS``; its module has ``require()`` and ``write(ds, selection, root, bar,
**options) -> list[str]``. Details: docs/design.md#exports.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

from tdmpc2_data.atomic import write_dir_atomic
from tdmpc2_data.convert.episodes import Episode
from tdmpc2_data.convert.from_shards import read_episodes
from tdmpc2_data.curate import DatasetView
from tdmpc2_data.progress import progress_bar
from tdmpc2_data.reader import Dataset, open_dataset
from tdmpc2_data.tasks import resolve_tasks

#: target format -> module implementing ``write``.
EXPORTERS: dict[str, str] = {
    "lerobot": "tdmpc2_data.export.to_lerobot",
    "minari": "tdmpc2_data.export.to_minari",
}


@dataclass(frozen=True)
class TaskSelection:
    """The selected episodes of one task: its real widths and (shard, episode range) runs."""

    name: str
    obs_dim: int
    action_dim: int
    runs: list[tuple[int, range]]

    @property
    def num_episodes(self) -> int:
        return sum(len(r) for _, r in self.runs)


def select_episodes(
    ds: Dataset,
    tasks: str | Iterable[str] | None = None,
    episodes: Iterable[tuple[int, int]] | None = None,
) -> list[TaskSelection]:
    """The episodes of ``ds`` to export, per task in the dataset's task order.

    ``tasks``: task names or task sets (a comma list or an iterable; default all);
    ``episodes``: (shard index, episode index in that shard) pairs (default all). Both given:
    the episodes of those tasks among the pairs. Within a task, episodes keep storage order.
    """
    keep = None
    if tasks is not None:
        spec = tasks if isinstance(tasks, str) else ",".join(tasks)
        keep = {ds.tasks[ds.task_id(name)] for name in resolve_tasks(spec)}
    chosen = None if episodes is None else _pairs_by_shard(ds, episodes)
    selection = []
    for tid, info in enumerate(ds.task_info):
        if keep is not None and info["name"] not in keep:
            continue
        runs = []
        for shard, run in ds.task_episodes(tid):
            if chosen is None:
                runs.append((shard, run))
            else:
                picked = sorted(e for e in chosen.get(shard, ()) if e in run)
                runs += [(shard, r) for r in _ranges(picked)]
        if runs:
            selection.append(TaskSelection(info["name"], info["obs_dim"], info["action_dim"], runs))
    if not selection:
        what = f"tasks {sorted(keep)}" if keep is not None else "all tasks"
        pairs = " among the given episodes" if chosen is not None else ""
        raise ValueError(f"{ds.location}: no episodes of {what}{pairs} to export.")
    return selection


def _pairs_by_shard(ds: Dataset, pairs: Iterable[tuple[int, int]]) -> dict[int, set[int]]:
    by_shard: dict[int, set[int]] = {}
    for shard, episode in pairs:
        shard, episode = int(shard), int(episode)
        if not 0 <= shard < len(ds.shards):
            raise ValueError(
                f"{ds.location}: episodes= names shard {shard}; the dataset has "
                f"{len(ds.shards)} shards (0..{len(ds.shards) - 1})."
            )
        if not 0 <= episode < ds.shards[shard].episodes:
            raise ValueError(
                f"{ds.location}: episodes= names episode {episode} of shard {shard}, which holds "
                f"{ds.shards[shard].episodes} episodes."
            )
        by_shard.setdefault(shard, set()).add(episode)
    return by_shard


def _ranges(sorted_ids: list[int]) -> Iterator[range]:
    """Consecutive ids as ranges (one read per range)."""
    start = prev = None
    for i in sorted_ids:
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            yield range(start, prev + 1)
            start = prev = i
    if start is not None:
        yield range(start, prev + 1)


def task_episodes(ds: Dataset, selection: TaskSelection) -> Iterator[Episode]:
    """The selected episodes of one task at its real widths (what every exporter writes)."""
    return read_episodes(ds, selection.runs, selection.obs_dim, selection.action_dim)


@dataclass
class ExportResult:
    """What `export` wrote: where, in which format, and how much."""

    out: str
    format: str
    written: list[str]
    tasks: list[str]
    episodes: int
    transitions: int
    seconds: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return (
            f"{self.out}: {self.format} dataset of {self.episodes} episodes, {self.transitions} "
            f"transitions, {len(self.tasks)} tasks ({', '.join(self.tasks)}) in "
            f"{self.seconds:.1f} s"
        )


def export(
    data: str | os.PathLike | Dataset | DatasetView,
    out: str | os.PathLike,
    to: str,
    *,
    tasks: str | Iterable[str] | None = None,
    episodes: Iterable[tuple[int, int]] | None = None,
    overwrite: bool = False,
    progress: bool = False,
    **options: Any,
) -> ExportResult:
    """Write the selected episodes of the shard dataset ``data`` to ``out`` in format ``to``.

    ``data`` may be a view (``ds.select(...)``): only its episodes are exported (further
    narrowed by ``tasks`` / ``episodes``, see `select_episodes`). ``overwrite``: replace a non-empty
    ``out``. ``options`` go to the format's ``write`` (e.g. ``repo_id``, ``fps`` for LeRobot,
    ``name`` for Minari).
    """
    if to not in EXPORTERS:
        raise ValueError(f"--to {to!r}: no exporter for it (available: {', '.join(EXPORTERS)}).")
    if isinstance(data, DatasetView):
        ds, picked = data.dataset, set(data.rows())
        episodes = picked if episodes is None else [e for e in episodes if tuple(e) in picked]
    else:
        ds = data if isinstance(data, Dataset) else open_dataset(data)
    out = Path(out).resolve()
    _check_out(ds, out, overwrite)
    selection = select_episodes(ds, tasks, episodes)
    module = import_module(EXPORTERS[to])
    module.require()
    start = time.perf_counter()
    written: list[str] = []
    total = sum(s.num_episodes for s in selection)
    with progress_bar(total=total, unit="ep", desc=f"export {to}", enabled=progress) as bar:

        def write(root: Path) -> None:
            written.extend(module.write(ds, selection, root, bar, **options))

        write_dir_atomic(out, write)
    transitions = sum(
        ds.shards[shard].episode_length * len(run) for s in selection for shard, run in s.runs
    )
    return ExportResult(
        str(out),
        to,
        written,
        [s.name for s in selection],
        total,
        transitions,
        time.perf_counter() - start,
        options,
    )


def _check_out(ds: Dataset, out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` that would lose data: non-empty (unless ``overwrite``), a file, or
    the source dataset itself or a directory above it."""
    if "://" not in ds.location:
        source = Path(ds.location).resolve()
        if out == source or out in source.parents:
            raise ValueError(
                f"{out}: is (or holds) the dataset being exported; choose another OUT."
            )
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory (OUT must be a directory).")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out}: not empty; pass --overwrite (overwrite=True) to replace it.")
