"""`verify_dataset`: decode every shard and check it against the format's rules.

The reader checks cheaply what it touches (shapes, crc of the chunks it decodes); verify is
the full pass a user runs after a download, a conversion or a crash: every chunk decoded,
padding exactly zero, values finite, task ids and counts consistent with the index.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tdmpc2_data import schema
from tdmpc2_data.progress import progress_bar
from tdmpc2_data.reader import Dataset, ShardInfo, open_dataset
from tdmpc2_data.schema import SHARDS_DIR, DatasetError
from tdmpc2_data.writer import TMP_PREFIX, index_entry, shard_names

#: Uncompressed bytes decoded at a time per shard (bounds verify's memory).
BATCH_BYTES = 64 << 20


@dataclass
class VerifyReport:
    """Outcome of ``verify_dataset``: ``problems`` maps a shard path (or "zarr.json") to its damage."""

    location: str
    shards: int = 0
    episodes: int = 0
    transitions: int = 0
    nbytes: int = 0
    problems: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, where: str, problem: str) -> None:
        if problem not in self.problems.get(where, []):
            self.problems.setdefault(where, []).append(problem)

    def summary(self) -> str:
        lines = [
            f"{self.location}: checked {self.shards} shards, {self.episodes} episodes, "
            f"{self.transitions} transitions, {self.nbytes / 1e6:.1f} MB."
        ]
        lines += [f"warning: {w}" for w in self.warnings]
        for where, problems in self.problems.items():
            lines += [f"DAMAGED {where}: {p}" for p in problems]
        lines.append(
            "OK" if self.ok else f"{len(self.problems)} damaged item(s): {', '.join(self.problems)}"
        )
        return "\n".join(lines)


def verify_dataset(path: str | os.PathLike, progress: bool = False) -> VerifyReport:
    """Check every shard of the dataset at ``path`` (local dir or URL); never raises on damage."""
    report = VerifyReport(str(path))
    try:
        ds = open_dataset(path, check_index=False)
    except (DatasetError, FileNotFoundError) as exc:
        report.add("zarr.json", str(exc))
        return report
    _check_index(ds, report)
    present = _present(ds)
    provenance: list[np.ndarray] = []  # (source, task, source_index) of recorded episodes
    for i, shard in enumerate(
        progress_bar(ds.shards, desc="verify", unit="shard", enabled=progress)
    ):
        if shard.path.split("/")[-1] not in present:
            continue  # reported by the index check
        try:
            _check_shard(ds, i, shard, report, provenance)
        except DatasetError as exc:
            report.add(shard.path, str(exc))
        except Exception as exc:  # undecodable bytes surface as codec-specific errors
            report.add(shard.path, f"cannot be decoded ({type(exc).__name__}: {exc})")
        report.shards += 1
        report.episodes += shard.episodes
        report.transitions += shard.transitions
        report.nbytes += shard.nbytes or 0
    if provenance:
        _, counts = np.unique(np.concatenate(provenance), axis=0, return_counts=True)
        if (counts > 1).any():
            report.warnings.append(
                f"{int(counts[counts > 1].sum())} episodes share their (source, task, "
                "source_index) with another: the same episode written twice, or a writer "
                "given wrong source_index values"
            )
    return report


def _check_index(ds: Dataset, report: VerifyReport) -> None:
    local = "://" not in ds.location
    if not local:
        return  # a remote listing is the reader's job (open_dataset warns); shards are checked below
    root = Path(ds.location)
    on_disk = set(shard_names(root))
    indexed = {s.path.split("/")[-1] for s in ds.shards}
    for name in sorted(indexed - on_disk):
        report.add(f"{SHARDS_DIR}/{name}", "listed in the root index but not on disk")
    for name in sorted(on_disk - indexed):
        report.warnings.append(
            f"{SHARDS_DIR}/{name} is on disk but not in the root index (readers ignore it); "
            "run finalize to index it"
        )
    temps = [n for n in os.listdir(root / SHARDS_DIR) if n.startswith(TMP_PREFIX)]
    if temps:
        report.warnings.append(
            f"{len(temps)} unfinished temp shard(s) in {SHARDS_DIR}/ (a writer is running or "
            "crashed); finalize removes those of dead writers"
        )


def _check_shard(
    ds: Dataset, i: int, shard: ShardInfo, report: VerifyReport, provenance: list[np.ndarray]
) -> None:
    if "://" not in ds.location:  # the shard's own metadata: what an append rebuilds the index from
        own = index_entry(Path(ds.location), shard.path.split("/")[-1])
        said = {int(k): v for k, v in own["task_counts"].items()}
        if (own["episodes"], own["episode_length"], said) != (
            shard.episodes,
            shard.episode_length,
            shard.task_counts,
        ):
            report.add(
                shard.path,
                f"its zarr.json says {own['episodes']} episodes of length "
                f"{own['episode_length']} ({said}), the root index {shard.episodes} of "
                f"{shard.episode_length} ({shard.task_counts})",
            )
    fields = [f for f, spec in schema.FIELDS.items() if spec.required or ds.has_field(i, f)]
    for f in fields:
        ds.array(i, f)  # shape, dtype, data file present
    per_episode = (shard.episode_length + 1) * (ds.obs_dim + ds.action_dim + 2) * 4
    step = max(1, BATCH_BYTES // per_episode)
    tasks = []
    for start in range(0, shard.episodes, step):
        batch = ds.read_shard(i, tuple(fields), slice(start, start + step))
        task = batch["task"].astype(np.int64)
        tasks.append(task)
        for e, problem in schema.decoded_problems(batch, ds.task_info, ds.tasks):
            report.add(shard.path, problem.format(episode=start + e))
        if task.min() < 0 or task.max() >= len(ds.tasks):
            return
        for problem in provenance_problems(batch, len(ds.attrs.get("sources", [])), start):
            report.add(shard.path, problem)
        if "source" in batch and "source_index" in batch:
            known = (batch["source"] >= 0) & (batch["source_index"] >= 0)
            provenance.append(
                np.stack([batch["source"][known], task[known], batch["source_index"][known]], 1)
            )
    task = np.concatenate(tasks) if tasks else np.zeros(0, np.int64)
    ids, counts = np.unique(task, return_counts=True)
    found = {int(k): int(n) for k, n in zip(ids, counts, strict=True)}
    if found != shard.task_counts:
        report.add(shard.path, f"task ids count {found}, the index says {shard.task_counts}")
    if (np.diff(task) < 0).any():
        report.add(shard.path, "episodes are not ordered by task id (task ranges would be wrong)")


def provenance_problems(
    batch: dict[str, np.ndarray], num_sources: int, start: int = 0
) -> list[str]:
    """What is wrong with the per-episode provenance arrays of decoded episodes ``batch``:
    source ids outside the root ``sources`` (-1 = unknown), negative ``source_index`` other
    than -1 (unknown), and ``episode_return``/``episode_success`` that disagree with the
    rewards/success flags they summarise (``schema.episode_summaries``)."""
    problems = []
    if "source" in batch:
        src = batch["source"]
        if ((src < schema.UNKNOWN) | (src >= num_sources)).any():
            problems.append(f"source ids outside the root sources list (0..{num_sources - 1})")
    if "source_index" in batch and (batch["source_index"] < schema.UNKNOWN).any():
        problems.append("source_index below 0 (only -1, unknown, may be negative)")
    want = schema.episode_summaries(batch["reward"], batch.get("success"))
    if "episode_return" in batch:
        T = batch["reward"].shape[1]
        got, expected = batch["episode_return"], want["episode_return"]
        bad = ~np.isclose(got, expected, rtol=1e-5, atol=1e-6 * max(1, T))
        if bad.any():
            e = int(np.flatnonzero(bad)[0])
            problems.append(
                f"episode_return {float(got[e])!r} is not the sum of its rewards "
                f"{float(expected[e])!r} (episode {start + e}; {int(bad.sum())} in this batch)"
            )
    if "episode_success" in batch:
        if "episode_success" not in want:
            problems.append("episode_success is stored but the shard has no success array")
        elif (batch["episode_success"] != want["episode_success"]).any():
            problems.append("episode_success disagrees with the success flag at the last step")
    return problems


def _present(ds: Dataset) -> set[str]:
    if "://" in ds.location:
        return {s.path.split("/")[-1] for s in ds.shards}
    return set(shard_names(Path(ds.location)))
