"""Torch's CPU threads for every command: one unless told otherwise.

With another busy process on the machine, OpenMP threads spinning between small operations
made runs 20-36x slower; one thread costs ~15% alone and nothing under contention
(bench/contention.py, bench/RESULTS.md)."""

from __future__ import annotations

import os

#: What ``--threads`` says when it is left out.
THREADS_HELP = (
    "torch CPU threads (default 1, or OMP_NUM_THREADS when set: with another busy process on "
    "the machine spinning OpenMP threads made runs 20x slower; bench/contention.py)"
)


def set_torch_threads(threads: int | None = None) -> int:
    """Use ``threads`` torch CPU threads; None or 0: 1, or OMP_NUM_THREADS when set. Returns
    the number in use."""
    import torch

    if not threads and "OMP_NUM_THREADS" not in os.environ:
        threads = 1
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
