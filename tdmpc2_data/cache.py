"""The loader's bounded cache: decoded episodes in flat row arrays, gathered with one index.

Why flat rows: a window is H+1 consecutive rows of one episode, so a whole batch of windows
is one advanced index into ``obs [R, D]`` (and the same index, minus the last step, into
``action [R, A]`` and ``reward [R]``), whatever shard or dataset each window came from.
Episode ``e`` at row offset ``o`` holds ``obs[t]`` in row ``o + t`` (t = 0..T) and the
``action[t]``/``reward[t]`` of the transition obs[t] -> obs[t+1] in the same row ``o + t``;
the last row of an episode has no action (left zero, never sampled).

The arrays are cut into equal slots; a slot holds one block (runs of whole episodes from
several shards and tasks), and the loader swaps blocks in and out of slots to rotate through
data larger than the budget.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tdmpc2_data.reader import Dataset
from tdmpc2_data.schema import DatasetError


@dataclass(frozen=True)
class Piece:
    """Episodes ``start..stop`` of shard ``shard`` of dataset ``dataset``, all of one task."""

    dataset: int
    shard: int
    start: int
    stop: int
    length: int  # T (transitions per episode)
    task: int  # global task id
    dataset_task: int  # the task's id in its dataset's table (what the shard stores)

    @property
    def episodes(self) -> int:
        return self.stop - self.start

    @property
    def rows(self) -> int:
        return self.episodes * (self.length + 1)

    def starts(self, horizon: int) -> int:
        """Number of valid window starts (t = 0..T-H in each episode)."""
        return self.episodes * (self.length - horizon + 1)


@dataclass(frozen=True)
class Block:
    """What one cache slot holds at a time: pieces loaded and evicted together."""

    pieces: tuple[Piece, ...]

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.pieces)


def row_bytes(obs_dim: int, action_dim: int) -> int:
    """Bytes of one cached row: float32 obs, action and reward."""
    return 4 * (obs_dim + action_dim + 1)


class Arena:
    """``slots`` slots of ``slot_rows`` rows each, plus a table of the runs they hold.

    A run is one loaded piece: consecutive episodes of one task and one length, so a window
    is drawn as (run, episode in run, start) and its row computed without per-episode
    tables. Per run: first row, episodes, length T, global task id and sampling mass (total
    over its windows; 0 for unused entries). Memory is allocated untouched (``np.zeros``
    maps fresh pages), so the resident size grows only as slots are filled. Slots are filled
    in reads of about ``read_bytes`` decoded bytes, which bounds the temporary copies.
    """

    def __init__(
        self,
        slots: int,
        slot_rows: int,
        slot_runs: int,
        obs_dim: int,
        action_dim: int,
        read_bytes: int,
    ) -> None:
        self.slots, self.slot_rows, self.slot_runs = slots, slot_rows, slot_runs
        self.read_bytes = read_bytes
        rows = slots * slot_rows
        self.obs = np.zeros((rows, obs_dim), np.float32)
        self.action = np.zeros((rows, action_dim), np.float32)
        self.reward = np.zeros(rows, np.float32)
        runs = slots * slot_runs
        self.run_row = np.zeros(runs, np.int64)
        self.run_episodes = np.zeros(runs, np.int64)
        self.run_length = np.ones(runs, np.int64)
        self.run_task = np.zeros(runs, np.int64)
        self.run_mass = np.zeros(runs, np.float64)
        self.block_of_slot: list[Block | None] = [None] * slots
        self._obs_t = torch.from_numpy(self.obs)
        self._action_t = torch.from_numpy(self.action)
        self._reward_t = torch.from_numpy(self.reward)

    def load(
        self,
        slot: int,
        block: Block,
        datasets: Sequence[Dataset],
        horizon: int,
        task_factor: np.ndarray,
    ) -> None:
        """Decode ``block`` into ``slot`` (a no-op if it is already there)."""
        if self.block_of_slot[slot] == block:
            return
        self.block_of_slot[slot] = None  # half-written until the end
        first = slot * self.slot_runs
        self.run_mass[first : first + self.slot_runs] = 0.0
        row = slot * self.slot_rows
        for run, piece in enumerate(block.pieces, first):
            self.run_row[run] = row
            self.run_episodes[run] = piece.episodes
            self.run_length[run] = piece.length
            self.run_task[run] = piece.task
            self.run_mass[run] = piece.starts(horizon) * task_factor[piece.task]
            row += piece.rows
        # Read in storage order, whole stored chunks at a time, so that the pieces of a
        # filtered view (a few episodes of a chunk each) decode every chunk once.
        reads = _ChunkReads(datasets)
        order = sorted(
            range(len(block.pieces)),
            key=lambda k: (block.pieces[k].dataset, block.pieces[k].shard, block.pieces[k].start),
        )
        ahead = _read_ahead([block.pieces[k] for k in order], datasets, self.read_bytes)
        for run, reach in zip(order, ahead, strict=True):
            piece, row = block.pieces[run], int(self.run_row[first + run])
            for start, stop in _read_ranges(datasets[piece.dataset], piece, self.read_bytes):
                data = reads.get(piece, start, stop, reach)  # format checked once per read
                check_decoded(datasets[piece.dataset], piece, start, data, format_checked=True)
                self._put(row, stop - start, piece.length + 1, data)
                row += (stop - start) * (piece.length + 1)
        self.block_of_slot[slot] = block
        _release_free_memory()

    def window_rows(
        self, run: np.ndarray, u_episode: np.ndarray, u_start: np.ndarray, horizon: int
    ) -> np.ndarray:
        """First rows of windows in runs ``run``, at uniform [0, 1) positions ``u_episode``
        (episode within the run) and ``u_start`` (start t in 0..T-H)."""
        length = self.run_length[run]
        episode = (u_episode * self.run_episodes[run]).astype(np.int64)
        start = (u_start * (length - horizon + 1)).astype(np.int64)
        return self.run_row[run] + episode * (length + 1) + start

    def _put(self, row: int, n: int, steps: int, data: dict[str, np.ndarray]) -> None:
        """Copy ``n`` decoded episodes into rows ``row..``, zero-padding to the cache widths."""
        rows = slice(row, row + n * steps)
        obs = self.obs[rows].reshape(n, steps, -1)
        d = data["obs"].shape[-1]
        obs[..., :d] = data["obs"]
        obs[..., d:] = 0.0
        action = self.action[rows].reshape(n, steps, -1)
        a = data["action"].shape[-1]
        action[:, :-1, :a] = data["action"]
        action[:, :-1, a:] = 0.0
        action[:, -1] = 0.0
        reward = self.reward[rows].reshape(n, steps)
        reward[:, :-1] = data["reward"]
        reward[:, -1] = 0.0

    def gather(
        self, rows: np.ndarray, horizon: int, pin_memory: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Windows starting at ``rows`` [G, B]: obs [G, H+1, B, D], action [G, H, B, A], reward [G, H, B]."""
        g, b = rows.shape
        index = torch.from_numpy(rows[:, None, :] + np.arange(horizon + 1)[None, :, None])
        step_index = index[:, :horizon].reshape(-1)
        obs = torch.empty((g, horizon + 1, b, self.obs.shape[1]), pin_memory=pin_memory)
        action = torch.empty((g, horizon, b, self.action.shape[1]), pin_memory=pin_memory)
        reward = torch.empty((g, horizon, b), pin_memory=pin_memory)
        torch.index_select(self._obs_t, 0, index.reshape(-1), out=obs.view(-1, obs.shape[-1]))
        torch.index_select(self._action_t, 0, step_index, out=action.view(-1, action.shape[-1]))
        torch.index_select(self._reward_t, 0, step_index, out=reward.view(-1))
        return obs, action, reward


def check_decoded(
    ds: Dataset,
    piece: Piece,
    start: int,
    data: dict[str, np.ndarray],
    format_checked: bool = False,
) -> None:
    """Raise `DatasetError` (shard, episode, field) when decoded episodes break the format or
    are not the piece's task: a damaged dataset stops the loader before a batch holds it.
    One pass over bytes just decoded (bench/validation.py measures the cost);
    ``format_checked``: the read holding ``data`` was checked already, only the task is."""
    if not format_checked:
        ds.check_decoded(piece.shard, start, data)
    where = f"{ds.location}/{ds.shards[piece.shard].path}"
    wrong = np.flatnonzero(data["task"] != piece.dataset_task)
    if wrong.size:
        raise DatasetError(
            f"{where}: episode {start + int(wrong[0])} has task id {int(data['task'][wrong[0]])}, "
            f"the root index says {piece.dataset_task} ({ds.tasks[piece.dataset_task]!r}); run "
            "tdmpc2-data verify"
        )


#: The arrays the loader decodes.
READ_FIELDS = ("obs", "action", "reward", "task")


class _ChunkReads:
    """Decoded episodes of one shard, read on the stored chunk grid; the last read is kept
    for the next request that falls inside it (pieces are read in storage order)."""

    FIELDS = READ_FIELDS

    def __init__(self, datasets: Sequence[Dataset]) -> None:
        self.datasets = datasets
        self.key: tuple[int, int] | None = None
        self.lo = self.hi = 0
        self.data: dict[str, np.ndarray] = {}

    def get(self, piece: Piece, start: int, stop: int, reach: int) -> dict[str, np.ndarray]:
        """Episodes start..stop of ``piece``'s shard; a new read extends to ``reach`` (where
        the next pieces of the block in this shard end, see `_read_ahead`)."""
        key = (piece.dataset, piece.shard)
        if key != self.key or not (self.lo <= start and stop <= self.hi):
            ds = self.datasets[piece.dataset]
            chunk = ds.array(piece.shard, "obs").chunks[0]
            lo = start // chunk * chunk
            hi = min(-(-max(stop, reach) // chunk) * chunk, ds.shards[piece.shard].episodes)
            self.data = {}  # free the previous read first
            self.data = ds.read_shard(piece.shard, self.FIELDS, episodes=slice(lo, hi))
            ds.check_decoded(piece.shard, lo, self.data)
            self.key, self.lo, self.hi = key, lo, hi
        rows = slice(start - self.lo, stop - self.lo)
        return {k: v[rows] for k, v in self.data.items()}


def _read_ahead(pieces: Sequence[Piece], datasets: Sequence[Dataset], read_bytes: int) -> list[int]:
    """For pieces in storage order: how far a read starting at each may go (the end of its
    `_read_ranges` step) so that the next pieces of the block in the same shard, the runs of a
    view a few episodes each, come from the same read."""
    out = []
    j = 0
    for k, p in enumerate(pieces):
        step = _read_step(datasets[p.dataset], p, read_bytes)
        limit = (p.start // step + 1) * step
        j = max(j, k)
        while (
            j + 1 < len(pieces)
            and (pieces[j + 1].dataset, pieces[j + 1].shard) == (p.dataset, p.shard)
            and pieces[j + 1].stop <= limit
        ):
            j += 1
        out.append(min(pieces[j].stop, limit))
    return out


def _read_step(ds: Dataset, piece: Piece, read_bytes: int) -> int:
    """Episodes per read: about ``read_bytes`` of obs, whole stored chunks (at least one)."""
    chunk = ds.array(piece.shard, "obs").chunks[0]
    per_episode = (piece.length + 1) * ds.obs_dim * 4
    return max(1, read_bytes // (per_episode * chunk)) * chunk


def _read_ranges(ds: Dataset, piece: Piece, read_bytes: int) -> list[tuple[int, int]]:
    """Episode ranges of ``piece`` of about ``read_bytes`` of obs each (at least one stored
    chunk), cut on the stored chunk grid so that no chunk is decoded twice."""
    step = _read_step(ds, piece, read_bytes)
    cuts = [piece.start, *range((piece.start // step + 1) * step, piece.stop, step), piece.stop]
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def _libc_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _libc_malloc_trim()


def _release_free_memory() -> None:
    """Hand freed decode buffers back to the OS. glibc keeps freed memory in one arena per
    thread, which with several decode and batch threads adds tens of MB above the budget
    (measured: 32 MB budget, 2 workers: +50% without, +15% with)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
