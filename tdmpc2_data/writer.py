"""`ShardWriter`: append whole episodes to a local shard dataset, safely and concurrently.

Shards are written to a temp directory and renamed into place; root attributes change under
a lock. Why it is crash-safe and cheap for online agents: docs/design.md#the-shard-writer.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import os
import shutil
import socket
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.storage import LocalStore

from tdmpc2_data import schema
from tdmpc2_data.atomic import naming_path, remove_tree, write_text_atomic
from tdmpc2_data.jsonfile import read_json
from tdmpc2_data.schema import SHARDS_DIR, UNKNOWN, DatasetError, shard_path
from tdmpc2_data.tasks import ACTION_LIMIT, Task, table_index

LOCK_NAME = ".tdmpc2.lock"
TMP_PREFIX = ".tmp-"


def _temp_path(directory: Path, suffix: str = "") -> Path:
    """A unique temp name that says which host and process made it (for stale cleanup)."""
    return (
        directory / f"{TMP_PREFIX}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}{suffix}"
    )


def _created_by() -> str:
    from tdmpc2_data.versions import __version__

    return f"tdmpc2-toolkit {__version__}"


# ------------------------------------------------------------------ root metadata I/O
def read_root_attributes(root: Path) -> dict[str, Any]:
    path = root / "zarr.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not a shard dataset (no zarr.json)")
    meta = read_json(path, schema.ROOT_INDEX_BYTES, DatasetError, "dataset index")
    attrs = meta.get("attributes", {})
    schema.check_root_attributes(attrs, str(path))
    return attrs


def write_root_attributes(root: Path, attrs: Mapping[str, Any]) -> None:
    """Replace the root ``zarr.json`` atomically (temp file + fsync + rename)."""
    meta = {"zarr_format": 3, "node_type": "group", "attributes": dict(attrs)}
    text = json.dumps(meta, indent=1)
    write_text_atomic(root / "zarr.json", text, fsync=True, tmp=_temp_path(root, ".json"))


@contextmanager
def root_lock(root: Path) -> Iterator[None]:
    """Exclusive lock for read-modify-write of the root attributes (all writer processes)."""
    with open(root / LOCK_NAME, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def removed_if_left_empty(dst: str | os.PathLike) -> Iterator[None]:
    """A first write into ``dst`` (a new dataset) that fails before any shard exists leaves no
    empty dataset behind: its root index, lock and ``shards/`` go, and the directory too if
    it did not exist before."""
    root = Path(dst)
    existed, new = root.exists(), not (root / "zarr.json").exists()
    try:
        yield
    except BaseException:
        if new and root.is_dir() and not shard_names(root):
            (root / "zarr.json").unlink(missing_ok=True)
            (root / LOCK_NAME).unlink(missing_ok=True)
            shutil.rmtree(root / SHARDS_DIR, ignore_errors=True)
            if not existed and not any(root.iterdir()):
                root.rmdir()
        raise


def shard_names(root: Path) -> list[str]:
    """Final shard directory names on disk (temp directories excluded), sorted."""
    d = root / SHARDS_DIR
    if not d.is_dir():
        return []
    return sorted(n for n in os.listdir(d) if n.isdigit() and (d / n).is_dir())


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _shard_meta(root: Path, name: str, node: str = "") -> dict[str, Any]:
    """The parsed ``zarr.json`` of shard ``name`` (or of its array ``node``)."""
    path = root / SHARDS_DIR / name / node / "zarr.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise DatasetError(
            f"{path}: unreadable shard metadata ({exc!r}); run tdmpc2-data verify"
        ) from None


def index_entry(root: Path, name: str) -> dict[str, Any]:
    """The root index entry of shard ``name``, from its group attributes, checked against
    the shape of its obs array so that damaged attributes never reach the root index."""
    path = root / SHARDS_DIR / name / "zarr.json"
    try:
        attrs = _shard_meta(root, name)["attributes"]
        episodes, length = int(attrs["episodes"]), int(attrs["episode_length"])
        counts = {str(k): int(v) for k, v in attrs["task_counts"].items()}
        shape = tuple(_shard_meta(root, name, "obs")["shape"][:2])
    except DatasetError:  # unreadable: says so itself
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DatasetError(f"{path}: unreadable shard attributes ({exc!r})") from None
    if shape != (episodes, length + 1) or sum(counts.values()) != episodes:
        raise DatasetError(
            f"{path}: says {episodes} episodes of length {length} ({counts} per task id), but "
            f"its obs array holds {shape[0]} episodes of {shape[1] - 1} steps; run tdmpc2-data "
            "verify"
        )
    return {
        "path": f"{SHARDS_DIR}/{name}",
        "episodes": episodes,
        "episode_length": length,
        "transitions": episodes * length,
        "task_counts": counts,
        "nbytes": _dir_bytes(root / SHARDS_DIR / name),
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temps(root: Path) -> None:
    """Delete temp shards/files of crashed writers on this host (their pid no longer exists)."""
    host = socket.gethostname()
    for d in (root, root / SHARDS_DIR):
        for name in os.listdir(d) if d.is_dir() else ():
            parts = name[len(TMP_PREFIX) :].rsplit("-", 2)
            if name.startswith(TMP_PREFIX) and len(parts) == 3 and parts[0] == host:
                if parts[1].isdigit() and not _pid_alive(int(parts[1])):
                    path = d / name
                    if path.is_dir():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)


def finalize(root: str | os.PathLike) -> dict[str, Any]:
    """Rebuild the root ``shards`` index from the shards on disk; returns the root attributes.

    Also removes shards already merged into another by ``compact()`` and temp directories of
    writers that died.
    """
    root = Path(root)
    with root_lock(root):
        return _finalize_locked(root)


def _finalize_locked(root: Path) -> dict[str, Any]:
    attrs = read_root_attributes(root)
    _remove_stale_temps(root)
    _remove_merged(root)
    attrs["shards"] = [index_entry(root, n) for n in shard_names(root)]
    write_root_attributes(root, attrs)
    return attrs


def compact(root: str | os.PathLike, episodes_per_shard: int | None = None) -> list[str]:
    """Merge small shards of equal episode length into shards of up to ``episodes_per_shard``
    episodes (default ~128 MiB of obs); returns the new shard names.

    For online agents that flush every episode. Crash-safe: the merged shard names its
    inputs (``merged_from``) and appears atomically; the inputs are deleted only after that,
    by this call or by the next ``finalize()``.
    """
    root = Path(root)
    created = []
    with root_lock(root):  # one compaction at a time; writers only wait to index new shards
        attrs = read_root_attributes(root)
        if _upgrade_minor(attrs):
            write_root_attributes(root, attrs)
        groups: dict[tuple[int, str], list[tuple[str, int]]] = defaultdict(list)
        for name in shard_names(root):
            group = zarr.open_group(LocalStore(root / SHARDS_DIR / name), mode="r")
            length = group.attrs["episode_length"]
            limit = episodes_per_shard or _default_episodes_per_shard(length, attrs["obs_dim"])
            if group.attrs["episodes"] < limit:
                groups[(length, str(group["obs"].dtype))].append((name, group.attrs["episodes"]))
        for (length, _), small in sorted(groups.items()):
            limit = episodes_per_shard or _default_episodes_per_shard(length, attrs["obs_dim"])
            batch: list[str] = []
            total = 0
            for name, n in small + [("", limit + 1)]:  # sentinel flushes the last batch
                if total + n > limit:
                    if len(batch) > 1:
                        created.append(_merge(root, batch))
                    batch, total = [], 0
                batch.append(name)
                total += n
        _finalize_locked(root)
    return created


def _merge(root: Path, names: list[str]) -> str:
    groups = [zarr.open_group(LocalStore(root / SHARDS_DIR / n), mode="r") for n in names]
    fields = [f for f in schema.FIELDS if any(f in g for g in groups)]
    parts: dict[str, list[np.ndarray]] = {f: [] for f in fields}
    for g in groups:
        n, length = g.attrs["episodes"], g.attrs["episode_length"]
        for f in fields:
            if f in g:
                parts[f].append(g[f][...])
            elif f == "success":
                parts[f].append(np.zeros((n, length), bool))
            elif f in ("source", "source_index"):
                parts[f].append(np.full(n, UNKNOWN, schema.FIELDS[f].dtypes[0]))
            else:  # episode_return / episode_success: recomputed below
                parts[f].append(np.zeros(n, schema.FIELDS[f].dtypes[0]))
    arrays = {f: np.concatenate(v) for f, v in parts.items()}
    arrays.update(schema.episode_summaries(arrays["reward"], arrays.get("success")))
    order = np.argsort(arrays["task"], kind="stable")
    arrays = {f: v[order] for f, v in arrays.items()}
    return write_shard(root, arrays, shard_attributes(arrays, merged_from=names))


def _remove_merged(root: Path) -> None:
    """Delete shards that a completed ``compact()`` merged into another shard."""
    names = set(shard_names(root))
    for name in sorted(names):
        for old in _shard_meta(root, name).get("attributes", {}).get("merged_from", []):
            if old in names:
                remove_tree(root / SHARDS_DIR / old)
                names.discard(old)


# ------------------------------------------------------------------ shard I/O
def _fsync_tree(path: Path) -> None:
    for dirpath, _, files in os.walk(path):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        fd = os.open(dirpath, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)


def write_shard(
    root: Path,
    arrays: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    compressors: Callable[[int], list] = schema.compressors,
    chunk_bytes: int = schema.CHUNK_TARGET_BYTES,
) -> str:
    """Write one shard atomically; returns its final name (``nnnnnn``).

    ``compressors(itemsize)`` gives each array's codecs (bench/convert.py tries others).
    """
    shards = root / SHARDS_DIR
    shards.mkdir(exist_ok=True)
    tmp = _temp_path(shards)
    obs = arrays["obs"]
    episodes, length, obs_dim = obs.shape[0], obs.shape[1] - 1, obs.shape[2]
    per_chunk = min(episodes, schema.chunk_episodes(length, obs_dim, chunk_bytes))
    padded_e = -(-episodes // per_chunk) * per_chunk  # shard shape must be a multiple
    try:
        with naming_path(shards):
            group = zarr.open_group(LocalStore(tmp), mode="w", attributes=dict(attrs))
            for name, data in arrays.items():
                one_chunk = data.ndim == 1  # task/source: tiny, one chunk
                group.create_array(
                    name,
                    shape=data.shape,
                    dtype=data.dtype,
                    chunks=(padded_e,) if one_chunk else (per_chunk, *data.shape[1:]),
                    shards=(padded_e, *data.shape[1:]),
                    compressors=compressors(data.dtype.itemsize),
                    fill_value=0,
                    # every file exists: a missing one is damage
                    config={"write_empty_chunks": True},
                )[...] = data
            _fsync_tree(tmp)
            return _claim_name(tmp, shards)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _claim_name(tmp: Path, shards: Path) -> str:
    """Rename ``tmp`` to the next free shard number (atomic; retries if another writer won)."""
    existing = shard_names(shards.parent)
    index = int(existing[-1]) + 1 if existing else 0
    while True:
        target = shards / f"{index:06d}"
        try:
            if target.exists():
                raise FileExistsError
            os.rename(tmp, target)
        except OSError as exc:
            if not isinstance(exc, FileExistsError) and exc.errno not in (
                errno.ENOTEMPTY,
                errno.EEXIST,
            ):
                raise
            index += 1
            continue
        fd = os.open(shards, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        return target.name


# ------------------------------------------------------------------ the writer
class ShardWriter:
    """Append whole episodes of the dataset's tasks to a shard dataset (created if missing).

    Args:
        root: local dataset directory.
        tasks: task table of a new dataset (registry names, Task objects, or dicts with
            name/obs_dim/action_dim for tasks outside the registry); order = task ids. For an
            existing dataset: None, or names that must all be in its table.
        name: dataset name (default: the directory name).
        obs_dim, action_dim: padded widths (default: the widest task).
        episodes_per_shard: shard size (default: ~128 MiB of uncompressed obs).
        sources: provenance dicts (agent, seed, file ...); added to the root ``sources``
            unless an equal one is there. ``add_episode(source=i)`` refers to ``sources[i]``.
        obs_dtype: "float32" (default) or "float16".
    """

    def __init__(
        self,
        root: str | os.PathLike,
        tasks: Sequence[str | Task | Mapping[str, Any]] | None = None,
        name: str | None = None,
        obs_dim: int | None = None,
        action_dim: int | None = None,
        episodes_per_shard: int | None = None,
        sources: Sequence[Mapping[str, Any]] | None = None,
        obs_dtype: str = "float32",
        compression_level: int = 1,
    ) -> None:
        self.root = Path(root)
        if obs_dtype not in schema.FIELDS["obs"].dtypes:
            raise ValueError(
                f"obs_dtype={obs_dtype!r}; expected one of {schema.FIELDS['obs'].dtypes}"
            )
        self.obs_dtype = np.dtype(obs_dtype)
        self.compression_level = compression_level
        self.episodes_per_shard = episodes_per_shard
        self.root.mkdir(parents=True, exist_ok=True)
        with root_lock(self.root):
            if (self.root / "zarr.json").exists():
                attrs = read_root_attributes(self.root)
                self._check_reopen(attrs, tasks, obs_dim, action_dim)
                _upgrade_minor(attrs)  # shards written from now on have this minor's arrays
            else:
                if not tasks:
                    raise ValueError(f"{self.root}: a new dataset needs `tasks`.")
                attrs = schema.root_attributes(
                    name or self.root.name, tasks, obs_dim, action_dim, _created_by()
                )
            self._source_ids = [_register_source(attrs, s) for s in sources or ()]
            write_root_attributes(self.root, attrs)
        (self.root / SHARDS_DIR).mkdir(exist_ok=True)
        self.name: str = attrs["name"]
        self.task_info: list[dict[str, Any]] = attrs["tasks"]
        self.obs_dim: int = attrs["obs_dim"]
        self.action_dim: int = attrs["action_dim"]
        self._table = [t["name"] for t in self.task_info]
        # buffer[T][task_id] -> list of (obs, action, reward, success|None, source,
        # source_index|None) batches
        self._buffer: dict[int, dict[int, list[tuple]]] = defaultdict(lambda: defaultdict(list))
        self._buffered: dict[int, int] = defaultdict(int)
        self.shards_written: list[str] = []
        self._registered: dict[str, int] = {}

    def _check_reopen(self, attrs, tasks, obs_dim, action_dim) -> None:
        where = self.root / "zarr.json"
        table = [t["name"] for t in attrs["tasks"]]
        for t in tasks or ():
            name = schema.task_entry(t, 0)["name"]
            if name not in table:
                raise ValueError(
                    f"{where}: task {name!r} is not in this dataset's task table {table}."
                )
        for key, value in (("obs_dim", obs_dim), ("action_dim", action_dim)):
            if value is not None and value != attrs[key]:
                raise ValueError(f"{where}: {key}={value} given, but the dataset has {attrs[key]}.")

    # -------------------------------------------------------------- public API
    def task_id(self, task: str | int) -> int:
        """Dataset-local id of a task name (full, alias or short) or id."""
        return table_index(self._table, task, f"the task table of {self.root}")

    def add_episode(
        self,
        task: str | int,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        success: np.ndarray | None = None,
        source: int | Mapping[str, Any] | None = None,
        source_index: int | None = None,
    ) -> None:
        """Buffer one episode: obs [T+1, d], action [T, a], reward [T], success [T] (optional).

        ``d``/``a`` are the task's real widths or the dataset's padded widths (then the
        padding must be zero). ``source``: index into the writer's ``sources`` or a dict.
        ``source_index``: the episode's position in its source (episode number of the agent
        that made it, row of the file: its training progress); None: unknown. Its return and
        success are recorded by the writer (``schema.episode_summaries``).
        """
        self.add_episodes(
            task,
            np.asarray(obs)[None],
            np.asarray(action)[None],
            np.asarray(reward)[None],
            None if success is None else np.asarray(success)[None],
            source,
            source_index,
        )

    def add_episodes(
        self,
        task: str | int,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        success: np.ndarray | None = None,
        source: int | Mapping[str, Any] | None = None,
        source_index: int | np.ndarray | None = None,
    ) -> None:
        """Buffer E episodes of one task and one length: obs [E, T+1, d], action [E, T, a],
        reward [E, T]; ``source_index``: the first episode's position in its source (the
        others follow it) or one per episode [E]."""
        tid = self.task_id(task)
        info = self.task_info[tid]
        where = f"episode of task {info['name']!r} for {self.root}"
        action = np.asarray(action)
        if action.ndim != 3 or action.shape[1] < 1:
            raise ValueError(
                f"{where}: action has shape {action.shape[1:]}; expected (T, a) with T >= 1."
            )
        episodes, length = action.shape[:2]
        obs = self._pad(
            where, "obs", obs, episodes, length + 1, info["obs_dim"], self.obs_dim, self.obs_dtype
        )
        action = self._pad(
            where,
            "action",
            action,
            episodes,
            length,
            info["action_dim"],
            self.action_dim,
            np.float32,
        )
        _in_action_range(where, action)
        reward = np.asarray(reward)
        _expect_shape(where, "reward", reward, (episodes, length))
        reward = _finite(where, "reward", reward.astype(np.float32))
        if success is not None:
            success = np.asarray(success)
            _expect_shape(where, "success", success, (episodes, length))
            success = success.astype(bool)
        source_id = self._source_id(source)
        index = _source_indices(where, source_index, episodes)
        self._buffer[length][tid].append((obs, action, reward, success, source_id, index))
        self._buffered[length] += episodes
        limit = self.episodes_per_shard or _default_episodes_per_shard(length, self.obs_dim)
        while self._buffered[length] >= limit:
            self._write(length, limit)

    def flush(self) -> list[str]:
        """Write every buffered episode now (one shard per episode length); returns new shard names."""
        before = len(self.shards_written)
        for length in sorted(self._buffered):
            while self._buffered[length]:
                self._write(length, self._buffered[length])
        return self.shards_written[before:]

    def discard_buffer(self) -> None:
        """Forget the episodes not written yet (e.g. a conversion that failed halfway)."""
        self._buffer.clear()
        self._buffered.clear()

    def finalize(self) -> dict[str, Any]:
        """Flush, then rebuild the root index from disk; returns the root attributes."""
        self.flush()
        return finalize(self.root)

    def close(self) -> None:
        self.finalize()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def source_id(self, info: Mapping[str, Any]) -> int:
        """Root ``sources`` id of a provenance dict (added if no equal entry exists)."""
        key = json.dumps(info, sort_keys=True, default=str)
        if key not in self._registered:
            with root_lock(self.root):
                attrs = read_root_attributes(self.root)
                self._registered[key] = _register_source(attrs, info)
                write_root_attributes(self.root, attrs)
        return self._registered[key]

    def update_source(self, source_id: int, **fields: Any) -> None:
        """Set fields of a ``sources`` entry (e.g. ``complete=True`` after a converted file)."""
        with root_lock(self.root):
            attrs = read_root_attributes(self.root)
            attrs["sources"][source_id].update(fields)
            write_root_attributes(self.root, attrs)

    def sources(self) -> list[dict[str, Any]]:
        """The root ``sources`` list as on disk now."""
        return read_root_attributes(self.root)["sources"]

    def discard_source(self, source_id: int) -> list[str]:
        """Delete every shard whose episodes all come from ``source_id`` (an interrupted
        conversion being redone); returns the deleted shard names."""
        removed = []
        with root_lock(self.root):
            for name in shard_names(self.root):
                meta = _shard_meta(self.root, name)
                if meta.get("attributes", {}).get("sources") == [source_id]:
                    remove_tree(self.root / SHARDS_DIR / name)
                    removed.append(name)
        finalize(self.root)
        return removed

    # -------------------------------------------------------------- internals
    def _pad(self, where, field, x, episodes, steps, real, padded, dtype) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[:2] != (episodes, steps) or x.shape[2] not in (real, padded):
            widths = f"{real}" if real == padded else f"{real} (the task's) or {padded} (padded)"
            raise ValueError(
                f"{where}: {field} has shape {x.shape[1:]}; expected ({steps}, d) with d = {widths}."
            )
        if x.shape[2] > real and np.any(x[..., real:]):
            raise ValueError(
                f"{where}: {field}[..., {real}:] is padding for this task (its {field} dim is "
                f"{real}) and must be exactly zero."
            )
        return _finite(where, field, schema.zero_pad(x[..., :real], padded, dtype))

    def _source_id(self, source: int | Mapping[str, Any] | None) -> int:
        if source is None:
            return self._source_ids[0] if len(self._source_ids) == 1 else -1
        if isinstance(source, Mapping):
            return self.source_id(source)
        if not 0 <= source < len(self._source_ids):
            raise ValueError(
                f"source={source}, but the writer was given {len(self._source_ids)} sources."
            )
        return self._source_ids[source]

    def _write(self, length: int, count: int) -> None:
        """Write the first ``count`` buffered episodes of length ``length`` (task order) as one
        shard; the buffer keeps them until the shard is safely on disk."""
        taken, need = [], count
        for tid in sorted(self._buffer[length]):
            for batch in self._buffer[length][tid]:
                n = min(need, batch[0].shape[0])
                taken.append((tid, _rows(batch, slice(0, n))))
                need -= n
                if not need:
                    break
            if not need:
                break
        arrays = _concat(taken)
        codecs = functools.partial(schema.compressors, level=self.compression_level)
        name = write_shard(self.root, arrays, shard_attributes(arrays), codecs)
        for tid, written in taken:  # now drop what was written
            batches = self._buffer[length][tid]
            batches[0] = _rows(batches[0], slice(written[0].shape[0], None))
            if not batches[0][0].shape[0]:
                batches.pop(0)
            if not batches:
                del self._buffer[length][tid]
        self._buffered[length] -= count
        if not self._buffered[length]:
            del self._buffered[length], self._buffer[length]
        self.shards_written.append(name)
        with root_lock(self.root):
            attrs = read_root_attributes(self.root)
            path = shard_path(int(name))
            # gone: another process's compaction merged it before this lock, and indexed the
            # merged shard; already there: its finalize indexed it
            if (self.root / path).is_dir() and all(s["path"] != path for s in attrs["shards"]):
                attrs["shards"].append(index_entry(self.root, name))
                write_root_attributes(self.root, attrs)


def shard_attributes(arrays: Mapping[str, np.ndarray], **extra: Any) -> dict[str, Any]:
    """Shard group attributes: sizes, episodes per task id, root source ids used."""
    ids, sizes = np.unique(arrays["task"], return_counts=True)
    sources = np.unique(arrays["source"]) if "source" in arrays else []
    return {
        "episodes": int(arrays["task"].shape[0]),
        "episode_length": int(arrays["reward"].shape[1]),
        "task_counts": {str(t): int(n) for t, n in zip(ids, sizes, strict=True)},
        "sources": [int(x) for x in sources if x >= 0],
        **extra,
    }


def _default_episodes_per_shard(length: int, obs_dim: int) -> int:
    return max(1, schema.SHARD_TARGET_BYTES // ((length + 1) * obs_dim * 4))


def _rows(batch: tuple, rows: slice) -> tuple:
    """Episodes ``rows`` of a buffered (obs, action, reward, success, source_id,
    source_index) batch."""
    obs, action, reward, success, source, index = batch
    return (
        obs[rows],
        action[rows],
        reward[rows],
        None if success is None else success[rows],
        source,
        None if index is None else index[rows],
    )


def _concat(taken: list[tuple]) -> dict[str, np.ndarray]:
    """Concatenate buffered batches into shard arrays (one copy)."""
    arrays = {
        "obs": np.concatenate([b[0] for _, b in taken]),
        "action": np.concatenate([b[1] for _, b in taken]),
        "reward": np.concatenate([b[2] for _, b in taken]),
        "task": np.concatenate([np.full(b[0].shape[0], t, np.int16) for t, b in taken]),
    }
    if any(b[3] is not None for _, b in taken):
        arrays["success"] = np.concatenate(
            [b[3] if b[3] is not None else np.zeros(b[2].shape, bool) for _, b in taken]
        )
    if any(b[4] >= 0 for _, b in taken):
        arrays["source"] = np.concatenate(
            [np.full(b[0].shape[0], b[4], np.int32) for _, b in taken]
        )
    if any(b[5] is not None for _, b in taken):
        arrays["source_index"] = np.concatenate(
            [b[5] if b[5] is not None else np.full(b[0].shape[0], UNKNOWN) for _, b in taken]
        )
    arrays.update(schema.episode_summaries(arrays["reward"], arrays.get("success")))
    return arrays


def _source_indices(where: str, given: int | np.ndarray | None, episodes: int) -> np.ndarray | None:
    """int64 [E] positions in the source of a batch of ``episodes`` (None: unknown)."""
    if given is None:
        return None
    index = np.asarray(given)
    if index.ndim == 0:
        index = int(index) + np.arange(episodes)
    if index.shape != (episodes,) or (index.size and index.min() < 0):
        raise ValueError(
            f"{where}: source_index {given!r}; expected an integer >= 0 (the first episode's "
            f"position in its source) or {episodes} of them."
        )
    return index.astype(np.int64)


def _upgrade_minor(attrs: dict[str, Any]) -> bool:
    """Raise the root's format minor to this writer's (never lower it); whether it changed."""
    if attrs.get("tdmpc2_format_minor", 0) >= schema.FORMAT_MINOR:
        return False
    attrs["tdmpc2_format_minor"] = schema.FORMAT_MINOR
    return True


def _register_source(attrs: dict[str, Any], info: Mapping[str, Any]) -> int:
    """Id of the entry of ``attrs['sources']`` equal to ``info`` (ignoring id/complete), appended if new."""

    def key(d: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k not in ("id", "complete")}

    wanted = json.loads(json.dumps(key(info)))  # normalise tuples etc. as stored
    for entry in attrs["sources"]:
        if key(entry) == wanted:
            return entry["id"]
    sid = len(attrs["sources"])
    attrs["sources"].append({"id": sid, **json.loads(json.dumps(dict(info)))})
    return sid


def _expect_shape(where: str, field: str, x: np.ndarray, shape: tuple) -> None:
    if x.shape != shape:
        raise ValueError(f"{where}: {field} has shape {x.shape[1:]}; expected {shape[1:]}.")


def _in_action_range(where: str, action: np.ndarray) -> None:
    """Refuse actions outside the tasks' range: a source with other bounds (e.g. [-2, 2])
    would train a model whose planner can never reproduce them."""
    if schema.actions_out_of_range(action).any():
        raise ValueError(
            f"{where}: action values reach {float(np.abs(action).max()):g}; TD-MPC2 tasks act "
            f"in [-{ACTION_LIMIT:g}, {ACTION_LIMIT:g}]. Rescale the source's actions to that range."
        )


def _finite(where: str, field: str, x: np.ndarray) -> np.ndarray:
    if not np.isfinite(x).all():
        raise ValueError(f"{where}: {field} contains NaN or inf.")
    return x
