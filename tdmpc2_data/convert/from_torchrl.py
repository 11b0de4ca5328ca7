"""Convert TorchRL replay buffers saved with ``ReplayBuffer.dumps(path)`` into a shard dataset.

Reads the JSON descriptions and memory-maps the raw ``.memmap`` files: no pickle is loaded,
no torch is needed. Row layouts (TorchRL transitions; the original TD-MPC2 buffer, step 0 a
filler, ``index_convention``): docs/data.md#source-layouts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tdmpc2_data.convert.episodes import Episode, split_episodes, split_rows
from tdmpc2_data.convert.merge import Source

FORMAT = "torchrl"

DTYPES = {
    f"torch.{name}": np.dtype(name)
    for name in (
        "float16",
        "float32",
        "float64",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "bool",
    )
}

#: Keys (tuples = nested) tried in order for each field.
KEYS: dict[str, tuple[tuple[str, ...], ...]] = {
    "obs": (("observation",), ("obs",)),
    "next_obs": (("next", "observation"), ("next", "obs")),
    "action": (("action",),),
    "reward": (("next", "reward"), ("reward",)),
    "episode": (("collector", "traj_ids"), ("episode",), ("traj_ids",)),
    "done": (("next", "done"), ("next", "terminated"), ("next", "truncated")),
}


def load_storage(path: str | os.PathLike) -> tuple[dict[tuple[str, ...], np.memmap], np.ndarray]:
    """The storage's tensors as read-only memory maps (by nested key), and the storage rows
    in the order they were written (a full ring buffer starts at its cursor)."""
    root = Path(path)
    storage = root / "storage"
    if not (storage / "meta.json").is_file():
        raise ValueError(
            f"{root}: not a ReplayBuffer.dumps directory of a tensor storage (no "
            "storage/meta.json; buffers with a ListStorage are pickled and not supported)."
        )
    tensors = _read_meta(storage, ())
    length = _json(storage / "storage_metadata.json").get("len")
    if not isinstance(length, int):
        raise ValueError(f"{storage / 'storage_metadata.json'}: no 'len' (number of rows).")
    capacity = min(x.shape[0] for x in tensors.values())
    if length > capacity:
        raise ValueError(f"{root}: storage says {length} rows, but its arrays hold {capacity}.")
    writer = _json(root / "writer" / "metadata.json") if (root / "writer").is_dir() else {}
    cursor, count = writer.get("cursor", length), writer.get("write_count", length)
    order = np.arange(length)
    if isinstance(count, int) and count > length and isinstance(cursor, int):
        order = np.roll(order, -(cursor % max(length, 1)))
    return tensors, order


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable ({exc})") from None


def _read_meta(directory: Path, prefix: tuple[str, ...]) -> dict[tuple[str, ...], np.memmap]:
    meta = _json(directory / "meta.json")
    tensors = {}
    for key, entry in meta.items():
        if not isinstance(entry, dict):
            continue  # shape, device, _type of the TensorDict itself
        if entry.get("type") == "TensorDict":
            tensors.update(_read_meta(directory / key, (*prefix, key)))
            continue
        where = f"{directory / key}.memmap"
        if entry.get("is_nested") or entry.get("dtype") not in DTYPES:
            continue  # not a plain tensor numpy can map: only an error if a needed key
        dtype, shape = DTYPES[entry["dtype"]], tuple(entry["shape"])
        size = int(np.prod(shape)) * dtype.itemsize
        if not os.path.isfile(where) or os.path.getsize(where) < size:
            raise ValueError(f"{where}: missing or shorter than {shape} x {dtype} in meta.json.")
        tensors[(*prefix, key)] = (
            np.memmap(where, dtype, "r", shape=shape) if size else np.zeros(shape, dtype)
        )
    return tensors


def _key(tensors: dict, field: str) -> tuple[str, ...] | None:
    return next((k for k in KEYS[field] if k in tensors), None)


def open_source(path: str | os.PathLike, index_convention: str | None = None) -> Source:
    """Read the layout of one dumped buffer; episodes stream later from its memory maps."""
    where = str(path)
    tensors, order = load_storage(path)
    keys = {f: _key(tensors, f) for f in KEYS}
    for field in ("obs", "action", "reward"):
        if keys[field] is None:
            names = ", ".join("/".join(k) for k in KEYS[field])
            found = ", ".join("/".join(k) for k in sorted(tensors))
            raise ValueError(f"{where}: no {field} entry (looked for {names}; found {found}).")
    convention = index_convention or ("legacy" if keys["next_obs"] is None else None)
    ids = tensors[keys["episode"]].reshape(-1)[: order.size] if keys["episode"] else None
    done = None
    if ids is None and keys["done"]:
        flags = [tensors[k] for k in KEYS["done"] if k in tensors]
        done = np.any([f.reshape(f.shape[0], -1)[: order.size, 0] for f in flags], axis=0)
    rows = split_rows(order, ids, done)
    obs, action = tensors[keys["obs"]], tensors[keys["action"]]
    if obs.ndim != 2 or action.ndim != 2:
        raise ValueError(
            f"{where}: {'/'.join(keys['obs'])} has shape {obs.shape[1:]} and action "
            f"{action.shape[1:]} per row; expected flat vectors."
        )

    def episodes() -> Iterator[Episode | None]:
        data, _ = load_storage(path)
        o, a, r = (data[keys[f]] for f in ("obs", "action", "reward"))
        nxt = data[keys["next_obs"]] if keys["next_obs"] else None
        yield from split_episodes(where, o, a, r, nxt, rows, convention)

    return Source(where, FORMAT, obs.shape[1], action.shape[1], episodes, len(rows))
