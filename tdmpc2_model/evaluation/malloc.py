"""Make glibc malloc keep freed memory, for CPU planning and updates.

Every op of the model allocates a fresh activation tensor of 0.2-5 MB and frees it soon
after. With glibc's defaults such blocks are mmap'ed (or the heap top is trimmed) and given
back to the kernel on free, so the next allocation page-faults and zeroes fresh memory;
on CPU that can cost more than the elementwise op itself (measured here: updates
1.2-1.3x faster with it, act() 1.0-1.8x depending on what else the process allocates).
Keeping freed memory in the process removes those faults. Process-wide and opt-in: the
CLIs and benchmarks call ``retain_freed_memory()``; a library import never does.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's upper limit for M_MMAP_THRESHOLD on 64-bit


def retain_freed_memory(trim_threshold: int = 1 << 30) -> bool:
    """Serve blocks up to 32 MB from the heap and return freed heap memory to the kernel only
    beyond ``trim_threshold`` bytes. Returns False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    return mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1 and ok
