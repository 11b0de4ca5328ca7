"""What a competing busy process costs a run: a tiny ``tdmpc2-train`` (``--run train``:
mw-reach, 400 steps, 100 seed steps, small planner) or a short ``tdmpc2-pretrain`` (``--run
pretrain``: 1M model, 40 updates of batch 256 on the synthetic mt80-shaped dataset of
bench/loader.py, default loader workers) alone and next to ``--busy`` processes that spin on
a core each, with the thread settings given by ``--env`` (one row per setting, the same run).
Fair share on 2 cores with one busy process is about 2x the time alone (less when the run
uses one thread: the second core is free).

    python bench/contention.py
    python bench/contention.py --busy 1 --env "" "OMP_WAIT_POLICY=PASSIVE" "OMP_NUM_THREADS=1"
    python bench/contention.py --run pretrain --env "" "OMP_NUM_THREADS=2"
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


def command(run: str, out: str, data: str) -> list[str]:
    """The benchmarked command line of ``--run``, writing into ``out``."""
    if run == "train":
        return ["tdmpc2-train", "--task", "mw-reach", "--size", "1M", "--steps", "400",
                "--seed-steps", "100", "--eval-episodes", "0", "--out", out, *SMALL]  # fmt: skip
    return ["tdmpc2-pretrain", "--size", "1M", "--data", data, "--max-steps", "40",
            "--batch-size", "256", "--cache-gb", "1", "--log-every", "10", "--out", out]  # fmt: skip


def run_once(extra_env: dict[str, str], run: str = "train", data: str = "") -> tuple[float, float]:
    """Wall and CPU seconds (user + system of the child) of one short run."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = command(run, f"{tmp}/run", data)
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
    p.add_argument("--run", choices=["train", "pretrain"], default="train")
    p.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "bench-mt80-1M"),
                   help="pretraining data (built by bench/loader.py when missing)")  # fmt: skip
    p.add_argument("--busy", type=int, default=1, help="competing spinning processes")
    p.add_argument("--env", nargs="+", default=[""],
                   help='thread settings to compare, e.g. "" "OMP_WAIT_POLICY=PASSIVE"')  # fmt: skip
    args = p.parse_args()
    if args.run == "pretrain":
        from pathlib import Path

        from loader import build  # bench/loader.py

        build(Path(args.data), 1_000_000)
    print(f"{os.cpu_count()} CPUs; /proc/loadavg before: {open('/proc/loadavg').read().strip()}")
    print(" ".join(command(args.run, "OUT", args.data)))
    print(f"{'setting':<40} {'alone s':>8} {'busy s':>8} {'ratio':>6} {'busy CPU s':>10}")
    for spec in args.env:
        env = parse_env(spec)
        alone, _ = run_once(env, args.run, args.data)
        with busy_processes(args.busy):
            busy, cpu = run_once(env, args.run, args.data)
        print(f"{spec or '(defaults)':<40} {alone:>8.1f} {busy:>8.1f} {busy / alone:>5.1f}x "
              f"{cpu:>10.1f}")  # fmt: skip
    print(f"/proc/loadavg after: {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
