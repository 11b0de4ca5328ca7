"""The shard dataset format (version 1.1): one import point for the schema, the writer and
verify. Reading is ``tdmpc2_data.open_dataset`` (``reader.py``).

A dataset is a zarr v3 hierarchy (spec: shared/spec/shard-format.md) of shards of whole
episodes, with per-episode provenance since minor 1. Layout, versions, provenance arrays
and the choices made on top of the spec: docs/design.md#the-shard-format.
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
