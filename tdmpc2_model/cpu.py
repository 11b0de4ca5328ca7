"""Process settings for CPU training and planning loops.

Every update frees and re-allocates the same few-MB activation and gradient tensors. With
glibc's default malloc settings the freed memory goes back to the OS (heap trimming, or
``munmap`` of blocks above the mmap threshold) and each re-allocation page-faults it in again:
10-30k minor faults and 15-40 ms of kernel time per 1M/5M update on the machine of
bench/RESULTS.md, 20-30% of the update. ``keep_freed_memory`` turns that off for the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's upper limit for M_MMAP_THRESHOLD on 64-bit


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory in the process: no heap trimming, and blocks up
    to 32 MB from the heap rather than fresh ``mmap`` s (the effect of the environment
    variables ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_``). The process keeps
    its peak heap size. Process-wide; call it once at the start of a training or acting
    program. Returns False (and changes nothing) where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)) and bool(
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
    )
