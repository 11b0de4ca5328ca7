"""`open_dataset`: a lazy reader of shard datasets on a local disk or any fsspec URL (``hf://``).

Only the root ``zarr.json`` is read on open; shard arrays are opened on first use and
decoded on demand, so planning (sizes, task balance, DDP splits) costs one small request.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.abc.store import Store
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore

from tdmpc2_data import schema
from tdmpc2_data.jsonfile import check_size, refused_when_too_deep
from tdmpc2_data.schema import SHARDS_DIR, DatasetError
from tdmpc2_data.tasks import table_index

if TYPE_CHECKING:
    from tdmpc2_data.curate import DatasetView

DEFAULT_FIELDS = ("obs", "action", "reward", "task")


@dataclass(frozen=True)
class ShardInfo:
    """One entry of the root ``shards`` index. Episodes in a shard are ordered by task id."""

    path: str
    episodes: int
    episode_length: int
    transitions: int
    task_counts: dict[int, int]
    nbytes: int | None = None

    @property
    def task_ranges(self) -> dict[int, range]:
        """Episode range of each task inside this shard (shards are written in task order)."""
        ranges, start = {}, 0
        for tid in sorted(self.task_counts):
            ranges[tid] = range(start, start + self.task_counts[tid])
            start += self.task_counts[tid]
        return ranges


#: fsspec read-ahead for remote stores (bytes).
REMOTE_BLOCK_SIZE = 1 << 16


class Dataset:
    """A shard dataset opened for reading; see ``open_dataset``."""

    def __init__(
        self, location: str, storage_options: dict[str, Any] | None = None, check_index: bool = True
    ) -> None:
        self.location = location
        self.storage_options = storage_options
        self._arrays: dict[tuple[int, str], zarr.Array] = {}
        self._metadata: dict[int, dict[str, np.ndarray]] = {}
        where = f"{location}/zarr.json"
        if isinstance(self.store, LocalStore):
            check_size(Path(self.store.root) / "zarr.json", schema.ROOT_INDEX_BYTES, DatasetError,
                       "dataset index")  # fmt: skip
        try:
            with refused_when_too_deep(where, DatasetError):
                group = zarr.open_group(self.store, mode="r")
        except FileNotFoundError:
            raise FileNotFoundError(f"{where}: not found; is {location} a shard dataset?") from None
        except (ValueError, KeyError, TypeError) as exc:  # garbage bytes, or not a group
            raise DatasetError(f"{where}: not valid JSON group metadata ({exc!r:.200})") from None
        self.attrs: dict[str, Any] = group.attrs.asdict()
        schema.check_root_attributes(self.attrs, where)
        for entry in self.attrs["shards"]:
            schema.check_index_entry(entry, where, len(self.attrs["tasks"]))
        self.name: str = self.attrs["name"]
        self.obs_dim: int = int(self.attrs["obs_dim"])
        self.action_dim: int = int(self.attrs["action_dim"])
        self.task_info: list[dict[str, Any]] = list(self.attrs["tasks"])
        self.tasks: list[str] = [t["name"] for t in self.task_info]
        self.shards: list[ShardInfo] = [
            ShardInfo(
                path=s["path"],
                episodes=int(s["episodes"]),
                episode_length=int(s["episode_length"]),
                transitions=int(s["transitions"]),
                task_counts={int(k): int(v) for k, v in s["task_counts"].items()},
                nbytes=s.get("nbytes"),
            )
            for s in self.attrs["shards"]
        ]
        if check_index:
            self._check_index()

    # -------------------------------------------------------------- storage
    @cached_property
    def store(self) -> Store:
        if "://" in self.location and not self.location.startswith("file://"):
            # Inner chunks are ~512 KiB: fsspec's default 5 MB read-ahead would fetch ~24x the
            # bytes a ranged read needs over the network (measured in bench/hub.py).
            options = {"block_size": REMOTE_BLOCK_SIZE, **(self.storage_options or {})}
            return FsspecStore.from_url(self.location, storage_options=options, read_only=True)
        return LocalStore(self.location.removeprefix("file://"), read_only=True)

    def __getstate__(self) -> dict[str, Any]:
        """Picklable for DataLoader workers: stores and open arrays are re-created there."""
        state = self.__dict__.copy()
        state.pop("store", None)
        state["_arrays"] = {}
        state["_metadata"] = {}
        return state

    def _check_index(self) -> None:
        """Warn about shards on disk missing from the index; refuse indexed shards that are gone."""
        try:
            on_disk = {n for n in sync(_list_dir(self.store, SHARDS_DIR)) if n.isdigit()}
        except (FileNotFoundError, NotImplementedError):
            on_disk = set()
        indexed = {s.path.split("/")[-1] for s in self.shards}
        gone = sorted(indexed - on_disk)
        if gone:
            raise DatasetError(
                f"{self.location}/zarr.json: the shards index lists {SHARDS_DIR}/{gone[0]}"
                f"{f' (and {len(gone) - 1} more)' if len(gone) > 1 else ''}, which is not on "
                "storage. The dataset is incomplete; re-download it or run finalize."
            )
        extra = sorted(on_disk - indexed)
        if extra:
            warnings.warn(
                f"{self.location}: {len(extra)} shard(s) on storage are not in the root index "
                f"({', '.join(f'{SHARDS_DIR}/{n}' for n in extra[:5])}); they are ignored. A "
                "writer is still running or stopped before indexing them; run "
                "`tdmpc2_data.format.finalize(dir)` (or close the writer) to index them.",
                stacklevel=3,
            )

    # -------------------------------------------------------------- metadata
    @property
    def num_episodes(self) -> int:
        return sum(s.episodes for s in self.shards)

    @property
    def num_transitions(self) -> int:
        return sum(s.transitions for s in self.shards)

    @property
    def nbytes(self) -> int:
        """Stored bytes of all shards (from the index)."""
        return sum(s.nbytes or 0 for s in self.shards)

    def task_id(self, name: str | int) -> int:
        """Dataset-local id of a task (id, full name, alias or unambiguous short name)."""
        return table_index(self.tasks, name, f"dataset {self.location}")

    def action_mask(self, task: str | int) -> np.ndarray:
        """float32 [A]: 1 on the task's real action dims, 0 on padding."""
        return self.action_masks()[self.task_id(task)]

    def action_masks(self) -> np.ndarray:
        """float32 [num_tasks, A]."""
        return schema.action_masks([t["action_dim"] for t in self.task_info], self.action_dim)

    def task_episodes(self, task: str | int) -> list[tuple[int, range]]:
        """(shard index, episode range) of every run of ``task``'s episodes."""
        tid = self.task_id(task)
        return [(i, s.task_ranges[tid]) for i, s in enumerate(self.shards) if tid in s.task_counts]

    def task_counts(self) -> dict[int, int]:
        """Episodes per task id over all shards."""
        counts: dict[int, int] = {}
        for s in self.shards:
            for k, v in s.task_counts.items():
                counts[k] = counts.get(k, 0) + v
        return counts

    # -------------------------------------------------------------- data
    def has_field(self, i: int, field: str) -> bool:
        """Whether shard ``i`` stores the optional ``field`` (success, source, ...)."""
        try:
            self.array(i, field)
        except KeyError:
            return False
        return True

    def array(self, i: int, field: str) -> zarr.Array:
        """Lazy zarr array ``field`` of shard ``i``; its shape and dtype are checked against the index."""
        key = (i, field)
        if key not in self._arrays:
            self._arrays[key] = self._open_array(self.shards[i], field)
        return self._arrays[key]

    def _open_array(self, shard: ShardInfo, field: str) -> zarr.Array:
        spec = schema.FIELDS.get(field)
        if spec is None:
            raise KeyError(f"Unknown shard field {field!r}; fields: {list(schema.FIELDS)}.")
        where = f"{self.location}/{shard.path}/{field}"
        try:
            arr = zarr.open_array(self.store, path=f"{shard.path}/{field}", mode="r")
        except FileNotFoundError:
            if spec.required:
                raise DatasetError(f"{where}: required array is missing.") from None
            raise KeyError(f"{where}: this shard has no {field!r} array.") from None
        except (ValueError, KeyError, TypeError) as exc:  # garbage or foreign metadata
            raise DatasetError(
                f"{where}/zarr.json: unreadable array metadata ({exc!r:.200})"
            ) from None
        expected = spec.shape(shard.episodes, shard.episode_length, self.obs_dim, self.action_dim)
        if arr.shape != expected:
            raise DatasetError(
                f"{where}: shape {arr.shape} disagrees with the attributes "
                f"(expected {expected} for {shard.episodes} episodes of length "
                f"{shard.episode_length}, obs_dim {self.obs_dim}, action_dim {self.action_dim})."
            )
        if str(arr.dtype) not in spec.dtypes:
            raise DatasetError(f"{where}: dtype {arr.dtype}, expected one of {spec.dtypes}.")
        if shard.episodes:  # writers write every chunk: a missing or empty file is damage,
            key = f"{shard.path}/{field}/{_first_chunk_key(arr)}"  # never fill values
            try:
                size = sync(self.store.getsize(key))
            except FileNotFoundError:
                size = None
            if size is None:
                raise DatasetError(
                    f"{where}: the data file is missing (only its metadata is there)."
                )
            if size == 0:
                raise DatasetError(
                    f"{where}: the data file is empty ({key}, 0 bytes: a truncated write or "
                    "copy); restore or re-download the shard."
                )
        return arr

    def read_shard(
        self,
        i: int,
        fields: tuple[str, ...] = DEFAULT_FIELDS,
        episodes: slice | None = None,
    ) -> dict[str, np.ndarray]:
        """Decoded arrays of shard ``i`` (optionally only a range of its episodes)."""
        out = {}
        for field in fields:
            arr = self.array(i, field)
            try:
                out[field] = arr[episodes if episodes is not None else slice(None)]
            except ValueError as exc:  # crc32c mismatch / undecodable chunk
                raise DatasetError(
                    f"{self.location}/{self.shards[i].path}/{field}: damaged data ({exc})"
                ) from exc
        return out

    def episode_metadata(self, i: int) -> dict[str, np.ndarray]:
        """The per-episode arrays [E] of shard ``i`` (``schema.PER_EPISODE``; never obs):
        ``task``, ``source`` and ``source_index`` (-1 where not recorded: shards written
        before format minor 1, or a writer not told), ``episode_return`` and, where the shard
        stores success, ``episode_success``. Shards written before minor 1 have their return
        and success computed from ``reward``/``success`` (a slower read). Cached."""
        if i not in self._metadata:
            present = [f for f in schema.PER_EPISODE if self.has_field(i, f)]
            out = self.read_shard(i, tuple(present))
            n = self.shards[i].episodes
            for f in ("source", "source_index"):
                if f not in out:
                    out[f] = np.full(n, schema.UNKNOWN, schema.FIELDS[f].dtypes[0])
            has_success = self.has_field(i, "success")
            if "episode_return" not in out or (has_success and "episode_success" not in out):
                steps = ("reward", "success") if has_success else ("reward",)
                data = self.read_shard(i, steps)
                out.update(schema.episode_summaries(data["reward"], data.get("success")))
            self._metadata[i] = out
        return self._metadata[i]

    def select(self, **filters: Any) -> DatasetView:
        """A `DatasetView` of the episodes passing ``filters`` (no data is copied); see
        ``tdmpc2_data.curate.select``."""
        from tdmpc2_data.curate import select

        return select(self, **filters)

    def check_decoded(self, i: int, start: int, data: dict[str, np.ndarray]) -> None:
        """Raise `DatasetError` naming shard ``i``, the episode (``start`` + index in
        ``data``) and the field when decoded episodes break the format
        (``schema.decoded_problems``): what reads data for training checks it first."""
        for e, problem in schema.decoded_problems(data, self.task_info, self.tasks):
            raise DatasetError(
                f"{self.location}/{self.shards[i].path}: {problem.format(episode=start + e)}; "
                "run tdmpc2-data verify"
            )

    def summary(self) -> str:
        """A table of tasks (episodes, transitions) and totals, for `tdmpc2-data info`."""
        episodes: dict[int, int] = {}
        steps: dict[int, int] = {}
        for s in self.shards:
            for k, n in s.task_counts.items():
                episodes[k] = episodes.get(k, 0) + n
                steps[k] = steps.get(k, 0) + n * s.episode_length
        lines = [
            f"{self.location}: dataset {self.name!r}, format "
            f"{'.'.join(map(str, schema.format_version(self.attrs)))}, "
            f"obs_dim {self.obs_dim}, action_dim {self.action_dim}",
            f"{'id':>3} {'task':<30} {'obs':>4} {'act':>4} {'episodes':>9} {'transitions':>12}",
        ]
        for k, t in enumerate(self.task_info):
            if k in episodes:
                lines.append(
                    f"{k:>3} {t['name']:<30} {t['obs_dim']:>4} {t['action_dim']:>4} "
                    f"{episodes[k]:>9} {steps[k]:>12}"
                )
        empty = len(self.tasks) - len(episodes)
        if empty:
            lines.append(f"    ({empty} of the {len(self.tasks)} tasks have no episodes)")
        lines.append(
            f"total: {len(self.shards)} shards, {self.num_episodes} episodes, "
            f"{self.num_transitions} transitions, {self.nbytes / 1e6:.1f} MB "
            f"({self.nbytes / max(1, self.num_transitions):.1f} bytes/transition)"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.location!r}, name={self.name!r}, tasks={len(self.tasks)}, "
            f"shards={len(self.shards)}, episodes={self.num_episodes}, "
            f"transitions={self.num_transitions})"
        )


def _first_chunk_key(arr: zarr.Array) -> str:
    return arr.metadata.encode_chunk_key((0,) * arr.ndim)


async def _list_dir(store: Store, prefix: str) -> list[str]:
    return [name async for name in store.list_dir(prefix)]


@dataclass(frozen=True)
class CombinedTable:
    """Several datasets read as one: their task tables united by name (in order of first
    appearance), each dataset's local -> combined task ids, and the widest widths."""

    tasks: list[dict[str, Any]]
    id_maps: list[np.ndarray]
    obs_dim: int
    action_dim: int


def combine_tables(datasets: Sequence[Dataset]) -> CombinedTable:
    """The united task table of ``datasets`` (the loader's and ``merge``'s); a task must have
    the same widths everywhere."""
    table: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    maps = []
    for ds in datasets:
        ids = []
        for t in ds.task_info:
            if t["name"] not in index:
                index[t["name"]] = len(table)
                table.append({k: v for k, v in t.items() if k != "id"})
            known = table[index[t["name"]]]
            if (known["obs_dim"], known["action_dim"]) != (t["obs_dim"], t["action_dim"]):
                raise DatasetError(
                    f"{ds.location}: task {t['name']!r} has obs_dim {t['obs_dim']}, action_dim "
                    f"{t['action_dim']}, but an earlier dataset has {known['obs_dim']}, "
                    f"{known['action_dim']}; they cannot be combined."
                )
            ids.append(index[t["name"]])
        maps.append(np.array(ids, np.int64))
    obs_dim = max(d.obs_dim for d in datasets)
    action_dim = max(d.action_dim for d in datasets)
    return CombinedTable(table, maps, obs_dim, action_dim)


def open_dataset(
    path_or_url: str | os.PathLike,
    storage_options: dict[str, Any] | None = None,
    check_index: bool = True,
) -> Dataset:
    """Open a shard dataset: a local directory or any fsspec URL zarr accepts.

    ``hf://datasets/OWNER/NAME@REV`` reads a Hub dataset at a branch, tag or commit (fsspec's
    ``HfFileSystem`` resolves the ``@REV`` part; URL-encode slashes, e.g. ``@refs%2Fpr%2F1``).
    ``check_index`` lists the shards directory once to warn about unindexed shards.
    """
    location = os.fspath(path_or_url)
    if "://" not in location:
        location = str(Path(location).resolve())
    return Dataset(location.rstrip("/"), storage_options, check_index)
