"""Decompression bombs for tests: small files whose compressed parts declare huge sizes."""

from __future__ import annotations

import functools
import math
import zipfile
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


def deflated(src: Path, dst: Path) -> Path:
    """The torch zip archive ``src`` with its tensor records DEFLATE-compressed."""
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out:
        for info in z.infolist():
            packed = zipfile.ZIP_DEFLATED if "/data/" in info.filename else zipfile.ZIP_STORED
            out.writestr(info.filename, z.read(info), packed)
    return dst


def deflate_bomb(dst: Path, nbytes: int = GIB) -> Path:
    """A torch zip archive whose one tensor (float32 ``obs``) is ``nbytes`` zero bytes in a
    DEFLATE-compressed record: ~5 MB on disk per GiB inside (~2 s to make)."""
    from legacy_chunks import chunk_pickle

    with zipfile.ZipFile(dst, "w", compresslevel=1) as z:
        z.writestr(
            f"{dst.stem}/data.pkl",
            chunk_pickle("published-mt80", {"obs": (np.float32, (nbytes // 4,))}),
        )
        z.writestr(f"{dst.stem}/byteorder", "little")
        info = zipfile.ZipInfo(f"{dst.stem}/data/0")
        info.compress_type, info._compresslevel = zipfile.ZIP_DEFLATED, 1  # the fastest
        zeros = bytes(1 << 20)
        with z.open(info, "w") as member:
            for _ in range(nbytes >> 20):
                member.write(zeros)
    return dst
