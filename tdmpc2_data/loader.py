"""`WindowSampler`: sub-trajectory batches for TD-MPC2 from shard datasets, in bounded memory.

Windows are uniform over transitions; decoded episodes live in a cache of ``cache_bytes``
(``tdmpc2_data.cache``) through which blocks of episodes rotate. Distribution, rotation,
determinism, DDP and throughput: docs/design.md#the-window-sampler.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import torch

from tdmpc2_data import schema
from tdmpc2_data.batch import HORIZON, Batch, batch_bytes
from tdmpc2_data.cache import READ_FIELDS, Arena, Block, Piece, row_bytes
from tdmpc2_data.curate import DatasetView
from tdmpc2_data.reader import Dataset, combine_tables, open_dataset
from tdmpc2_data.tasks import table_index

#: What the loader samples from: a dataset, a view of one, or a path/URL to open.
DataSpec = Dataset | DatasetView | str | os.PathLike

#: Rows gathered per index operation (batches are produced in groups of about this size).
GROUP_ROWS = 8192
#: Largest block (what one cache slot holds); blocks are also at most 1/16 of the budget.
BLOCK_BYTES = 64 << 20
#: Largest read while filling a slot (decoded bytes); also at most 1/32 of the budget.
READ_BYTES = 2 << 20
#: Threads decoding blocks when num_workers > 0; the budget always reserves their buffers,
#: so that the cache layout (and so the batches) does not depend on num_workers.
DECODE_THREADS = 2


@dataclass(frozen=True)
class _Plan:
    """This rank's blocks and the cache layout that holds them."""

    blocks: list[Block]
    quotas: np.ndarray  # windows to draw from each block per visit
    slots: int
    slot_rows: int
    slot_runs: int
    group: int  # batches drawn per step (gathered with one index)
    lag: int  # steps between evicting a slot and sampling its new block

    @property
    def resident(self) -> bool:
        return len(self.blocks) <= self.slots


class WindowSampler:
    """Iterable of `Batch`es of ``batch_size`` windows of ``horizon`` steps.

    Args:
        datasets: a `Dataset`, a `DatasetView` (``ds.select(...)``: only its episodes are
            sampled, at the same cost per batch), a path/URL for ``open_dataset``, or a list
            of them. Datasets are combined: tasks are matched by name into one table
            (``self.tasks``), obs and actions are zero-padded to the widest dataset.
        batch_size, horizon: B and H of the batch shapes.
        cache_bytes: RAM for decoded episodes, including decode buffers (batches prepared
            ahead come on top: ``prefetch x num_workers`` groups of ~8K rows).
        seed: seeds the shard split, the rotation order and the draws.
        rank, world_size: this process's share of the data; default: ``torch.distributed``
            when initialized, else 0 of 1.
        task_weights: None (uniform over transitions), "balanced" (every task equally
            likely) or {task name: weight} (P(task) proportional to weight; tasks not named
            are not sampled).
        exclude_tasks: tasks never sampled (e.g. the held-out tasks of a few-shot split),
            while they stay in the task table; the rest keep their relative weights.
        num_workers: background threads producing batches (0: everything in the caller's
            thread); with any workers, two more threads decode blocks.
        prefetch: groups of batches (~8K rows each) prepared ahead per worker.
        pin_memory: page-lock batches for fast CUDA copies (automatic when ``device`` is CUDA).
        device: move each batch there (non-blocking from pinned memory).
        batches_per_epoch: make each ``iter()`` finite (``len()``); default: endless.
        reuse: windows drawn per valid start while a block is resident, when the data does
            not fit the cache (trade-off: docs/design.md#the-window-sampler).
    """

    def __init__(
        self,
        datasets: DataSpec | Sequence[DataSpec],
        batch_size: int = 256,
        horizon: int = HORIZON,
        cache_bytes: int = 4 << 30,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        task_weights: None | str | Mapping[str, float] = None,
        exclude_tasks: Sequence[str] = (),
        num_workers: int = 0,
        prefetch: int = 2,
        pin_memory: bool = False,
        device: torch.device | str | None = None,
        batches_per_epoch: int | None = None,
        reuse: float = 1.0,
    ) -> None:
        for name, value, low in (
            ("batch_size", batch_size, 1),
            ("horizon", horizon, 1),
            ("cache_bytes", cache_bytes, 1),
            ("prefetch", prefetch, 1),
            ("num_workers", num_workers, 0),
        ):
            if not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name}={value!r}; expected an integer >= {low}.")
        if batches_per_epoch is not None and batches_per_epoch < 1:
            raise ValueError(f"batches_per_epoch={batches_per_epoch!r}; expected None or >= 1.")
        if not reuse > 0:
            raise ValueError(f"reuse={reuse!r}; expected a positive number.")
        if (rank is None) != (world_size is None):
            raise ValueError(
                f"Give both rank and world_size or neither (got {rank}, {world_size})."
            )
        if isinstance(datasets, (Dataset, DatasetView, str, os.PathLike)):
            datasets = [datasets]
        opened = [d if isinstance(d, (Dataset, DatasetView)) else open_dataset(d) for d in datasets]
        self.datasets = [d.dataset if isinstance(d, DatasetView) else d for d in opened]
        #: per dataset: the `DatasetView` sampled, or None (all of it)
        self.views: list[DatasetView | None] = [
            d if isinstance(d, DatasetView) else None for d in opened
        ]
        if not self.datasets:
            raise ValueError("WindowSampler needs at least one dataset.")
        self.batch_size, self.horizon, self.cache_bytes = batch_size, horizon, cache_bytes
        self.seed, self.reuse = seed, reuse
        self.num_workers, self.prefetch = num_workers, prefetch
        self.batches_per_epoch = batches_per_epoch
        self.device = None if device is None else torch.device(device)
        self.pin_memory = pin_memory or (self.device is not None and self.device.type == "cuda")
        if self.pin_memory and not torch.cuda.is_available():
            warnings.warn("pin_memory=True but CUDA is not available; not pinning.", stacklevel=2)
            self.pin_memory = False
        combined = combine_tables(self.datasets)
        self.task_info, local_to_global = combined.tasks, combined.id_maps
        self.tasks: list[str] = [t["name"] for t in self.task_info]
        self.obs_dim, self.action_dim = combined.obs_dim, combined.action_dim
        pieces = _pieces(self.datasets, local_to_global, horizon, self.views)
        self._task_factor = _task_factor(pieces, self.tasks, task_weights, horizon, exclude_tasks)
        self._pieces = [p for p in pieces if self._task_factor[p.task] > 0]
        self._rank, self._world_size = rank, world_size
        self._epoch = 0
        self._skip = 0  # batches the next iter() drops (resume_at)
        self._plan: _Plan | None = None
        self._plan_key: tuple[int, int] | None = None
        self._arena: Arena | None = None
        self._stream: _Stream | None = None

    # ------------------------------------------------------------------ public
    @property
    def rank(self) -> int:
        return self._dist()[0]

    @property
    def world_size(self) -> int:
        return self._dist()[1]

    def set_rank(self, rank: int, world_size: int) -> None:
        """Use this share of the data from the next ``iter()`` (Lightning: from the trainer)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} is not in 0..world_size-1 (world_size={world_size}).")
        self._rank, self._world_size = rank, world_size

    def resume_at(self, batches: int) -> None:
        """Make the next ``iter()`` start after its first ``batches`` batches (drawn and
        dropped: the schedule is deterministic), where a resumed training run left off."""
        if batches < 0:
            raise ValueError(f"resume_at({batches!r}): expected batches >= 0.")
        self._skip = int(batches)

    def set_epoch(self, epoch: int) -> None:
        """Seed the next ``iter()`` with ``epoch`` (otherwise each ``iter()`` moves one on)."""
        self._epoch = int(epoch)

    @property
    def sampler(self) -> WindowSampler:
        """Lightning calls ``loader.sampler.set_epoch(epoch)`` on each epoch start; this is it."""
        return self

    def cache_info(self) -> dict[str, Any]:
        """How this rank's data maps onto the cache (plans it if needed)."""
        plan = self._get_plan()
        slot_bytes = plan.slot_rows * row_bytes(self.obs_dim, self.action_dim)
        B, H, A = self.batch_size, self.horizon, self.action_dim
        return {
            "resident": plan.resident,
            "blocks": len(plan.blocks),
            "slots": plan.slots,
            "slot_bytes": slot_bytes,
            "cache_bytes": plan.slots * slot_bytes,
            "transitions": sum(p.episodes * p.length for b in plan.blocks for p in b.pieces),
            # one group of batches (outside the budget; about prefetch x workers are in flight)
            "group_bytes": plan.group * batch_bytes(B, H, self.obs_dim, A),
        }

    def __len__(self) -> int:
        if self.batches_per_epoch is None:
            raise TypeError("This WindowSampler is endless; pass batches_per_epoch for a length.")
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[Batch]:
        """Batches of the next epoch. The epoch is taken when the first batch is requested,
        so ``set_epoch`` after ``iter()`` (as Lightning does) still applies."""
        self.close()  # one stream at a time owns the cache
        epoch, self._epoch = self._epoch, self._epoch + 1
        plan = self._get_plan()
        if self._arena is None:
            self._arena = Arena(
                plan.slots,
                plan.slot_rows,
                plan.slot_runs,
                self.obs_dim,
                self.action_dim,
                self._read_bytes,
            )
        stream = self._stream = _Stream(self, plan, self._arena, epoch)
        skip, self._skip = self._skip, 0
        try:
            count = 0
            while self.batches_per_epoch is None or count < self.batches_per_epoch:
                for batch in stream.next_group():
                    if self.batches_per_epoch is not None and count >= self.batches_per_epoch:
                        break
                    if stream.closed:
                        raise RuntimeError(
                            "This WindowSampler iterator was closed, by close() or by a "
                            "newer iter() of the same sampler (one iterator at a time)."
                        )
                    count += 1
                    if count <= skip:
                        continue
                    yield batch if self.device is None else batch.to(self.device, True)
        finally:
            stream.close()

    def close(self) -> None:
        """Stop background threads (also done when an iterator is dropped or a new one starts)."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_arena=None, _stream=None, _plan=None, _plan_key=None)
        return state

    # ------------------------------------------------------------------ internals
    def _dist(self) -> tuple[int, int]:
        if self._rank is not None:
            return self._rank, self._world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _get_plan(self) -> _Plan:
        key = self._dist()
        if self._plan is None or self._plan_key != key:
            self.close()
            self._plan, self._plan_key, self._arena = self._make_plan(*key), key, None
        return self._plan

    def _make_plan(self, rank: int, world_size: int) -> _Plan:
        mine = _rank_pieces(self._pieces, self._mass, world_size, rank, self.seed)
        for d, i in sorted({(p.dataset, p.shard) for p in mine}):
            for field in READ_FIELDS:  # the index's sizes checked against the arrays
                self.datasets[d].array(i, field)  # before the cache is sized from them
        rb = row_bytes(self.obs_dim, self.action_dim)
        buffers = 3 * self._read_bytes * DECODE_THREADS  # decoded read + zarr's chunk copies
        budget = self.cache_bytes - buffers
        longest = max(p.length + 1 for p in mine)
        block_rows = max(longest, min(BLOCK_BYTES, budget // 16) // rb)
        blocks = _blocks(mine, block_rows, partial(self._part_episodes, block_rows=block_rows))
        slot_rows = max(b.rows for b in blocks)
        slot_runs = max(len(b.pieces) for b in blocks)
        slots = min(len(blocks), max(0, budget) // (slot_rows * rb + slot_runs * 40))
        if slots < min(2, len(blocks)):
            raise ValueError(
                f"cache_bytes={self.cache_bytes} is too small: an episode of {longest - 1} steps "
                f"takes {longest * rb} bytes, and the cache needs room for 2 blocks of at least "
                f"one episode plus {buffers} bytes of decode buffers."
            )
        mass = np.array([sum(self._mass(p) for p in b.pieces) for b in blocks])
        group = max(1, GROUP_ROWS // (self.batch_size * (self.horizon + 1)))
        if len(blocks) <= slots:
            return _Plan(blocks, mass, slots, slot_rows, slot_runs, group, lag=1)
        # A view decodes whole stored chunks, unselected episodes included: drawing
        # proportionally more windows per visit keeps the decoding per batch the whole
        # dataset's (one factor for all blocks, so sampling stays proportional to mass).
        reuse = self.reuse * (_read_overhead(blocks, self.datasets) if any(self.views) else 1.0)
        # A visit should last several steps, or the windows of a step overshoot quotas:
        # smaller groups and, for tiny blocks, more windows per start than ``reuse``.
        group = max(1, min(group, int(reuse * mass.mean() // (4 * self.batch_size))))
        scale = max(reuse, 4 * group * self.batch_size / mass.mean())
        lag = round(scale * mass.mean() / (group * self.batch_size))
        return _Plan(blocks, scale * mass, slots, slot_rows, slot_runs, group, lag)

    @property
    def _read_bytes(self) -> int:
        """Decoded bytes per read while filling a slot (at least one stored chunk is read)."""
        return max(1, min(READ_BYTES, self.cache_bytes // 32))

    def _part_episodes(self, piece: Piece, block_rows: int) -> int:
        """Episodes per part of a block: one read of at most ``_read_bytes`` of obs and at
        most 1/16 of a block (so a block mixes >= 16 parts), in whole stored chunks when a
        chunk fits (budgets under ~128 MB read partial chunks: slower decoding)."""
        steps = piece.length + 1
        obs_dim = self.datasets[piece.dataset].obs_dim
        n = min(self._read_bytes // (steps * obs_dim * 4), block_rows // 16 // steps)
        chunk = schema.chunk_episodes(piece.length, obs_dim)
        return max(1, n // chunk * chunk if n >= chunk else n)

    def _mass(self, piece: Piece) -> float:
        return piece.starts(self.horizon) * float(self._task_factor[piece.task])


# ---------------------------------------------------------------------- planning
def _pieces(
    datasets: Sequence[Dataset],
    maps: Sequence[np.ndarray],
    horizon: int,
    views: Sequence[DatasetView | None] | None = None,
) -> list[Piece]:
    """One piece per task run of every shard whose episodes are long enough for a window
    (with a view: per run of consecutive selected episodes of a task run)."""
    pieces, short = [], []
    views = views or [None] * len(datasets)
    for d, ds in enumerate(datasets):
        view = views[d]
        for i, shard in enumerate(ds.shards):
            if shard.episodes and shard.episode_length < horizon:
                short.append(f"{ds.location}/{shard.path} (T={shard.episode_length})")
                continue
            for tid, run in shard.task_ranges.items():
                task = int(maps[d][tid])
                runs = (
                    [(run.start, run.stop)] if view is None else view.runs(i, run.start, run.stop)
                )
                for lo, hi in runs:
                    if hi > lo:
                        pieces.append(Piece(d, i, lo, hi, shard.episode_length, task, tid))
    if not pieces and not short:
        selected = [f"{v!r}" for v in views if v is not None]
        raise ValueError(
            f"No episodes to sample: {', '.join(ds.location for ds in datasets)} "
            + (
                f"has no episodes selected ({'; '.join(selected)})."
                if selected
                else "has no episodes (empty dataset, or a writer that was never closed)."
            )
        )
    if not pieces:
        raise ValueError(
            f"horizon={horizon} is longer than every episode: {', '.join(short[:5])}. "
            "A window needs horizon+1 observations of one episode."
        )
    if short:
        warnings.warn(
            f"Skipping {len(short)} shard(s) with episodes shorter than horizon={horizon}: "
            f"{', '.join(short[:5])}.",
            stacklevel=3,
        )
    return pieces


def _task_factor(
    pieces: Sequence[Piece],
    tasks: Sequence[str],
    weights: None | str | Mapping[str, float],
    horizon: int,
    exclude: Sequence[str] = (),
) -> np.ndarray:
    """Per-task multiplier of a window's sampling mass: uniform over transitions, or P(task k)
    proportional to weight k and uniform within the task; 0 for excluded tasks. Scaled so
    that total mass = total valid starts."""
    starts = np.zeros(len(tasks))
    for p in pieces:
        starts[p.task] += p.starts(horizon)
    if weights is None:
        factor = np.ones(len(tasks))
    else:
        factor = _weight_factor(tasks, weights, starts)
    for name in exclude:
        factor[table_index(tasks, name, "the datasets' task table", "exclude_tasks")] = 0.0
    if not (factor * starts).sum() > 0:
        raise ValueError(f"exclude_tasks={list(exclude)} leaves no episodes to sample.")
    return factor * starts.sum() / (factor * starts).sum()


def _weight_factor(
    tasks: Sequence[str], weights: str | Mapping[str, float], starts: np.ndarray
) -> np.ndarray:
    """Per-task factor making P(task k) proportional to its weight, uniform within the task."""
    if weights == "balanced":
        w = (starts > 0).astype(float)
    elif isinstance(weights, Mapping):
        w = np.zeros(len(tasks))
        for name, value in weights.items():
            k = table_index(tasks, name, "the datasets' task table", "task_weights")
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"task_weights[{name!r}]={value!r}; expected a number >= 0.")
            if value > 0 and starts[k] == 0:
                raise ValueError(f"task_weights names {name!r}, which has no episodes to sample.")
            w[k] = value
    else:
        raise ValueError(f"task_weights={weights!r}; expected None, 'balanced' or a dict.")
    if not w.sum() > 0:
        raise ValueError("task_weights give every task with episodes weight 0.")
    return np.divide(w, starts, out=np.zeros(len(tasks)), where=starts > 0)


def _read_overhead(blocks: Sequence[Block], datasets: Sequence[Dataset]) -> float:
    """Episodes decoded per episode cached when loading ``blocks``: reads are whole stored
    chunks (``cache.Arena.load``), so a view's scattered runs decode their neighbours too."""
    decoded = cached = 0
    for block in blocks:
        chunks = set()
        for p in block.pieces:
            size = datasets[p.dataset].array(p.shard, "obs").chunks[0]
            chunks.update(
                (p.dataset, p.shard, size, c)
                for c in range(p.start // size, (p.stop - 1) // size + 1)
            )
            cached += p.episodes
        for d, shard, size, c in chunks:
            decoded += min(size, datasets[d].shards[shard].episodes - c * size)
    return max(1.0, decoded / max(1, cached))


def _rank_pieces(pieces: list[Piece], mass, world_size: int, rank: int, seed: int) -> list[Piece]:
    """This rank's pieces: whole shards (or, with fewer shards than ranks, episode ranges of
    shards) dealt to ranks largest first, each to the rank with the least mass so far."""
    if world_size == 1:
        return pieces
    shards: dict[tuple[int, int], list[Piece]] = {}
    for p in pieces:
        shards.setdefault((p.dataset, p.shard), []).append(p)
    units = list(shards.values())
    if len(units) < world_size:
        units = [part for unit in units for part in _split(unit, world_size) if part]
    if len(units) < world_size:
        raise ValueError(
            f"world_size={world_size} but the data has only {len(units)} episodes to share: "
            "every rank needs at least one."
        )
    masses = np.array([sum(mass(p) for p in u) for u in units])
    shuffled = np.random.default_rng([seed, world_size]).permutation(len(units))
    order = shuffled[np.argsort(-masses[shuffled], kind="stable")]
    load = np.zeros(world_size)
    mine = []
    for u in order:
        r = int(np.argmin(load))
        load[r] += masses[u]
        if r == rank:
            mine.extend(units[u])
    return mine


def _split(unit: list[Piece], parts: int) -> list[list[Piece]]:
    """Cut one shard's pieces into ``parts`` contiguous episode ranges of near-equal size."""
    first, last = min(p.start for p in unit), max(p.stop for p in unit)
    cuts = np.linspace(first, last, parts + 1).round().astype(int)
    out = []
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        out.append(
            [
                replace(p, start=max(p.start, lo), stop=min(p.stop, hi))
                for p in unit
                if max(p.start, lo) < min(p.stop, hi)
            ]
        )
    return out


def _blocks(
    pieces: Sequence[Piece], block_rows: int, part_episodes: Callable[[Piece], int]
) -> list[Block]:
    """Blocks of at most ``block_rows`` rows that mix tasks.

    Shards store episodes task by task, so blocks of consecutive episodes would hold one or
    two tasks each, and a cache holding a few blocks would see few tasks at a time. Instead
    pieces are cut into parts of ``part_episodes`` (one read each, on the stored chunk grid),
    parts of different tasks are interleaved round-robin, and consecutive parts are packed.
    The pieces of a view (runs of selected episodes) that fall in one part window stay
    together as one part, so each stored chunk is decoded for one block, not for each run.
    """
    by_task: dict[int, list[list[Piece]]] = {}
    window: dict[int, tuple[int, int, int]] = {}  # task -> (dataset, shard, part) of its last
    for p in sorted(pieces, key=lambda p: (p.dataset, p.shard, p.start)):
        n = part_episodes(p)
        for lo in range(p.start - p.start % n, p.stop, n):
            part = replace(p, start=max(lo, p.start), stop=min(lo + n, p.stop))
            queue = by_task.setdefault(p.task, [])
            where = (p.dataset, p.shard, lo // n)
            if queue and window[p.task] == where:
                queue[-1].append(part)
            else:
                queue.append([part])
            window[p.task] = where
    queues = list(by_task.values())
    groups = [q[i] for i in range(max(map(len, queues))) for q in queues if i < len(q)]
    blocks, current, rows = [], [], 0
    for group in groups:
        size = sum(part.rows for part in group)
        if current and rows + size > block_rows:
            blocks.append(Block(tuple(current)))
            current, rows = [], 0
        for part in group:
            last = current[-1] if current else None
            where = (part.dataset, part.shard, part.task, part.start)
            if last is not None and (last.dataset, last.shard, last.task, last.stop) == where:
                current[-1] = replace(last, stop=part.stop)  # contiguous: one run
            else:
                current.append(part)
        rows += size
    blocks.append(Block(tuple(current)))
    return blocks


# ---------------------------------------------------------------------- rotation
class _Rotation:
    """Which block each slot holds: visits of blocks in a seeded order, each for its quota.

    Cycle 0 starts with one block per slot; the first ones get a fraction 1/K, 2/K, ... of
    their quota (the rest is paid back by an extra visit at the end of the cycle), so that
    slots expire one after another instead of all at once.
    """

    def __init__(self, quotas: np.ndarray, slots: int, rng: np.random.Generator) -> None:
        self.quotas = quotas
        self.slots = min(slots, len(quotas))
        self.rotating = len(quotas) > slots
        self._rng = rng
        self._visits = self._visit_order()
        self.left = np.full(self.slots, np.inf)
        self.block = np.zeros(self.slots, np.int64)
        self._debt = np.zeros(len(quotas))

    def initial(self) -> list[int]:
        """Block of each slot at the start."""
        if not self.rotating:
            self.block[:] = np.arange(self.slots)
        else:
            for s in range(self.slots):
                self.block[s], self.left[s] = next(self._visits)
        return [int(b) for b in self.block]

    def consume(self, drawn: np.ndarray) -> list[tuple[int, int]]:
        """Count windows drawn per slot; returns (slot, next block) for slots whose quota ran out."""
        if not self.rotating:
            return []
        self.left -= drawn
        swaps = []
        for s in np.flatnonzero(self.left <= 0):
            self._debt[self.block[s]] += -self.left[s]
            while True:  # a visit that only pays back debt is skipped
                b, quota = next(self._visits)
                paid = min(quota, self._debt[b])
                self._debt[b] -= paid
                if quota - paid > 0:
                    break
            self.block[s], self.left[s] = b, quota - paid
            swaps.append((int(s), int(b)))
        return swaps

    def _visit_order(self) -> Iterator[tuple[int, float]]:
        n, k = len(self.quotas), self.slots
        first = self._rng.permutation(n)
        share = np.ones(n)
        share[first[:k]] = np.arange(1, k + 1) / k
        for b in first:
            yield b, self.quotas[b] * share[b]
        for b in first[: k - 1]:
            yield b, self.quotas[b] * (1 - share[b])
        while True:
            for b in self._rng.permutation(n):
                yield b, self.quotas[b]


class _Stopped(Exception):
    """The stream was closed while a thread was waiting."""


class _Stream:
    """One iteration: a deterministic sequence of macro-steps (groups of batches).

    ``_plan(step)`` (sequential, under a lock) draws the windows of a step and schedules
    slot reloads; ``_gather`` (parallel) copies them out of the cache. A reload of a slot
    starts once every step that may read the slot has been gathered.
    """

    def __init__(self, sampler: WindowSampler, plan: _Plan, arena: Arena, epoch: int) -> None:
        self.s, self.plan, self.arena = sampler, plan, arena
        rank = sampler.rank
        self.rng = np.random.default_rng([sampler.seed, rank, epoch, 0])
        self.rotation = _Rotation(
            plan.quotas, plan.slots, np.random.default_rng([sampler.seed, rank, epoch, 1])
        )
        k = self.rotation.slots
        self.active = np.zeros(k, bool)
        self.ready = np.zeros(k, np.int64)
        self.loads: list[Future | Callable[[], None] | None] = [None] * k
        self.cum: np.ndarray | None = None
        self.last = 0
        self.next_step = 0
        self.threads: list[threading.Thread] = []
        self.stopped = threading.Event()
        self.lock = threading.Lock()  # planning
        self.cond = threading.Condition()  # gathered / results
        self.gathered_below = 0  # every step < this has been gathered
        self.gathered: set[int] = set()
        self.results: dict[int, list[Batch] | BaseException] = {}
        self.consumed = 0
        self.closed = False
        workers = sampler.num_workers
        self.room = threading.Semaphore(sampler.prefetch * max(1, workers))
        self.jobs: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        if workers:
            for i in range(DECODE_THREADS):
                self._start(self._decode, f"tdmpc2-decode-{i}")
        for slot, block in enumerate(self.rotation.initial()):
            self._load(slot, block, after=-1)
        for i in range(workers):
            self._start(self._work, f"tdmpc2-batches-{i}")
        _LIVE.add(self)

    def _start(self, target: Callable[[], None], name: str) -> None:
        # daemon threads, closed by `close` (also at exit), so they never block shutdown
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self.threads.append(t)

    # ------------------------------------------------------------ consumer side
    def next_group(self) -> list[Batch]:
        if not self.s.num_workers:
            step = self._take_step()
            batches = self._gather(*self._plan(step))
            self._mark_gathered(step)
            return batches
        with self.cond:
            while self.consumed not in self.results:
                self.cond.wait()
            result = self.results.pop(self.consumed)
        self.consumed += 1
        self.room.release()
        if isinstance(result, BaseException):
            raise result
        return result

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.stopped.set()
        with self.cond:
            self.cond.notify_all()
        for _ in self.threads:
            self.room.release()
            self.jobs.put(None)
        for t in self.threads:
            t.join()
        self.threads = []

    # ------------------------------------------------------------ workers
    def _work(self) -> None:
        while True:
            self.room.acquire()
            if self.stopped.is_set():
                return
            try:
                with self.lock:  # steps are planned strictly in order
                    step = self._take_step()
                    plan = self._plan(step)
                result: list[Batch] | BaseException = self._gather(*plan)
            except _Stopped:
                return
            except BaseException as exc:  # handed to the consumer, which raises it
                result = exc
                self.stopped.set()
            self._mark_gathered(step)
            with self.cond:
                self.results[step] = result
                self.cond.notify_all()

    def _take_step(self) -> int:
        with self.cond:
            step, self.next_step = self.next_step, self.next_step + 1
        return step

    def _mark_gathered(self, step: int) -> None:
        with self.cond:
            self.gathered.add(step)
            while self.gathered_below in self.gathered:
                self.gathered.remove(self.gathered_below)
                self.gathered_below += 1
            self.cond.notify_all()

    def _load(self, slot: int, block: int, after: int) -> None:
        """Decode ``block`` into ``slot`` once step ``after`` has been gathered: in a decode
        thread, or (no workers) when the slot is activated."""
        args = (slot, self.plan.blocks[block], self.s.datasets, self.s.horizon, self.s._task_factor)
        if not self.s.num_workers:
            self.loads[slot] = lambda: self.arena.load(*args)
            return
        future: Future = Future()
        self.loads[slot] = future
        self.jobs.put((args, after, future))

    def _decode(self) -> None:
        while (job := self.jobs.get()) is not None:
            args, after, future = job
            try:
                with self.cond:
                    while self.gathered_below <= after and not self.stopped.is_set():
                        self.cond.wait()
                if self.stopped.is_set():
                    raise _Stopped
                self.arena.load(*args)
            except BaseException as exc:  # raised where the slot is activated
                future.set_exception(exc)
            else:
                future.set_result(None)

    def _activate(self, slot: int) -> None:
        """Make ``slot`` sampleable, waiting for its load (which raises its errors)."""
        job, self.loads[slot] = self.loads[slot], None
        if isinstance(job, Future):
            job.result()
        elif job is not None:
            job()
        self.active[slot] = True
        self.cum = None

    # ------------------------------------------------------------ one macro-step
    def _plan(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw the windows of ``step`` (must be called in step order): cache rows [G, B]
        and task ids [G, B]."""
        if not self.active.all():
            for slot in np.flatnonzero(~self.active & (self.ready <= step)):
                self._activate(slot)
            if not self.active.any():  # everything is reloading: wait for the first one
                pending = np.flatnonzero(~self.active)
                self._activate(pending[np.argmin(self.ready[pending])])
        a = self.arena
        if self.cum is None:
            mass = a.run_mass * np.repeat(self.active, a.slot_runs)
            self.cum, self.last = np.cumsum(mass), np.flatnonzero(mass)[-1]
        n = self.plan.group * self.s.batch_size
        u = self.rng.random((3, n))
        run = np.searchsorted(self.cum, u[0] * self.cum[-1], side="right")
        run = np.minimum(run, self.last)  # u * total may round up to total
        rows = a.window_rows(run, u[1], u[2], self.s.horizon)
        drawn = np.bincount(run // a.slot_runs, minlength=self.rotation.slots)
        for slot, block in self.rotation.consume(drawn):
            self.active[slot] = False
            self.cum = None
            self.ready[slot] = step + 1 + self.plan.lag
            self._load(slot, block, after=step)
        shape = (self.plan.group, self.s.batch_size)
        return rows.reshape(shape), a.run_task[run].reshape(shape)

    def _gather(self, rows: np.ndarray, tasks: np.ndarray) -> list[Batch]:
        obs, action, reward = self.arena.gather(rows, self.s.horizon, self.s.pin_memory)
        task = torch.from_numpy(tasks)
        if self.s.pin_memory:
            task = task.pin_memory()
        parts = (obs, action, reward, task)
        return [Batch(*views) for views in zip(*(x.unbind() for x in parts), strict=True)]


#: Streams whose threads are running; closed at interpreter exit (an iterator left open
#: would otherwise be finalized while its threads still run).
_LIVE: weakref.WeakSet[_Stream] = weakref.WeakSet()
atexit.register(lambda: [stream.close() for stream in list(_LIVE)])

__all__ = ["WindowSampler"]
