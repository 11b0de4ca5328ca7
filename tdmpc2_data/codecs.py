"""zarr's blosc and zstd decoders, checking the size a chunk declares before decoding it.

A chunk is decoded into the size its own header declares (the blosc header's ``nbytes``, the
zstd frame's content size; a zstd frame without one is decoded by streaming, unbounded), so
a small, checksum-correct chunk can declare a gigabyte and be decoded, in `verify`, readers
and every loader thread at once, before anything compares it with the array. Here a chunk
whose declared size is not its array chunk's (shape x itemsize) is refused first, as a
``ValueError`` the reader reports as damaged data of its array. Importing this module (the
schema does) makes these classes zarr's ``blosc`` and ``zstd`` codecs in the process, so
every read passes here; what is written is unchanged.
"""

from __future__ import annotations

import math
import struct

import zarr
import zstandard
from zarr.abc.codec import BytesBytesCodec
from zarr.codecs import BloscCodec, ZstdCodec
from zarr.core.array_spec import ArraySpec
from zarr.core.buffer import Buffer
from zarr.registry import register_codec

__all__ = ["CheckedBlosc", "CheckedZstd"]

#: A blosc (1.x) header: version, versionlz, flags, typesize, then nbytes (uint32 LE).
_BLOSC_HEADER = 16


def _expected(spec: ArraySpec) -> int:
    return math.prod(spec.shape) * spec.dtype.to_native_dtype().itemsize


def _refuse_unless(declared: int | None, spec: ArraySpec, codec: str) -> None:
    expected = _expected(spec)
    if declared != expected:
        says = "no size" if declared is None else f"{declared} bytes"
        raise ValueError(
            f"a {codec} chunk of shape {spec.shape} declares {says}, expected {expected} "
            "bytes; refused before decoding"
        )


class CheckedBlosc(BloscCodec):
    """``BloscCodec`` that refuses a chunk whose header declares another size than its own."""

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> Buffer:
        raw = chunk_bytes.as_numpy_array()
        declared = struct.unpack_from("<I", raw, 4)[0] if raw.nbytes >= _BLOSC_HEADER else None
        _refuse_unless(declared, chunk_spec, "blosc")
        return super()._decode_sync(chunk_bytes, chunk_spec)


class CheckedZstd(ZstdCodec):
    """``ZstdCodec`` that refuses a frame without a declared content size or with another."""

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> Buffer:
        try:
            size = zstandard.frame_content_size(chunk_bytes.as_numpy_array()[:18].tobytes())
        except zstandard.ZstdError:
            size = -1
        _refuse_unless(None if size < 0 else size, chunk_spec, "zstd")
        return super()._decode_sync(chunk_bytes, chunk_spec)


def _install(key: str, cls: type[BytesBytesCodec]) -> None:
    register_codec(key, cls)
    zarr.config.set({f"codecs.{key}": f"{cls.__module__}.{cls.__qualname__}"})


_install("blosc", CheckedBlosc)
_install("zstd", CheckedZstd)
