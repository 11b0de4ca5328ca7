"""`to_hf_dataset`: a shard dataset as a Hugging Face ``datasets`` Dataset, for that ecosystem.

``episode_table`` is the small per-episode view (no arrays) that ``tdmpc2-data push`` uploads
as ``episodes.parquet``. Rows, units and memory: `to_hf_dataset`'s docstring and
docs/data.md#hugging-face-datasets.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from typing import Any

import numpy as np

BLOCK_EPISODES = 64
UNITS = ("episode", "transition")


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise ImportError(
            "This needs the `datasets` package (dataset cards and `to_hf_dataset`): "
            "pip install 'tdmpc2-toolkit[hub]'"
        ) from None
    return datasets


def features(ds: Any, unit: str = "episode") -> Any:
    """The ``datasets.Features`` of ``to_hf_dataset(ds, unit)`` (also used by dataset cards)."""
    hf = _datasets()
    if unit not in UNITS:
        raise ValueError(f"unit={unit!r}; expected one of {UNITS}.")
    D, A = ds.obs_dim, ds.action_dim
    obs_dtype = _obs_dtype(ds)
    task = hf.ClassLabel(names=ds.tasks)
    if unit == "episode":
        spec: dict[str, Any] = {
            "obs": hf.Array2D((None, D), obs_dtype),
            "action": hf.Array2D((None, A), "float32"),
            "reward": hf.List(hf.Value("float32")),
            "task": task,
            "episode_length": hf.Value("int32"),
        }
        if _has_success(ds):
            spec["success"] = hf.List(hf.Value("bool"))  # null in shards without it
    else:
        spec = {
            "obs": hf.List(hf.Value(obs_dtype), length=D),
            "action": hf.List(hf.Value("float32"), length=A),
            "reward": hf.Value("float32"),
            "next_obs": hf.List(hf.Value(obs_dtype), length=D),
            "task": task,
            "episode": hf.Value("int64"),
            "step": hf.Value("int32"),
        }
        if _has_success(ds):
            spec["success"] = hf.Value("bool")
    return hf.Features(spec)


def _obs_dtype(ds: Any) -> str:
    return str(ds.array(0, "obs").dtype) if ds.shards else "float32"


def _has_success(ds: Any) -> bool:
    """Whether any shard stores success (the others then give null)."""
    return any(ds.has_field(i, "success") for i in range(len(ds.shards)))


def _blocks(
    ds: Any, fields: tuple[str, ...], view: Any = None
) -> Iterator[tuple[int, int, int, dict]]:
    """(shard, first episode in shard, global index of that episode, arrays) of every block of
    at most ``BLOCK_EPISODES`` consecutive episodes (of the `DatasetView` ``view`` if given),
    in storage order; optional fields a shard lacks are left out of its blocks. Global
    indices are the whole dataset's, whatever the view."""
    first = 0  # global index of the shard's first episode
    for i, shard in enumerate(ds.shards):
        have = tuple(f for f in fields if f not in ("success", "source") or ds.has_field(i, f))
        runs = [(0, shard.episodes)] if view is None else view.runs(i)
        for lo, hi in runs:
            for start in range(lo, hi, BLOCK_EPISODES):
                stop = min(start + BLOCK_EPISODES, hi)
                yield i, start, first + start, ds.read_shard(i, have, episodes=slice(start, stop))
        first += shard.episodes


def _rows(ds: Any, unit: str, with_success: bool, view: Any = None) -> Iterator[dict[str, Any]]:
    fields = ("obs", "action", "reward", "task") + (("success",) if with_success else ())
    for i, _, first, block in _blocks(ds, fields, view):
        shard = ds.shards[i]
        for e in range(len(block["task"])):
            ep = {k: v[e] for k, v in block.items()}
            if with_success and "success" not in ep:
                ep["success"] = None
            if unit == "episode":
                yield _episode_row(ep, shard.episode_length)
            else:
                yield from _transition_rows(ep, first + e)


def _episode_row(ep: dict[str, np.ndarray], length: int) -> dict[str, Any]:
    row = {k: ep[k] for k in ("obs", "action", "reward")}
    row.update(task=int(ep["task"]), episode_length=length)
    if "success" in ep:
        row["success"] = ep["success"]
    return row


def _transition_rows(ep: dict[str, np.ndarray], episode: int) -> Iterator[dict[str, Any]]:
    task = int(ep["task"])
    for t in range(len(ep["reward"])):
        row = {
            "obs": ep["obs"][t],
            "action": ep["action"][t],
            "reward": float(ep["reward"][t]),
            "next_obs": ep["obs"][t + 1],
            "task": task,
            "episode": episode,
            "step": t,
        }
        if "success" in ep:
            row["success"] = None if ep["success"] is None else bool(ep["success"][t])
        yield row


def to_hf_dataset(ds: Any, unit: str = "episode", streaming: bool = False) -> Any:
    """A ``datasets.Dataset`` (or ``IterableDataset`` if ``streaming``) of ``ds``'s episodes
    or transitions; ``ds`` is an ``open_dataset`` result, a `DatasetView` of one (only its
    episodes; ``episode`` indices stay the whole dataset's) or anything ``open_dataset``
    opens.

    ``unit="episode"``: one row per episode: ``obs`` [T+1, D], ``action`` [T, A], ``reward``
    [T], ``task`` (ClassLabel over ``ds.tasks``), ``episode_length``; ``success`` [T] when
    every shard stores it. ``unit="transition"``: one row per step t: ``obs`` [D], ``action``
    [A], ``reward``, ``next_obs`` [D], ``task``, ``episode`` (global episode index),
    ``step``; ``success`` (null where a shard lacks it). Observations and actions keep the
    dataset's zero padding (``ds.action_mask(task)``). Memory stays bounded;
    ``streaming=False`` writes an Arrow copy into the ``datasets`` cache once (the disk space
    of the uncompressed data).
    """
    from tdmpc2_data.curate import DatasetView
    from tdmpc2_data.reader import Dataset, open_dataset

    hf = _datasets()
    view = ds if isinstance(ds, DatasetView) else None
    if view is not None:
        ds = view.dataset
    elif not isinstance(ds, Dataset):
        ds = open_dataset(ds)
    feats = features(ds, unit)
    kwargs = {"ds": ds, "unit": unit, "with_success": "success" in feats, "view": view}
    if streaming:
        return hf.IterableDataset.from_generator(_rows, features=feats, gen_kwargs=kwargs)
    index = [(s.path, s.episodes, s.nbytes) for s in ds.shards]
    selected = None if view is None else [m.nonzero()[0].tolist() for m in view.masks]
    fingerprint = _fingerprint(ds.location, unit, index, selected)
    return hf.Dataset.from_generator(
        _rows, features=feats, gen_kwargs=kwargs, fingerprint=fingerprint
    )


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def episode_table_features(ds: Any) -> Any:
    """The ``datasets.Features`` of ``episode_table(ds)``."""
    hf = _datasets()
    return hf.Features({"episode": hf.Value("int64"), "task": hf.ClassLabel(names=ds.tasks),
                        "shard": hf.Value("string"), "shard_episode": hf.Value("int32"),
                        "length": hf.Value("int32"), "return": hf.Value("float64"),
                        "success": hf.Value("bool")})  # fmt: skip


def episode_table(ds: Any) -> Any:
    """One row per episode, no arrays: ``episode`` (global index), ``task`` (ClassLabel),
    ``shard`` and ``shard_episode`` (where it is stored), ``length``, ``return`` (sum of
    rewards) and ``success`` (at the last step; null where not stored). Reads only the
    per-episode metadata (``Dataset.episode_metadata``)."""
    feats = episode_table_features(ds)
    cols: dict[str, list] = {name: [] for name in feats}
    first = 0
    for i, shard in enumerate(ds.shards):
        meta, n = ds.episode_metadata(i), shard.episodes
        cols["episode"] += range(first, first + n)
        cols["task"] += meta["task"].tolist()
        cols["shard"] += [shard.path] * n
        cols["shard_episode"] += range(n)
        cols["length"] += [shard.episode_length] * n
        cols["return"] += meta["episode_return"].astype("float64").tolist()
        success = meta.get("episode_success")
        cols["success"] += [None] * n if success is None else success.tolist()
        first += n
    return _datasets().Dataset.from_dict(cols, features=feats)


def episode_table_parquet(ds: Any) -> bytes:
    """``episode_table(ds)`` as Parquet bytes (with its features in the schema metadata)."""
    buffer = io.BytesIO()
    episode_table(ds).to_parquet(buffer)
    return buffer.getvalue()
