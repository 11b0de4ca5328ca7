"""What rendering a video costs evaluation planning: per agent step, the planning time
(``planner_actor``, MPPI in eval mode, as ``evaluate``), the render time of one 384x384 frame
and the whole step, without video and with video under each ``--env`` setting, alone and
next to ``--busy`` spinning processes (`contention.busy_processes`). Each row is a fresh
process with no display and no MUJOCO_GL, so ``make_env`` chooses the headless backend
(``tdmpc2_data/envs/gl.py``) as ``tdmpc2-eval --video`` does.

Goal (issue 13): rendering slows planning by no more than the render time itself, i.e.
plan ms with video ~ plan ms without, alone and busy.

    python bench/render.py                               # 1M cartpole-balance, paper planner
    python bench/render.py --env "LP_NUM_THREADS=2" "" "OMP_NUM_THREADS=2,LP_NUM_THREADS=2"
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from contention import busy_processes, clean_env, parse_env  # bench/contention.py

TASK = "cartpole-balance"


def worker(video: bool, steps: int, warmup: int, size: str) -> dict:
    """Time ``steps`` agent steps (after ``warmup``) in this process; episodes restart."""
    import torch

    from tdmpc2_data.envs import make_env
    from tdmpc2_model import TDMPC2, TDMPC2Config
    from tdmpc2_model.apps.cli import set_threads
    from tdmpc2_model.evaluation.episodes import check_task, planner_actor
    from tdmpc2_model.evaluation.malloc import retain_freed_memory

    retain_freed_memory()  # as the model commands do
    set_threads(None)  # tdmpc2-eval's default: 1 unless OMP_NUM_THREADS
    torch.manual_seed(0)
    agent = TDMPC2(TDMPC2Config(size=size, tasks=TASK))
    spec = check_task(agent, TASK)
    act = planner_actor(agent, spec)
    env = make_env(TASK, seed=0, render_mode="rgb_array" if video else None)
    obs, _ = env.reset(seed=0)
    plan, render, step, first = [], [], [], True
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        action = act(obs, first)
        t1 = time.perf_counter()
        obs, _, _, truncated, _ = env.step(action)
        t2 = time.perf_counter()
        if video:
            env.render()
        t3 = time.perf_counter()
        if i >= warmup:
            plan.append(t1 - t0), render.append(t3 - t2), step.append(t3 - t0)
        first = truncated
        if truncated:
            obs, _ = env.reset()
    env.close()
    return {"plan": 1e3 * statistics.mean(plan), "render": 1e3 * statistics.mean(render),
            "step": 1e3 * statistics.mean(step), "threads": len(os.listdir("/proc/self/task")),
            "torch_threads": torch.get_num_threads(), "gl": os.environ.get("MUJOCO_GL"),
            "lp": os.environ.get("LP_NUM_THREADS")}  # fmt: skip


def run_once(video: bool, extra_env: dict[str, str], args: argparse.Namespace) -> dict:
    """One worker process without a display or a MUJOCO_GL choice."""
    drop = ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")
    env = {k: v for k, v in clean_env({}).items() if k not in drop}
    argv = [sys.executable, __file__, "--worker", "--steps", str(args.steps),
            "--warmup", str(args.warmup), "--size", args.size, *(["--video"] if video else [])]  # fmt: skip
    out = subprocess.run(
        argv, env={**env, **extra_env}, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--busy", type=int, default=1, help="competing spinning processes")
    p.add_argument("--env", nargs="+", default=[f"LP_NUM_THREADS={os.cpu_count()}", ""],
                   help='settings of the video rows, e.g. "LP_NUM_THREADS=2" "" (the default: '
                        "gl.py's)")  # fmt: skip
    p.add_argument("--steps", type=int, default=100, help="timed agent steps per row")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--size", default="1M")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--video", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.video, args.steps, args.warmup, args.size)))
        return
    print(f"{os.cpu_count()} CPUs; /proc/loadavg before: {open('/proc/loadavg').read().strip()}")
    print(
        f"{args.size} {TASK}, paper planner, {args.steps} timed steps per row; ms per step, "
        f"alone / next to {args.busy} busy process(es)"
    )
    head = (f"{'row':<52} {'plan alone':>10} {'plan busy':>9} {'render alone':>12} "
            f"{'render busy':>11} {'step alone':>10} {'step busy':>9} {'threads':>7}")  # fmt: skip
    print(head)
    rows = [("no video", False, {})] + [(f"video {s or '(defaults)'}", True, parse_env(s))
                                        for s in args.env]  # fmt: skip
    for name, video, env in rows:
        alone = run_once(video, env, args)
        with busy_processes(args.busy):
            busy = run_once(video, env, args)
        label = f"{name} [{alone['gl'] or '-'}, LP={alone['lp'] or '-'}]" if video else name
        print(f"{label:<52} {alone['plan']:>10.1f} {busy['plan']:>9.1f} {alone['render']:>12.1f} "
              f"{busy['render']:>11.1f} {alone['step']:>10.1f} {busy['step']:>9.1f} "
              f"{busy['threads']:>7}")  # fmt: skip
    print(f"/proc/loadavg after: {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
