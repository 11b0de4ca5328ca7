"""`to_hf_dataset`: a shard dataset as a Hugging Face ``datasets`` Dataset, for that ecosystem.

Rows are produced by a generator that reads one block of episodes at a time, so memory
stays bounded: ``streaming=True`` gives an ``IterableDataset`` that reads on demand (works
on ``hf://`` datasets too); ``streaming=False`` writes an Arrow copy into the ``datasets``
cache once (needs the disk space of the uncompressed data).

Units:

- ``"episode"``: one row per episode: ``obs`` [T+1, D], ``action`` [T, A], ``reward`` [T],
  ``task`` (ClassLabel over ``ds.tasks``), ``episode_length``; ``success`` [T] when every
  shard stores it.
- ``"transition"``: one row per step t: ``obs`` [D], ``action`` [A], ``reward``,
  ``next_obs`` [D], ``task``, ``episode`` (global episode index), ``step``; ``success``.

Observations and actions keep the dataset's zero padding; ``ds.action_mask(task)`` says
which action entries are real.
"""

from __future__ import annotations

import hashlib
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
            spec["success"] = hf.List(hf.Value("bool"))
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
    return bool(ds.shards) and all(ds.has_field(i, "success") for i in range(len(ds.shards)))


def _rows(ds: Any, unit: str, with_success: bool) -> Iterator[dict[str, Any]]:
    fields = ("obs", "action", "reward", "task") + (("success",) if with_success else ())
    first = 0  # global index of the shard's first episode
    for i, shard in enumerate(ds.shards):
        for start in range(0, shard.episodes, BLOCK_EPISODES):
            stop = min(start + BLOCK_EPISODES, shard.episodes)
            block = ds.read_shard(i, fields, episodes=slice(start, stop))
            for e in range(stop - start):
                ep = {k: v[e] for k, v in block.items()}
                if unit == "episode":
                    yield _episode_row(ep, shard.episode_length)
                else:
                    yield from _transition_rows(ep, first + start + e)
        first += shard.episodes


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
            row["success"] = bool(ep["success"][t])
        yield row


def to_hf_dataset(ds: Any, unit: str = "episode", streaming: bool = False) -> Any:
    """A ``datasets.Dataset`` (or ``IterableDataset`` if ``streaming``) of ``ds``'s episodes
    or transitions; ``ds`` is an ``open_dataset`` result or anything ``open_dataset`` opens."""
    from tdmpc2_data.reader import Dataset, open_dataset

    hf = _datasets()
    if not isinstance(ds, Dataset):
        ds = open_dataset(ds)
    feats = features(ds, unit)
    kwargs = {"ds": ds, "unit": unit, "with_success": "success" in feats}
    if streaming:
        return hf.IterableDataset.from_generator(_rows, features=feats, gen_kwargs=kwargs)
    index = [(s.path, s.episodes, s.nbytes) for s in ds.shards]
    fingerprint = _fingerprint(ds.location, unit, index)
    return hf.Dataset.from_generator(
        _rows, features=feats, gen_kwargs=kwargs, fingerprint=fingerprint
    )


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]
