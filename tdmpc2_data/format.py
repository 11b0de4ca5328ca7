"""The shard dataset format (version 1.1): its description, and one import point for the
schema, the writer and verify. Reading is ``tdmpc2_data.open_dataset`` (``reader.py``).

A dataset is a zarr v3 hierarchy (spec: shared/spec/shard-format.md)::

    <root>/zarr.json              root group; attributes = dataset metadata (tasks, shards index)
    <root>/shards/<nnnnnn>/       one group per shard: whole episodes of one length T
        obs [E, T+1, D] float32|float16   action [E, T, A] float32   reward [E, T] float32
        task [E] int16   success [E, T] bool (optional)   source [E] int32 (optional)
        source_index [E] int64   episode_return [E] float32   episode_success [E] bool
                                                       (optional, minor 1: provenance)

Versions: the root's ``tdmpc2_format`` is the major version (1; a reader refuses majors it
does not know) and ``tdmpc2_format_minor`` the minor (absent = 0). A minor only adds
optional arrays or attributes, so every minor of major 1 opens here, older and newer; a
writer appending to a dataset raises its minor to its own (never lowers it). Minor 1 adds
per-episode provenance, small [E] arrays that statistics and filters read without obs
(``tdmpc2_data.curate``; ``Dataset.episode_metadata``):

- ``source``: index into the root ``sources`` (which agent, seed, file or run); -1 unknown.
- ``source_index``: the episode's position in that source: its number in the agent's
  replay buffer or the file's order, i.e. its training progress (legacy chunks: the row in
  the chunk; online runs and ``collect``: the episode number, per task; minari, hdf5, npz,
  torchrl: the source's episode order; ``--from shards`` keeps the stored one). -1 unknown
  (shards written before minor 1, a writer not given it, ``compact`` of such shards).
- ``episode_return``: the sum of the episode's T rewards (summed in float64, stored float32).
- ``episode_success``: the success flag at the last step (the convention of evaluation),
  where the shard stores ``success``.

Shards without them (minor 0) still read: ``episode_metadata`` computes the return and
success from ``reward``/``success`` and reports ``source``/``source_index`` as -1, so
statistics and filters work on them except ``last_fraction_of_source``, which says why.
``verify`` checks that returns are the sums of the rewards (float32 tolerance), success is
the last step's flag, source ids are in the root ``sources`` and ``source_index`` >= 0 or
-1. A merge (``tdmpc2-data merge``) gives each (dataset, task, source) a new ``sources``
entry whose ``origin`` is the original entry, and keeps every ``source_index``.

Choices made here on top of the spec (all readable by any zarr v3 reader):

- Each array is one file (sharding codec, shard = whole array) with inner chunks of
  ~512 KiB of obs (a few episodes: `schema.chunk_episodes`), compressed with blosc-zstd
  level 1 + byte shuffle and protected by crc32c per inner chunk and on the shard index.
  A chunk is decoded only if the size its blosc (or zstd) header declares is its array
  chunk's (``tdmpc2_data.codecs``): a small chunk declaring gigabytes is refused unread.
- Episodes inside a shard are ordered by task id, so ``ShardInfo.task_ranges`` gives each
  task's contiguous episode range; shard group attributes hold ``episodes``,
  ``episode_length``, ``task_counts`` and ``sources`` (ids of the root ``sources`` used).
- Root index entries carry ``nbytes`` (stored bytes) in addition to the spec's keys; their
  ``path`` is exactly ``shards/<digits>``, refused otherwise wherever an index is read
  (local, Hub, task view: ``schema.check_shard_path``), so no entry points outside its root.
- Writer bookkeeping files start with a dot (``.tdmpc2.lock``, ``shards/.tmp-*``); readers
  and uploads ignore them.
"""

from tdmpc2_data.schema import FIELDS, FORMAT_MINOR, FORMAT_VERSION, DatasetError
from tdmpc2_data.verify import VerifyReport, verify_dataset
from tdmpc2_data.writer import ShardWriter, compact, finalize

__all__ = [
    "FIELDS",
    "FORMAT_VERSION",
    "FORMAT_MINOR",
    "DatasetError",
    "ShardWriter",
    "compact",
    "finalize",
    "VerifyReport",
    "verify_dataset",
]
