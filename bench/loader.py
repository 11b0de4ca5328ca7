"""Window sampling throughput and memory: `WindowSampler` vs the original's TorchRL buffer.

    OMP_NUM_THREADS=1 python bench/loader.py [--transitions 10_000_000] [--seconds 10]
                                             [--data DIR]

1. Builds (once, kept in ``--data``) a synthetic mt80-shaped shard dataset: the 80 mt80 tasks
   with their real widths padded to obs 39 / action 6, T = 100, smooth random-walk obs,
   tanh actions, sigmoid rewards (so compression is realistic), ``--transitions`` in all.
2. Each configuration runs in a fresh process (clean peak RSS) and reports the time from
   opening the data to the first batch, sampled transitions/s over ``--seconds`` (batch 256
   windows of H+1 = 4 steps, counting 4 transitions per window, the consumer only takes the
   batches), the same per CPU second of the process (all threads; robust to other jobs on a
   shared machine), peak RSS (VmHWM) and its growth over the process after imports:
   - TorchRL as the original TD-MPC2 sets it up: the whole dataset in a
     ``LazyTensorStorage`` in RAM (rows with the filler step), ``SliceSampler(num_slices=256,
     traj_key="episode", strict_length=True)``, ``batch_size=256*4``, and the original's
     post-processing (view/permute, drop the filler, contiguous);
   - ``WindowSampler`` with the whole dataset resident (default 4 GB cache), 1 and 2 workers;
   - ``WindowSampler`` with ``cache_bytes`` = 1/4 of the decoded dataset, 1 and 2 workers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

B, H, T = 256, 3, 100
ROW_BYTES = (39 + 6 + 1) * 4  # decoded obs, action, reward per row


def build(root: Path, transitions: int, seed: int = 0) -> None:
    """Write the synthetic mt80-shaped dataset (skipped if it is already complete)."""
    from tdmpc2_data import TASK_SETS, ShardWriter, get_task, open_dataset

    if (root / "zarr.json").exists() and open_dataset(root).num_transitions >= transitions:
        return
    tasks = TASK_SETS["mt80"]
    per_task = -(-transitions // (T * len(tasks)))
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    agents = [{"description": f"synthetic agent of {name}", "seed": 0} for name in tasks]
    with ShardWriter(root, tasks=tasks, name="bench-mt80", sources=agents) as w:
        for k, name in enumerate(tasks):
            task = get_task(name)
            for start in range(0, per_task, 500):
                n = min(500, per_task - start)
                walk = rng.normal(0, 0.05, (n, T + 1, task.obs_dim)).astype(np.float32)
                walk[:, 0] = rng.normal(0, 1, (n, task.obs_dim))
                steer = rng.normal(0, 0.3, (n, T, task.action_dim)).astype(np.float32)
                w.add_episodes(
                    name,
                    np.cumsum(walk, axis=1),
                    np.tanh(np.cumsum(steer, axis=1)),
                    1 / (1 + np.exp(-np.cumsum(rng.normal(0, 0.2, (n, T)), axis=1))),
                    source=k,
                    source_index=start,
                )
    ds = open_dataset(root)
    print(
        f"built {root}: {ds.num_transitions:,} transitions, {len(ds.shards)} shards, "
        f"{ds.nbytes / 1e9:.2f} GB on disk, in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )


def rss(key: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def timed(batches, seconds: float, t_open: float) -> dict[str, float]:
    """Time to the first batch (from ``t_open``), then transitions/s over ``seconds``."""
    next(batches)
    first = time.perf_counter() - t_open
    n, t0, cpu0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        next(batches)
        n += 1
    sampled = n * B * (H + 1)
    return {
        "first_s": first,
        "rate": sampled / (time.perf_counter() - t0),
        "cpu_rate": sampled / (time.process_time() - cpu0),  # per CPU second, all threads
    }


def run_torchrl(root: str, seconds: float, cache_values: bool) -> dict[str, float]:
    """The original's buffer: rows (obs[t], action[t-1], reward[t-1]) with a NaN filler at
    t = 0 of each episode, the whole dataset in a LazyTensorStorage. The original leaves
    ``cache_values`` False (episode bounds recomputed from the whole storage per sample);
    True caches them, which is valid for a static offline buffer and much faster."""
    import torch
    from tensordict import TensorDict
    from torchrl.data.replay_buffers import LazyTensorStorage, ReplayBuffer
    from torchrl.data.replay_buffers.samplers import SliceSampler

    from tdmpc2_data import open_dataset

    base = rss()
    t_open = time.perf_counter()
    ds = open_dataset(root)
    rb = ReplayBuffer(
        storage=LazyTensorStorage(ds.num_episodes * (T + 1)),
        sampler=SliceSampler(
            num_slices=B,
            end_key=None,
            traj_key="episode",
            truncated_key=None,
            strict_length=True,
            cache_values=cache_values,
        ),
        pin_memory=False,
        prefetch=0,
        batch_size=B * (H + 1),
    )
    episode = 0
    for i in range(len(ds.shards)):
        data = ds.read_shard(i)
        e, length = data["reward"].shape
        filler = np.full((e, 1), np.nan, np.float32)
        td = TensorDict(
            {
                "obs": torch.from_numpy(data["obs"]),
                "action": torch.from_numpy(np.concatenate([filler[..., None].repeat(6, 2), data["action"]], 1)),
                "reward": torch.from_numpy(np.concatenate([filler, data["reward"]], 1)),
                "task": torch.from_numpy(data["task"].astype(np.int64))[:, None].expand(e, length + 1),
                "episode": torch.arange(episode, episode + e)[:, None].expand(e, length + 1),
            },
            batch_size=[e, length + 1],
        )  # fmt: skip
        rb.extend(td.reshape(-1))
        episode += e

    def batches():
        while True:  # Buffer.sample + _prepare_batch of the original, without the CUDA copy
            td = rb.sample().view(-1, H + 1).permute(1, 0)
            obs = td.get("obs").contiguous()
            action = td.get("action")[1:].contiguous()
            reward = td.get("reward")[1:].unsqueeze(-1).contiguous()
            task = td.get("task")[0].contiguous()
            yield obs, action, reward, task

    out = timed(batches(), seconds, t_open)
    return {**out, "base": base, "peak": rss("VmHWM")}


def run_ours(root: str, seconds: float, cache_bytes: int, workers: int) -> dict[str, float]:
    from tdmpc2_data import WindowSampler, open_dataset

    base = rss()
    t_open = time.perf_counter()
    sampler = WindowSampler(
        open_dataset(root), batch_size=B, horizon=H, cache_bytes=cache_bytes, num_workers=workers
    )
    out = timed(iter(sampler), seconds, t_open)
    info = sampler.cache_info()
    sampler.close()
    return {**out, "base": base, "peak": rss("VmHWM"), "resident": info["resident"]}


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    if args.run.startswith("torchrl"):
        out = run_torchrl(args.data, args.seconds, cache_values=args.run == "torchrl-cached")
    else:
        out = run_ours(args.data, args.seconds, args.cache_bytes, args.workers)
    print(json.dumps(out))


def dataset_flags(p: argparse.ArgumentParser, seconds: float) -> None:
    """The bench dataset's size and location (built once, reused), and the sampling time."""
    p.add_argument("--transitions", type=int, default=10_000_000)
    p.add_argument("--seconds", type=float, default=seconds)
    default_data = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    p.add_argument("--data", default=str(default_data / "tdmpc2-toolkit" / "bench-loader-mt80"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    dataset_flags(p, seconds=10.0)
    p.add_argument("--run", choices=["torchrl", "torchrl-cached", "ours"], help=argparse.SUPPRESS)
    p.add_argument("--cache-bytes", type=int, default=4 << 30, help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run:
        return child(args)

    build(Path(args.data), args.transitions)
    from tdmpc2_data import open_dataset

    ds = open_dataset(args.data)
    decoded = ds.num_episodes * (T + 1) * ROW_BYTES
    quarter = decoded // 4
    configs = [
        ("TorchRL ReplayBuffer + SliceSampler, all in RAM (as the original)", "torchrl", 0, 0),
        ("TorchRL, same + SliceSampler(cache_values=True)", "torchrl-cached", 0, 0),
        ("WindowSampler, resident (cache 4 GiB)", "ours", 4 << 30, 1),
        ("WindowSampler, resident (cache 4 GiB)", "ours", 4 << 30, 2),
        (f"WindowSampler, cache = 1/4 of data ({quarter / 2**20:.0f} MiB)", "ours", quarter, 1),
        (f"WindowSampler, cache = 1/4 of data ({quarter / 2**20:.0f} MiB)", "ours", quarter, 2),
    ]
    print(
        f"data: {ds.num_transitions:,} transitions, {decoded / 2**30:.2f} GiB decoded, "
        f"{ds.nbytes / 2**30:.2f} GiB on disk; {os.cpu_count()} CPUs, load average before: "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}",
        flush=True,
    )
    rows = []
    for label, kind, cache, workers in configs:
        cmd = [sys.executable, __file__, "--run", kind, "--data", args.data]
        cmd += ["--seconds", str(args.seconds), "--cache-bytes", str(cache)]
        cmd += ["--workers", str(workers)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
        out = json.loads(proc.stdout.splitlines()[-1])  # torchrl logs to stdout before it
        rows.append((label, kind, cache, workers, out, os.getloadavg()[0]))
        print(f"  done: {label}, {workers} workers: {out['rate'] / 1e6:.2f} M/s", flush=True)

    baseline = max(r[4]["rate"] for r in rows if r[1].startswith("torchrl"))  # the faster one
    print()
    print("| sampler | workers | first batch s | transitions/s | vs faster TorchRL | "
          "per CPU s | peak RSS | RSS growth | growth / cache | load avg |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, kind, cache, workers, out, load in rows:
        growth = out["peak"] - out["base"]
        budget = f"{growth / cache:.2f}" if kind == "ours" and cache < (4 << 30) else "-"
        print(
            f"| {label} | {workers if kind == 'ours' else '-'} | {out['first_s']:.1f} | "
            f"{out['rate'] / 1e6:.2f} M | {out['rate'] / baseline:.2f}x | "
            f"{out['cpu_rate'] / 1e6:.2f} M | "
            f"{out['peak'] / 2**30:.2f} GiB | {growth / 2**30:.2f} GiB | {budget} | {load:.1f} |"
        )


if __name__ == "__main__":
    main()
