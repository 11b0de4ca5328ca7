"""Evidence that online training learns: ``tdmpc2-train`` at the paper's settings (1M model,
MPPI 512 samples x 6 iterations, horizon 3, batch 256; the 1M size is for the CPU budget) on
``cartpole-balance`` and ``mw-reach`` at once, one core each, for a wall-clock budget, with an
evaluation every 2k environment steps. The runs stop (Ctrl-C, as a user would) at the budget;
every finished evaluation is already in their metrics (``OUT/logs``). Then it draws each task's
curve next to the published TD-MPC2 curve (``tdmpc2-plot curves``) into ``bench/learn/`` and
prints the evaluations beside the published values (sampled every 100k steps: step 0 and
100k bracket a run this short).

    python bench/learn.py                         # 60 min, runs in runs/learn/
    python bench/learn.py --minutes 5 --runs /tmp/learn
    python bench/learn.py --plot-only             # redraw from finished runs
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

TASKS = {"cartpole-balance": 2, "mw-reach": 5}  # task: evaluation episodes (CPU budget)
HERE = Path(__file__).resolve().parent


def launch(task: str, episodes: int, runs: Path, core: int, eval_every: int) -> subprocess.Popen:
    """One ``tdmpc2-train`` run pinned to one core with one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = ["tdmpc2-train", "--task", task, "--size", "1M", "--steps", "1000000",
           "--eval-every", str(eval_every), "--eval-episodes", str(episodes),
           "--checkpoint-every", "1000000", "--out", str(runs / task)]  # fmt: skip
    log = open(runs / f"{task}.log", "w")
    cores = os.sched_getaffinity(0)
    pin = {sorted(cores)[core % len(cores)]}

    def start() -> None:  # one core; Ctrl-C as a user's (a background shell ignores SIGINT)
        os.sched_setaffinity(0, pin)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=start)


def run(runs: Path, minutes: float, eval_every: int) -> list[float]:
    """Run every task until the budget is spent; returns the 1-minute load averages seen."""
    runs.mkdir(parents=True, exist_ok=True)
    procs = {t: launch(t, n, runs, i, eval_every) for i, (t, n) in enumerate(TASKS.items())}
    deadline, loads = time.monotonic() + minutes * 60, []
    while time.monotonic() < deadline and any(p.poll() is None for p in procs.values()):
        time.sleep(min(30.0, max(0.0, deadline - time.monotonic())))
        loads.append(os.getloadavg()[0])
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs.values():
        p.wait()
    return loads


def report(runs: Path, out: Path) -> None:
    """Draw each task's curve next to the published one and print the numbers."""
    from tdmpc2_model.apps.plots import published_curve
    from tdmpc2_model.outputs.loggers import read_metrics

    out.mkdir(parents=True, exist_ok=True)
    for task in TASKS:
        png = out / f"{task}.png"
        subprocess.run(["tdmpc2-plot", "curves", str(runs / task), "--task", task,
                        "--compare", "tdmpc2", "--out", str(png)], check=True)  # fmt: skip
        metrics = read_metrics(runs / task)
        metric = "success_rate" if "eval/success_rate" in metrics else "mean_return"
        episodes, elapsed = metrics.get("train/episode", []), metrics.get("train/elapsed_s", [])
        print(f"\n{task} ({metric}, {len(episodes)} training episodes, "
              f"{episodes[-1][0] if episodes else 0} env steps, "
              f"{elapsed[-1][1] / 60 if elapsed else 0:.1f} min): {png}")  # fmt: skip
        print(f"  {'step':>7} {'ours':>8}")
        for step, value in metrics.get(f"eval/{metric}", []):
            print(f"  {step:>7} {value:>8.3f}")
        curve = published_curve(task, "tdmpc2")
        print("  published TD-MPC2 (mean over seeds, 95% CI):")
        for s, m, lo, hi in zip(
            curve.steps[:2], curve.mean[:2], curve.low[:2], curve.high[:2], strict=True
        ):
            print(f"  {int(s):>7} {m:>8.3f}  [{lo:.3f}, {hi:.3f}]")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--runs", type=Path, default=Path("runs/learn"))
    p.add_argument("--eval-every", type=int, default=2000)
    p.add_argument("--plot-only", action="store_true")
    args = p.parse_args()
    if not args.plot_only:
        if any((args.runs / t).exists() for t in TASKS):
            sys.exit(f"{args.runs} already holds runs; remove them or pass --plot-only.")
        loads = run(args.runs, args.minutes, args.eval_every)
        load = {"minutes": args.minutes, "load_1min_mean": round(sum(loads) / len(loads), 2),
                "load_1min_max": max(loads)}  # fmt: skip
        (args.runs / "load.json").write_text(json.dumps(load) + "\n")
    print((args.runs / "load.json").read_text().strip())
    report(args.runs, HERE / "learn")


if __name__ == "__main__":
    main()
