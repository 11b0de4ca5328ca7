"""Curation cost on the loader bench dataset: `tdmpc2-data stats`, `select`, and sampling a
view vs the whole dataset, side by side in the same run.

    OMP_NUM_THREADS=1 python bench/curation.py [--transitions 10_000_000] [--seconds 8]
                                             [--data DIR]

1. Builds (or reuses) the synthetic mt80-shaped dataset of ``bench/loader.py`` (80 tasks,
   T = 100, one source per task with its episodes' ``source_index``).
2. ``tdmpc2-data stats DATA --json`` in a fresh process (wall time, imports included), and
   ``stats``/``select`` in this process (reading the per-episode metadata once, then cached).
3. ``WindowSampler`` batches/s (batch 256, H = 3, 1 worker) of the whole dataset and of views
   (``top_fraction=0.5``: scattered episodes, the worst case for reads; ``tasks=mt30``;
   ``last_fraction_of_source=0.5``), resident (4 GiB cache) and with the cache at 1/4 of the
   whole dataset's decoded size (rotating). Each pair runs whole, view, whole, view and keeps
   each one's best, so that load from other jobs hurts both alike.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from loader import ROW_BYTES, B, H, T, build, dataset_flags, timed  # bench/loader.py

from tdmpc2_data import WindowSampler, open_dataset
from tdmpc2_data.curate import select, stats

VIEWS = {
    "top_fraction=0.5": {"top_fraction": 0.5},
    "tasks=mt30": {"tasks": "mt30"},
    "last_fraction_of_source=0.5": {"last_fraction_of_source": 0.5},
}


def rate(data, cache: int, seconds: float) -> dict[str, float]:
    t0 = time.perf_counter()
    sampler = WindowSampler(data, batch_size=B, horizon=H, cache_bytes=cache, num_workers=1)
    out = timed(iter(sampler), seconds, t0)
    out["resident"] = sampler.cache_info()["resident"]
    sampler.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    dataset_flags(p, seconds=8.0)
    p.add_argument("--views", default=",".join(VIEWS), help="comma list of the views to sample")
    args = p.parse_args()
    build(Path(args.data), args.transitions)
    load = lambda: " ".join(f"{x:.1f}" for x in os.getloadavg())  # noqa: E731
    ds = open_dataset(args.data)
    decoded = ds.num_episodes * (T + 1) * ROW_BYTES
    print(
        f"data: {ds.num_transitions:,} transitions, {ds.num_episodes:,} episodes, "
        f"{len(ds.shards)} shards, {ds.nbytes / 2**30:.2f} GiB on disk, {decoded / 2**30:.2f} "
        f"GiB decoded; {os.cpu_count()} CPUs; load average {load()}",
        flush=True,
    )
    cmd = [sys.executable, "-m", "tdmpc2_data.cli", "stats", args.data, "--json"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    print(f"| `tdmpc2-data stats DATA --json` (fresh process) | {time.perf_counter() - t0:.2f} s "
          f"| load {load()} |")  # fmt: skip
    t0 = time.perf_counter()
    stats(open_dataset(args.data))
    print(f"| `stats(open_dataset(DATA))` in process | {time.perf_counter() - t0:.2f} s |")
    views = {}
    for name in args.views.split(","):
        t0 = time.perf_counter()
        views[name] = select(ds, **VIEWS[name])
        print(f"| `select({name})` (metadata cached) | {time.perf_counter() - t0:.3f} s "
              f"| {views[name].num_episodes:,} episodes |")  # fmt: skip
    print()
    print("| view | cache | resident | whole: transitions/s | view: transitions/s | view / whole "
          "| whole first batch s | view first batch s | load avg |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for cache, label in ((4 << 30, "4 GiB"), (decoded // 4, f"{decoded / 4 / 2**20:.0f} MiB")):
        for name, view in views.items():
            best: dict[str, dict[str, float]] = {}
            for _ in range(2):
                for key, data in (("whole", ds), ("view", view)):
                    out = rate(data, cache, args.seconds)
                    if key not in best or out["rate"] > best[key]["rate"]:
                        best[key] = out
            w, v = best["whole"], best["view"]
            resident = f"{'yes' if w['resident'] else 'no'} / {'yes' if v['resident'] else 'no'}"
            print(
                f"| {name} | {label} | {resident} | {w['rate'] / 1e6:.2f} M | "
                f"{v['rate'] / 1e6:.2f} M | {v['rate'] / w['rate']:.2f}x | {w['first_s']:.1f} | "
                f"{v['first_s']:.1f} | {load()} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
