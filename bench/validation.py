"""What the loader's check of decoded blocks costs (issue 14: < 5% of loading).

The loader decodes a block (``read_shard``: zstd + crc32c + copy) and checks it
(``cache.check_decoded``: task ids, NaN/inf, action range, padding) before it can be
sampled. This times both on every task run of the synthetic mt80-shaped dataset of
``bench/loader.py``, in the loader's read sizes, and prints the check's share.

    OMP_NUM_THREADS=1 python bench/validation.py [--transitions 1_000_000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from loader import build  # bench/loader.py: the synthetic mt80-shaped dataset

from tdmpc2_data import open_dataset
from tdmpc2_data.cache import _read_ranges, check_decoded
from tdmpc2_data.loader import _pieces


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--transitions", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "bench-mt80-1M"))
    args = p.parse_args()
    build(Path(args.data), args.transitions)
    ds = open_dataset(args.data)
    pieces = _pieces([ds], [list(range(len(ds.tasks)))], 3)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    best = None
    for _ in range(args.rounds):
        decode = check = 0.0
        for piece in pieces:
            for start, stop in _read_ranges(ds, piece, 8 << 20):
                t0 = time.perf_counter()
                data = ds.read_shard(
                    piece.shard, ("obs", "action", "reward", "task"), slice(start, stop)
                )
                t1 = time.perf_counter()
                check_decoded(ds, piece, start, data)
                t2 = time.perf_counter()
                decode, check = decode + t1 - t0, check + t2 - t1
        if best is None or decode + check < sum(best):
            best = (decode, check)
    decode, check = best
    rows = ds.num_transitions + ds.num_episodes
    print(f"{ds.num_transitions:,} transitions, {len(pieces)} task runs, best of {args.rounds}")
    print("| step | seconds | rows/s | share of loading |")
    print("|---|---|---|---|")
    for name, secs in (("decode (read_shard)", decode), ("check (check_decoded)", check)):
        print(
            f"| {name} | {secs:.3f} | {rows / secs / 1e6:.1f} M | {secs / (decode + check):.1%} |"
        )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
