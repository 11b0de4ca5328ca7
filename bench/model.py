"""Speed of the TD-MPC2 model on CPU with one thread: ``act()`` latency (eval mode, MPPI with
the default 6 iterations x 512 samples, horizon 3) and ``update()`` throughput (batch 256,
horizon 3), for 1M and 5M single-task (walker-walk) and multitask (mt80) models, in fp32 and
bf16-mixed (``torch.autocast("cpu", torch.bfloat16)``), eager and ``torch.compile``.

Side by side in the same run: the matmul FLOPs of one act / one update (counted with
``FlopCounterMode``), the achieved GFLOP/s, and that rate as a fraction of a plain matmul's
GFLOP/s in the same dtype at the model's shapes ([512 x mlp] @ [mlp x mlp] for planning,
[768 x mlp] @ [mlp x mlp] for the update), measured right before each model. The last
columns compare with the original implementation (fp32 eager, 1 thread, same machine kind;
issue 6): 1M act 231 ms / 6.2 updates/s, 5M act 650 ms / 1.7 updates/s.

    python bench/model.py            # everything (~15-25 min on a quiet core)
    python bench/model.py --quick    # smoke run: 1M walker-walk, eager, one round
    python bench/model.py --retain-freed-memory  # glibc keeps freed memory (malloc.py)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from tdmpc2_data.batch import Batch
from tdmpc2_model import TDMPC2, TDMPC2Config
from tdmpc2_model.evaluation.malloc import retain_freed_memory

ORIGINAL = {"1M": (231.0, 6.2), "5M": (650.0, 1.7)}  # act ms/step, updates/s (issue 6)
TASKS = {"single": "walker-walk", "multi": "mt80"}
PRECISIONS = ("fp32", "bf16-mixed")


def best_mean(fn: Callable[[], object], calls: int, rounds: int) -> float:
    """Seconds per call: the best over ``rounds`` of the mean over ``calls`` (the least
    disturbed round on a shared machine)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def gemm_gflops(m: int, k: int, n: int, kind: str, rounds: int) -> float:
    """GFLOP/s of [m, k] @ [k, n]: ``mm`` is a plain ``torch.mm`` in fp32 or bf16 (the
    issue's peak); ``onednn`` the fp32 oneDNN GEMM that ``tdmpc2_model.core.gemm`` uses."""
    dtype = torch.bfloat16 if kind == "bf16 mm" else torch.float32
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    if kind == "fp32 onednn":
        w = b.t().contiguous()
        fn = lambda: torch.ops.tdmpc2.linear(a, w, None)  # noqa: E731
    else:
        fn = lambda: a @ b  # noqa: E731
    for _ in range(5):
        fn()
    return 2 * m * k * n / best_mean(fn, 30, rounds) / 1e9


def autocast(precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16-mixed":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def make_batch(cfg: TDMPC2Config, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    h, b = cfg.horizon, cfg.batch_size
    task = torch.randint(0, cfg.num_tasks, (b,), generator=g)
    return Batch(
        obs=torch.randn(h + 1, b, cfg.obs_dim, generator=g),
        action=torch.rand(h, b, cfg.action_dim, generator=g) * 2 - 1,
        reward=torch.rand(h, b, generator=g),
        task=task,
    )


def time_agent(cfg, state, mode, precision, obs, task, batch, args) -> tuple[float, float, float]:
    """(s per act, s per update, warm-up s) of a fresh agent with the weights ``state``."""
    agent = TDMPC2(cfg)
    agent.load_state_dict(state)
    act = agent.act
    if mode == "compile":
        # Inductor's pattern matcher trips on the Q head pick (see compile_update)
        act = torch.compile(agent.act, options={"pattern_matcher": False})
        agent.compile_update()

    def step(fn: Callable[[], object]) -> Callable[[], object]:
        """One call in its own autocast region, as a training loop enters it per step (the
        cast cache of the bf16 weights must not outlive an optimizer step)."""

        def run() -> object:
            with autocast(precision):
                return fn()

        return run

    act_step = step(lambda: act(obs, task=task))
    update_step = step(lambda: agent.update(batch))
    start = time.perf_counter()
    step(lambda: act(obs, t0=True, task=task))()
    for _ in range(2):  # warm up (and compile both graphs: t0 and warm start)
        act_step()
        update_step()
    warm_s = time.perf_counter() - start
    act_s = best_mean(act_step, args.act_calls, args.rounds)
    upd_s = best_mean(update_step, args.update_calls, args.rounds)
    return act_s, upd_s, warm_s


def bench_model(size: str, kind: str, args: argparse.Namespace) -> list[dict]:
    cfg = TDMPC2Config(size=size, tasks=TASKS[kind], batch_size=256, horizon=3)
    task = "walker-walk" if cfg.multitask else None
    obs = torch.randn(24)  # walker-walk's observation (zero padded for mt80)
    batch = make_batch(cfg)
    torch.manual_seed(0)
    base = TDMPC2(cfg)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    base.act(obs, t0=True, task=task)
    act_flops = count_flops(lambda: base.act(obs, task=task))
    update_flops = count_flops(lambda: base.update(batch))
    shapes = [(cfg.num_samples, cfg.mlp_dim), (cfg.batch_size * cfg.horizon, cfg.mlp_dim)]
    peaks = {
        gemm: max(gemm_gflops(m, k, k, gemm, args.rounds) for m, k in shapes)
        for gemm in ("fp32 mm", "fp32 onednn", "bf16 mm")
    }
    print(
        f"<!-- {size} {kind} GEMM peaks GFLOP/s: "
        + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items())
        + " -->"
    )
    rows = []
    for mode in args.modes:
        for precision in args.precisions:
            act_s, upd_s, warm_s = time_agent(cfg, state, mode, precision, obs, task, batch, args)
            orig_ms, orig_ups = ORIGINAL[size]
            rows.append(dict(
                model=f"{size} {TASKS[kind]}", mode=mode, precision=precision,
                act_ms=act_s * 1e3, act_gflops=act_flops / act_s / 1e9,
                updates_s=1 / upd_s, upd_gflops=update_flops / upd_s / 1e9,
                peak=peaks["fp32 mm" if precision == "fp32" else "bf16 mm"],
                best=max(peaks.values()) if precision == "bf16-mixed" else peaks["fp32 onednn"],
                act_x=orig_ms / (act_s * 1e3), upd_x=(1 / upd_s) / orig_ups,
                warm_s=warm_s, act_flops=act_flops, update_flops=update_flops,
            ))  # fmt: skip
            print(format_row(rows[-1]), flush=True)
    return rows


HEADER = (
    "| model | mode | precision | act ms/step | act GFLOP/s | act % of mm / best GEMM "
    "| updates/s | update GFLOP/s | update % of mm / best GEMM | act x orig | update x orig "
    "| warm-up s |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def pct(rate: float, r: dict) -> str:
    return f"{100 * rate / r['peak']:.0f}% / {100 * rate / r['best']:.0f}%"


def format_row(r: dict) -> str:
    return (
        f"| {r['model']} | {r['mode']} | {r['precision']} | {r['act_ms']:.1f} "
        f"| {r['act_gflops']:.1f} | {pct(r['act_gflops'], r)} "
        f"| {r['updates_s']:.2f} | {r['upd_gflops']:.1f} | {pct(r['upd_gflops'], r)} "
        f"| {r['act_x']:.2f} | {r['upd_x']:.2f} | {r['warm_s']:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1M walker-walk, eager, 1 round")
    parser.add_argument("--sizes", default="1M,5M")
    parser.add_argument(
        "--kinds", default="single,multi", help="single (walker-walk), multi (mt80)"
    )
    parser.add_argument("--modes", default="eager,compile")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument(
        "--retain-freed-memory",
        action="store_true",
        help="call tdmpc2_model.evaluation.malloc.retain_freed_memory() first, as the model CLIs do",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--act-calls", type=int, default=4)
    parser.add_argument("--update-calls", type=int, default=4)
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.kinds, args.modes, args.rounds = "1M", "single", "eager", 1
        args.act_calls = args.update_calls = 2
    args.modes, args.precisions = args.modes.split(","), args.precisions.split(",")
    torch.set_num_threads(1)
    if args.retain_freed_memory and not retain_freed_memory():
        parser.error("--retain-freed-memory needs glibc")
    load = os.getloadavg()[0]
    malloc = "freed memory retained" if args.retain_freed_memory else "default malloc"
    print(f"torch {torch.__version__}, 1 thread, {malloc}, load average at start {load:.2f} "
          f"on {os.cpu_count()} cores\n")  # fmt: skip
    print(HEADER)
    rows = []
    for size in args.sizes.split(","):
        for kind in args.kinds.split(","):
            rows += bench_model(size, kind, args)
    flops = sorted({(r["model"], r["act_flops"], r["update_flops"]) for r in rows})
    print("\n| model | GFLOP per act | GFLOP per update |\n|---|---|---|")
    for model, act, update in flops:
        print(f"| {model} | {act / 1e9:.2f} | {update / 1e9:.2f} |")
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
