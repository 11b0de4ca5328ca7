"""What a competing busy process costs an online run: a tiny ``tdmpc2-train`` (mw-reach, 400
steps, 100 seed steps, small planner) alone and next to ``--busy`` processes that spin on a
core each, with the thread settings given by ``--env`` (one row per setting, the same run).
Fair share on 2 cores with one busy process is about 2x the time alone (less when the run
uses one thread: the second core is free).

    python bench/contention.py
    python bench/contention.py --busy 1 --env "" "OMP_WAIT_POLICY=PASSIVE" "OMP_NUM_THREADS=1"
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

SMALL = ["--config", "batch_size=32", "--config", "num_samples=32", "--config", "num_elites=4",
         "--config", "num_pi_trajs=4", "--config", "iterations=1"]  # fmt: skip
SPIN = "while True: pass"


def run_once(extra_env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system of the child) of one tiny training run."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["tdmpc2-train", "--task", "mw-reach", "--size", "1M", "--steps", "400",
                "--seed-steps", "100", "--eval-episodes", "0", "--out", f"{tmp}/run", *SMALL]  # fmt: skip
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, env=clean_env(extra_env), check=True, capture_output=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def clean_env(extra_env: dict[str, str]) -> dict[str, str]:
    """This environment without thread settings (OpenMP, MKL, Mesa's llvmpipe), plus
    ``extra_env``: each row of a bench sets its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_", "LP_"))}
    return {**env, **extra_env}


@contextmanager
def busy_processes(n: int) -> Iterator[None]:
    """``n`` processes spinning on a core each while the block runs."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(n)]
    try:
        yield
    finally:
        for s in spinners:
            s.kill()
            s.wait()


def parse_env(spec: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in spec.split(",") if item)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--busy", type=int, default=1, help="competing spinning processes")
    p.add_argument("--env", nargs="+", default=[""],
                   help='thread settings to compare, e.g. "" "OMP_WAIT_POLICY=PASSIVE"')  # fmt: skip
    args = p.parse_args()
    print(f"{os.cpu_count()} CPUs; load before: {os.getloadavg()[0]:.2f}")
    print(f"{'setting':<40} {'alone s':>8} {'busy s':>8} {'ratio':>6} {'busy CPU s':>10}")
    for spec in args.env:
        env = parse_env(spec)
        alone, _ = run_once(env)
        with busy_processes(args.busy):
            busy, cpu = run_once(env)
        print(f"{spec or '(defaults)':<40} {alone:>8.1f} {busy:>8.1f} {busy / alone:>5.1f}x "
              f"{cpu:>10.1f}")  # fmt: skip
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
