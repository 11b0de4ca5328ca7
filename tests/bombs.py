"""Decompression bombs for tests: small files whose compressed parts declare huge sizes."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import google_crc32c
import numcodecs
import numpy as np
import zarr

GIB = 1 << 30


@functools.cache
def blosc_zeros(nbytes: int = GIB) -> bytes:
    """A valid blosc-zstd frame (shuffle, typesize 4) of ``nbytes`` zero bytes (~0.9 MB for
    1 GiB; made from untouched zero pages, so making it costs no memory)."""
    codec = numcodecs.Blosc("zstd", 1, numcodecs.Blosc.SHUFFLE)
    return codec.encode(np.zeros(nbytes // 4, np.float32))


def replace_first_chunk(array_dir: Path, chunk: bytes) -> None:
    """Make inner chunk 0 of the one shard file of the zarr array at ``array_dir`` hold
    ``chunk`` (its crc32c appended, the shard index and its crc32c rewritten: the checksums
    are right, as the writer would have made them)."""
    arr = zarr.open_array(array_dir, mode="r")
    count = math.prod(-(-s // c) for s, c in zip(arr.shards, arr.chunks, strict=True))
    path = array_dir / "c" / "/".join("0" * arr.ndim)
    data = path.read_bytes()
    body, index = data[: -(16 * count + 4)], bytearray(data[-(16 * count + 4) : -4])
    chunk += google_crc32c.value(chunk).to_bytes(4, "little")
    entries = np.frombuffer(index, "<u8").reshape(count, 2).copy()
    entries[0] = (len(body), len(chunk))
    index = entries.tobytes()
    path.write_bytes(body + chunk + index + google_crc32c.value(index).to_bytes(4, "little"))
