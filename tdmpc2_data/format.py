"""The shard dataset format (version 1): its description, and one import point for the
schema, the writer and verify. Reading is ``tdmpc2_data.open_dataset`` (``reader.py``).

A dataset is a zarr v3 hierarchy (spec: shared/spec/shard-format.md)::

    <root>/zarr.json              root group; attributes = dataset metadata (tasks, shards index)
    <root>/shards/<nnnnnn>/       one group per shard: whole episodes of one length T
        obs [E, T+1, D] float32|float16   action [E, T, A] float32   reward [E, T] float32
        task [E] int16   success [E, T] bool (optional)   source [E] int32 (optional)

Choices made here on top of the spec (all readable by any zarr v3 reader):

- Each array is one file (sharding codec, shard = whole array) with inner chunks of
  ~512 KiB of obs (a few episodes: `schema.chunk_episodes`), compressed with blosc-zstd
  level 1 + byte shuffle and protected by crc32c per inner chunk and on the shard index.
- Episodes inside a shard are ordered by task id, so ``ShardInfo.task_ranges`` gives each
  task's contiguous episode range; shard group attributes hold ``episodes``,
  ``episode_length``, ``task_counts`` and ``sources`` (ids of the root ``sources`` used).
- Root index entries carry ``nbytes`` (stored bytes) in addition to the spec's keys.
- Writer bookkeeping files start with a dot (``.tdmpc2.lock``, ``shards/.tmp-*``); readers
  and uploads ignore them.
"""

from tdmpc2_data.schema import FIELDS, FORMAT_VERSION, DatasetError
from tdmpc2_data.verify import VerifyReport, verify_dataset
from tdmpc2_data.writer import ShardWriter, compact, finalize

__all__ = [
    "FIELDS",
    "FORMAT_VERSION",
    "DatasetError",
    "ShardWriter",
    "compact",
    "finalize",
    "VerifyReport",
    "verify_dataset",
]
