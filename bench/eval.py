"""Evaluation throughput: episodes/s of ``evaluate_tasks`` (MPPI in eval mode, real
simulators) for a 1M mt80 model on a task subset, with 1 and with 2 worker processes in one
run, and the projected time of a full mt80 evaluation (80 tasks x 10 episodes) on this
machine, from the measured seconds per agent step of each domain (DMControl episodes are 500
steps, Meta-World 100).

    python bench/eval.py                            # 6 tasks (2 DMControl, 4 Meta-World), 1 ep
    python bench/eval.py --episodes 2 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import torch

from tdmpc2_data.tasks import TASK_SETS, get_task
from tdmpc2_model import TDMPC2, TDMPC2Config, evaluate_tasks
from tdmpc2_model.evaluation.malloc import retain_freed_memory

SUBSET = ["walker-walk", "cheetah-run", "mw-reach", "mw-door-open", "mw-button-press",
          "mw-drawer-close"]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default=",".join(SUBSET))
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    retain_freed_memory()  # as the CLIs and each worker process do
    torch.manual_seed(0)
    torch.set_num_threads(1)  # as in each worker process
    agent = TDMPC2(TDMPC2Config(size="1M", tasks="mt80"))
    tasks = args.tasks.split(",")
    steps = sum(get_task(t).episode_length for t in tasks) * args.episodes
    print(f"1M mt80 model ({agent.model.total_params:,} params), {len(tasks)} tasks x "
          f"{args.episodes} episodes = {steps} agent steps")  # fmt: skip
    seconds = {}
    for workers in args.workers:
        start = time.perf_counter()
        evaluate_tasks(agent, tasks, args.episodes, workers=workers, progress=False)
        seconds[workers] = time.perf_counter() - start
        eps = len(tasks) * args.episodes / seconds[workers]
        print(f"workers={workers}: {seconds[workers]:.1f} s, {eps:.3f} episodes/s, "
              f"{steps / seconds[workers]:.1f} agent steps/s")  # fmt: skip
    full = Counter(get_task(t).episode_length for t in TASK_SETS["mt80"])
    full_steps = sum(length * n * 10 for length, n in full.items())
    with open("/proc/loadavg") as f:
        load = f.read().strip()
    for workers, s in seconds.items():
        hours = full_steps * s / steps / 3600
        print(f"projected full mt80 evaluation (80 tasks x 10 episodes, {full_steps} steps) "
              f"with {workers} worker(s): {hours:.1f} h")  # fmt: skip
    print(f"/proc/loadavg: {load}")


if __name__ == "__main__":
    main()
