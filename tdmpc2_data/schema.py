"""The shard schema shared by the writer, the reader and `verify`: fields, codecs, root attributes.

See docs/design.md#the-shard-format for the format description. Everything here is pure
metadata (no I/O), so the three sides cannot disagree about shapes, dtypes or names.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr.codecs as zc

import tdmpc2_data.codecs  # noqa: F401  (every chunk read checks its declared size first)
from tdmpc2_data.tasks import ACTION_LIMIT, TASKS, Task, padded_dims, resolve_task_name

#: Major version (root ``tdmpc2_format``): a reader refuses majors it does not know.
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
#: Minor version (root ``tdmpc2_format_minor``, absent = 0): minors only add optional arrays
#: and attributes, so every minor of a supported major opens (a newer minor's additions are
#: ignored). 1 added the per-episode provenance arrays (``PER_EPISODE``).
FORMAT_MINOR = 1
SHARDS_DIR = "shards"
_SHARD_PATH = re.compile(rf"{SHARDS_DIR}/[0-9]+")

#: Inner chunks of ~512 KiB of obs: small enough for random episode reads, large enough that
#: per-chunk overhead and compression ratio do not suffer (bench/shard_codecs.py).
CHUNK_TARGET_BYTES = 512 << 10
#: Default shard size: ~128 MiB of uncompressed obs (a few tens of MB on disk per shard file).
SHARD_TARGET_BYTES = 128 << 20
#: the most bytes a root ``zarr.json`` may hold (mt80's index of ~4,000 shards holds about 3 MB)
ROOT_INDEX_BYTES = 1 << 28


class DatasetError(ValueError):
    """Bad or damaged data; the message names the file and the field."""


def decoded_problems(
    data: Mapping[str, np.ndarray], task_info: Sequence[Mapping[str, Any]], names: Sequence[str]
) -> Iterator[tuple[int, str]]:
    """(episode in ``data``, what is wrong) for decoded episodes (``task``, ``obs``,
    ``action``, ``reward`` arrays) that break the format: task ids outside the table, NaN/inf,
    actions outside the tasks' range, non-zero padding. A message has an ``{episode}``
    placeholder for the caller's episode numbering. Shared by `verify` and the loader, so it
    is written to cost little next to decoding: one sum per field finds a NaN/inf (an
    overflowing sum only triggers the exact search), and padding is read per task."""
    task = np.asarray(data["task"]).astype(np.int64)
    if task.size and (task.min() < 0 or task.max() >= len(names)):
        e = int(np.argwhere((task < 0) | (task >= len(names)))[0][0])
        yield e, f"task ids outside 0..{len(names) - 1} (episode {{episode}})"
        return
    for name in ("obs", "action", "reward"):
        if not np.isfinite(data[name].sum()):
            bad = ~np.isfinite(data[name])
            if bad.any():
                yield int(np.argwhere(bad)[0][0]), f"{name} has NaN/inf (episode {{episode}})"
    outside = actions_out_of_range(data["action"])
    if outside.any():
        yield (
            int(np.argwhere(outside)[0][0]),
            f"action outside [-{ACTION_LIMIT:g}, {ACTION_LIMIT:g}] (episode {{episode}})",
        )
    for tid in np.unique(task):
        episodes = np.flatnonzero(task == tid)
        rows = slice(None) if len(episodes) == len(task) else episodes
        for name in ("obs", "action"):
            dim = task_info[tid][f"{name}_dim"]
            pad = data[name][rows][..., dim:]
            if pad.size and pad.any():
                e, _, d = (int(x) for x in np.argwhere(pad)[0])
                yield (
                    int(episodes[e]),
                    (
                        f"{name} padding is not zero (episode {{episode}}, dim {dim + d} of task "
                        f"{names[tid]!r} whose {name} dim is {dim})"
                    ),
                )


def actions_out_of_range(action: np.ndarray) -> np.ndarray:
    """Mask of the actions outside the tasks' range (float32 rounding tolerated; NaN is not
    out of range here, the finiteness checks report it)."""
    limit = ACTION_LIMIT * (1 + 1e-6)
    if action.size == 0 or -limit <= action.min() <= action.max() <= limit:  # the usual case
        return np.zeros(action.shape, bool)
    return np.abs(action) > limit


@dataclass(frozen=True)
class Field:
    """One array of a shard: dtype(s) and the shape it must have given E, T, D, A."""

    name: str
    dtypes: tuple[str, ...]
    required: bool

    def shape(self, episodes: int, length: int, obs_dim: int, action_dim: int) -> tuple:
        return {
            "obs": (episodes, length + 1, obs_dim),
            "action": (episodes, length, action_dim),
            "reward": (episodes, length),
            "task": (episodes,),
            "success": (episodes, length),
        }.get(self.name, (episodes,))


FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        Field("obs", ("float32", "float16"), True),
        Field("action", ("float32",), True),
        Field("reward", ("float32",), True),
        Field("task", ("int16",), True),
        Field("success", ("bool",), False),
        Field("source", ("int32",), False),
        # minor 1: per-episode provenance (small arrays: what stats and select read)
        Field("source_index", ("int64",), False),
        Field("episode_return", ("float32",), False),
        Field("episode_success", ("bool",), False),
    )
}

#: The per-episode arrays [E] (everything but the step arrays): metadata readable without obs.
PER_EPISODE = ("task", "source", "source_index", "episode_return", "episode_success")
#: ``source`` / ``source_index`` value of an episode whose origin is not recorded.
UNKNOWN = -1


def episode_summaries(reward: np.ndarray, success: np.ndarray | None) -> dict[str, np.ndarray]:
    """``episode_return`` (float32 sum of the rewards of each episode's T real steps, summed
    in float64) and ``episode_success`` (the success flag at the last step, the convention of
    evaluation) of episodes ``reward`` [E, T], ``success`` [E, T]: the one definition, used
    by the writer, by readers of datasets written before minor 1, and by verify."""
    out = {"episode_return": np.asarray(reward, np.float64).sum(axis=1).astype(np.float32)}
    if success is not None:
        out["episode_success"] = np.asarray(success, bool)[:, -1].copy()
    return out


def format_version(attrs: Mapping[str, Any]) -> tuple[int, int]:
    """(major, minor) of a dataset's root attributes."""
    return int(attrs["tdmpc2_format"]), int(attrs.get("tdmpc2_format_minor", 0))


def compressors(itemsize: int = 4, level: int = 1) -> list:
    """Blosc-zstd with byte shuffle, then crc32c over each compressed inner chunk.

    Chosen by measurement (bench/RESULTS.md): byte shuffle groups float exponents and
    zero padding, so it beats plain zstd by ~10% in size; level 1 writes ~2x faster than
    level 3 for <2% more bytes. The sharding index carries its own crc32c (zarr default).
    """
    return [
        zc.BloscCodec(cname="zstd", clevel=level, shuffle="shuffle", typesize=itemsize),
        zc.Crc32cCodec(),
    ]


def chunk_episodes(length: int, obs_dim: int, target: int = CHUNK_TARGET_BYTES) -> int:
    """Episodes per inner chunk so that one obs chunk is about ``target`` bytes."""
    return max(1, target // ((length + 1) * obs_dim * 4))


def shard_path(index: int) -> str:
    return f"{SHARDS_DIR}/{index:06d}"


def task_entry(task: str | Task | Mapping[str, Any], task_id: int) -> dict[str, Any]:
    """A root ``tasks`` entry from a registry name, a Task, or a dict for a task outside the registry."""
    if isinstance(task, str):
        task = TASKS[resolve_task_name(task)]
    if isinstance(task, Task):
        return {
            "id": task_id,
            "name": task.name,
            "domain": task.domain,
            "obs_dim": task.obs_dim,
            "action_dim": task.action_dim,
            "episode_length": task.episode_length,
        }
    missing = {"name", "obs_dim", "action_dim"} - set(task)
    if missing:
        raise ValueError(f"Task entry {dict(task)} lacks {sorted(missing)}.")
    return {
        "id": task_id,
        "name": str(task["name"]),
        "domain": str(task.get("domain", "custom")),
        "obs_dim": int(task["obs_dim"]),
        "action_dim": int(task["action_dim"]),
        "episode_length": int(task.get("episode_length", 0)) or None,
    }


def root_attributes(
    name: str,
    tasks: Sequence[str | Task | Mapping[str, Any]],
    obs_dim: int | None,
    action_dim: int | None,
    created_by: str,
) -> dict[str, Any]:
    """Root attributes of a new dataset (empty ``sources`` and ``shards``)."""
    entries = [task_entry(t, i) for i, t in enumerate(tasks)]
    if not entries:
        raise ValueError("A dataset needs at least one task.")
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"Task list names a task twice: {names}.")
    widest_obs, widest_action = padded_dims(entries)
    D = obs_dim if obs_dim is not None else widest_obs
    A = action_dim if action_dim is not None else widest_action
    too_wide = [e["name"] for e in entries if e["obs_dim"] > D or e["action_dim"] > A]
    if too_wide:
        raise ValueError(f"Tasks {too_wide} do not fit in obs_dim={D}, action_dim={A}.")
    return {
        "tdmpc2_format": FORMAT_VERSION,
        "tdmpc2_format_minor": FORMAT_MINOR,
        "name": name,
        "obs_dim": int(D),
        "action_dim": int(A),
        "tasks": entries,
        "sources": [],
        "shards": [],
        "created_by": created_by,
    }


def check_root_attributes(attrs: Mapping[str, Any], where: str) -> None:
    """Raise DatasetError naming ``where`` unless ``attrs`` are a readable version-1 root."""
    version = attrs.get("tdmpc2_format")
    if version not in SUPPORTED_VERSIONS:
        raise DatasetError(
            f"{where}: attribute tdmpc2_format={version!r} is not a shard format this "
            f"version of tdmpc2-toolkit reads (supported: {list(SUPPORTED_VERSIONS)}). "
            "Upgrade tdmpc2-toolkit, or check that this is a tdmpc2 shard dataset."
        )
    minor = attrs.get("tdmpc2_format_minor", 0)
    if not isinstance(minor, int) or isinstance(minor, bool) or minor < 0:
        raise DatasetError(
            f"{where}: attribute tdmpc2_format_minor={minor!r}; expected an integer >= 0."
        )
    for key in ("name", "obs_dim", "action_dim", "tasks", "shards"):
        if key not in attrs:
            raise DatasetError(f"{where}: root attribute {key!r} is missing.")
    for key in ("obs_dim", "action_dim"):
        _expect_int(attrs[key], where, f"root attribute {key!r}", 1)
    for key in ("tasks", "shards"):
        if not isinstance(attrs[key], list) or not all(isinstance(x, dict) for x in attrs[key]):
            raise DatasetError(
                f"{where}: root attribute {key!r} is {_short(attrs[key])}; expected a list of "
                "objects."
            )
    for entry in attrs["shards"]:
        check_shard_path(entry.get("path"), where)
    for i, task in enumerate(attrs["tasks"]):
        if not isinstance(task.get("name"), str):
            raise DatasetError(f"{where}: tasks[{i}] has name {_short(task.get('name'))}.")
        for key in ("obs_dim", "action_dim"):
            _expect_int(task.get(key), where, f"tasks[{i}] ({task['name']!r}) {key}", 0)
        if task.get("id") != i:
            raise DatasetError(f"{where}: tasks[{i}] has id {task.get('id')!r}, expected {i}.")
        if task["obs_dim"] > attrs["obs_dim"] or task["action_dim"] > attrs["action_dim"]:
            raise DatasetError(
                f"{where}: task {task['name']!r} (obs_dim {task['obs_dim']}, action_dim "
                f"{task['action_dim']}) is wider than the dataset "
                f"({attrs['obs_dim']}, {attrs['action_dim']})."
            )


def check_index_entry(entry: Mapping[str, Any], where: str, num_tasks: int) -> None:
    """Raise DatasetError naming ``where`` and the entry unless a root ``shards`` entry is
    whole and consistent: integer sizes (episodes >= 0, episode_length >= 1, transitions =
    their product) and task counts of known task ids that sum to its episodes. Readers plan
    and allocate from these numbers, so they are checked before anything else uses them (the
    arrays' shapes are checked against them when the arrays are opened)."""
    path = check_shard_path(entry.get("path"), where)
    name = f"index entry {path}"
    episodes = _expect_int(entry.get("episodes"), where, f"{name}: episodes", 0)
    length = _expect_int(entry.get("episode_length"), where, f"{name}: episode_length", 1)
    transitions = _expect_int(entry.get("transitions"), where, f"{name}: transitions", 0)
    if transitions != episodes * length:
        raise DatasetError(
            f"{where}: {name}: transitions {transitions}, expected episodes x episode_length "
            f"= {episodes * length}."
        )
    counts = entry.get("task_counts")
    if not isinstance(counts, dict) or not all(
        isinstance(k, str) and k.isdigit() and isinstance(v, int) and v >= 0
        for k, v in counts.items()
    ):
        raise DatasetError(
            f"{where}: {name}: task_counts {_short(counts)}; expected {{task id: episodes}}."
        )
    counts = {int(k): v for k, v in counts.items()}
    if any(k >= num_tasks for k in counts) or sum(counts.values()) != episodes:
        raise DatasetError(
            f"{where}: {name} has task_counts {counts} that do not sum to its {episodes} "
            f"episodes or name unknown task ids (0..{num_tasks - 1})."
        )


def check_shard_path(path: Any, where: str) -> str:
    """``path`` if it is a shard path as the format defines it, ``shards/<digits>``, else a
    DatasetError naming ``where``: every index entry (local, Hub, view) passes here before a
    path built from it is read, written or linked, so none can point outside its dataset
    (``..``, absolute or drive paths, backslashes, other directories)."""
    if not isinstance(path, str) or not _SHARD_PATH.fullmatch(path):
        raise DatasetError(
            f"{where}: index entry with path {_short(path)}; expected {SHARDS_DIR}/<digits> "
            "(a shard directory inside the dataset)."
        )
    return path


def shard_dir(root: Path, path: str, where: str) -> Path:
    """``root/path`` for a checked shard ``path``, refused (DatasetError naming ``where``)
    if it resolves outside ``root`` (a symlink on the way): what a link or write uses."""
    target = root / check_shard_path(path, where)
    if not target.resolve().is_relative_to(root.resolve()):
        raise DatasetError(f"{where}: {path} resolves to {target.resolve()}, outside {root}.")
    return target


def _expect_int(value: Any, where: str, what: str, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise DatasetError(f"{where}: {what} {_short(value)}, expected an integer >= {low}.")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def action_masks(action_dims: Sequence[int], width: int) -> np.ndarray:
    """float32 [num_tasks, width]: 1 on each task's real action dims, 0 on the padding (the
    one definition; datasets, the loader, envs and the world model use it)."""
    masks = np.zeros((len(action_dims), width), np.float32)
    for i, dims in enumerate(action_dims):
        masks[i, :dims] = 1.0
    return masks


def zero_pad(x: np.ndarray, width: int, dtype: Any = np.float32) -> np.ndarray:
    """``x`` with its last axis zero padded to ``width``: how obs and actions of a narrower
    task are stored and fed to a multitask model."""
    out = np.zeros((*x.shape[:-1], width), dtype)
    out[..., : x.shape[-1]] = x
    return out
