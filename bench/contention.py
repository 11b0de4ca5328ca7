"""What competing busy processes cost each command users run: alone, next to one and next to
two processes that spin on a core each, side by side, with the thread settings of ``--env``
(one row per command and setting). Commands (``--runs``), all on CPU:

- train: ``tdmpc2-train`` tiny (mw-reach, 1M, 400 steps, 100 seed steps, small planner);
- pretrain: ``tdmpc2-pretrain`` short (1M, 40 updates of batch 256 on the synthetic
  mt80-shaped dataset of bench/loader.py, its default loader workers);
- finetune: ``tdmpc2-finetune`` tiny (a fresh 1M mw-reach model, 300 steps, 100 seed steps);
- eval: ``tdmpc2-eval`` tiny (that model, 2 episodes of mw-reach, small planner);
- quickstart: ``python -m tdmpc2_model.apps.quickstart`` with a reduced recipe (1 episode per
  task, 100 pretraining updates of batch 128, 200 finetuning steps and 1 evaluation episode
  with the small planner).

Fair share on 2 cores is ~1x the time alone for a one-thread command next to one busy process
(a core is free) and ~1.5x next to two (three processes on two cores); the goal is within ~2x.
A run past ``--timeout`` is stopped and shown as ">timeout". The 1-minute load average before
each measurement is printed beside it (other users' processes count too).

    python bench/contention.py
    python bench/contention.py --runs pretrain quickstart --env "" "OMP_NUM_THREADS=2"
    python bench/contention.py --runs pretrain --env "" --flags "" "--num-workers 0"
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RUNS = ("train", "pretrain", "finetune", "eval", "quickstart")
TASK = "mw-reach"
SMALL = ["--config", "batch_size=32", "--config", "num_samples=32", "--config", "num_elites=4",
         "--config", "num_pi_trajs=4", "--config", "iterations=1"]  # fmt: skip
SPIN = "while True: pass"
QUICKSTART = """seed: 0
collect: {table: [cartpole-balance, reacher-easy, mw-reach, mw-door-open],
          tasks: [cartpole-balance, reacher-easy, mw-reach], episodes: 1}
pretrain: {size: 1M, max_steps: 100, batch_size: 128}
finetune: {task: mw-door-open, steps: 200, seed_steps: 100, batch_size: 64,
           config: {num_samples: 32, num_elites: 4, num_pi_trajs: 4, iterations: 1}}
eval: {episodes: 1}
"""


def command(run: str, out: str, inputs: Path) -> list[str]:
    """The benchmarked command line of ``run``, writing into ``out``; ``inputs`` holds the
    data, the model and the recipe (`prepare`)."""
    model = ["--checkpoint", str(inputs / "model"), "--task", TASK]
    if run == "train":
        return ["tdmpc2-train", "--task", TASK, "--size", "1M", "--steps", "400",
                "--seed-steps", "100", "--eval-episodes", "0", "--out", out, *SMALL]  # fmt: skip
    if run == "pretrain":
        return ["tdmpc2-pretrain", "--size", "1M", "--data", str(inputs / "data"),
                "--max-steps", "40", "--batch-size", "256", "--cache-gb", "1",
                "--log-every", "10", "--out", out]  # fmt: skip
    if run == "finetune":
        return ["tdmpc2-finetune", *model, "--steps", "300", "--seed-steps", "100",
                "--eval-episodes", "0", "--out", out, *SMALL]  # fmt: skip
    if run == "eval":
        return ["tdmpc2-eval", *model, "--episodes", "2", *SMALL]
    return [sys.executable, "-m", "tdmpc2_model.apps.quickstart", "--recipe",
            str(inputs / "quickstart.yaml"), "--out", out]  # fmt: skip


def prepare(inputs: Path, runs: list[str], transitions: int) -> None:
    """The pretraining data, a fresh 1M model of the task and the reduced quickstart recipe."""
    if "pretrain" in runs:
        from loader import build  # bench/loader.py

        build(inputs / "data", transitions)
    if {"finetune", "eval"} & set(runs) and not (inputs / "model").exists():
        from tdmpc2_model import TDMPC2, TDMPC2Config

        TDMPC2(TDMPC2Config(size="1M", tasks=TASK)).save_pretrained(inputs / "model")
    (inputs / "quickstart.yaml").write_text(QUICKSTART)


def run_once(argv: list[str], extra_env: dict[str, str], timeout: float) -> float:
    """Wall seconds of one run (inf past ``timeout``)."""
    start = time.perf_counter()
    try:
        subprocess.run(argv, env=clean_env(extra_env), check=True, capture_output=True,
                       timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        return float("inf")
    return time.perf_counter() - start


def clean_env(extra_env: dict[str, str]) -> dict[str, str]:
    """This environment without thread settings (OpenMP, MKL, Mesa's llvmpipe), plus
    ``extra_env``: each row of a bench sets its own. The commands are this Python's console
    scripts, found without an activated venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_", "LP_"))}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
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


def load() -> str:
    """The 1-minute load average now."""
    return open("/proc/loadavg").read().split()[0]


def seconds(wall: float) -> str:
    return ">timeout" if wall == float("inf") else f"{wall:.1f}"


def ratio(busy: float, alone: float) -> str:
    return "-" if float("inf") in (alone, busy) else f"{busy / alone:.1f}x"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    p.add_argument("--inputs", type=Path, default=Path(tempfile.gettempdir(), "bench-contention"),
                   help="data, model and recipe (made when missing)")  # fmt: skip
    p.add_argument("--transitions", type=int, default=1_000_000, help="of the pretraining data")
    p.add_argument("--env", nargs="+", default=[""],
                   help='thread settings to compare, e.g. "" "OMP_NUM_THREADS=2"')  # fmt: skip
    p.add_argument("--flags", nargs="+", default=[""],
                   help='command flags to compare, e.g. "" "--num-workers 0" (pretrain)')  # fmt: skip
    p.add_argument("--timeout", type=float, default=300, help="seconds per run")
    args = p.parse_args()
    args.inputs.mkdir(parents=True, exist_ok=True)
    prepare(args.inputs, args.runs, args.transitions)
    print(f"{os.cpu_count()} CPUs; /proc/loadavg before: {open('/proc/loadavg').read().strip()}")
    print(f"{'command':<10} {'setting':<22} {'alone s':>8} {'load':>5} {'1 busy s':>9} {'load':>5} "
          f"{'ratio':>6} {'2 busy s':>9} {'load':>5} {'ratio':>6}")  # fmt: skip
    for run in args.runs:
        for spec in args.env:
            for flags in args.flags:
                cells = []
                for busy in (0, 1, 2):
                    before = load()
                    with tempfile.TemporaryDirectory() as tmp, busy_processes(busy):
                        argv = [*command(run, f"{tmp}/run", args.inputs), *flags.split()]
                        cells.append((run_once(argv, parse_env(spec), args.timeout), before))
                (alone, l0), (one, l1), (two, l2) = cells
                setting = " ".join(filter(None, [spec, flags])) or "(defaults)"
                print(f"{run:<10} {setting:<22} {seconds(alone):>8} {l0:>5} {seconds(one):>9} "
                      f"{l1:>5} {ratio(one, alone):>6} {seconds(two):>9} {l2:>5} "
                      f"{ratio(two, alone):>6}", flush=True)  # fmt: skip
    print(f"/proc/loadavg after: {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
