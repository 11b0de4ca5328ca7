"""Pretraining speed: updates/s through Lightning (a real ``Trainer`` fitting `TDMPC2Module`
on a `WindowDataModule`, as ``tdmpc2-pretrain`` runs it) against a bare loop of the same
update (``TDMPC2.update``) on the same batches from the same sampler, in one run; and the
loader wait (time between two training steps, i.e. fetching and moving the next batch) as a
share of Lightning's step time.

Goal (issue 10): Lightning >= 0.95x the bare loop; loader wait < 5% of the step time.

    python bench/pretrain.py                      # 1M mt80, batch 256, 1 thread, 60 timed updates
    python bench/pretrain.py --size 5M --steps 30 --threads 2
    python bench/pretrain.py --quick              # smoke run (a few updates)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from loader import build  # bench/loader.py: the synthetic mt80-shaped dataset

from tdmpc2_data.datamodule import WindowDataModule
from tdmpc2_model import TDMPC2Config
from tdmpc2_model.training.pretrain import TDMPC2Module


class StepTimes(L.Callback):
    """Wall time of each training step (batch start -> end) and of the gap before it (the
    previous step's end -> this start: Lightning fetching the next batch)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.steps, self.gaps, self._end = warmup, [], [], None

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._start = time.perf_counter()
        if self._end is not None and batch_idx > self.warmup:
            self.gaps.append(self._start - self._end)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._end = time.perf_counter()
        if batch_idx >= self.warmup:
            self.steps.append(self._end - self._start)


def make_module(cfg: TDMPC2Config, seed: int) -> TDMPC2Module:
    torch.manual_seed(seed)
    return TDMPC2Module(cfg)


def lightning_rate(dm: WindowDataModule, cfg: TDMPC2Config, steps: int, warmup: int) -> dict:
    times = StepTimes(warmup)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=warmup + steps, max_epochs=-1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[times], num_sanity_val_steps=0,
                        default_root_dir=tempfile.mkdtemp())  # fmt: skip
    trainer.fit(make_module(cfg, 0), datamodule=dm)
    total = sum(times.steps) + sum(times.gaps)
    return {"rate": len(times.steps) / total, "wait": sum(times.gaps) / total}


def bare_rate(dm: WindowDataModule, cfg: TDMPC2Config, steps: int, warmup: int) -> dict:
    agent = make_module(cfg, 0).agent  # the same initial weights as the Lightning run
    batches, wait, start = iter(dm.sampler), 0.0, None
    for i in range(warmup + steps):
        if i == warmup:
            start, wait = time.perf_counter(), 0.0
        t = time.perf_counter()
        batch = next(batches)
        wait += time.perf_counter() - t
        agent.update(batch)
    total = time.perf_counter() - start
    return {"rate": steps / total, "wait": wait / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1M")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=60, help="timed updates per path")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; best kept")
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "bench-mt80-1M"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.rounds = 4, 1, 1
    torch.set_num_threads(args.threads)
    build(Path(args.data), 1_000_000)
    print(f"load: {open('/proc/loadavg').read().split()[:3]}  threads: {args.threads}")
    results: dict[str, list[dict]] = {"bare loop": [], "lightning": []}
    for _ in range(args.rounds):  # alternate, so that machine load hits both paths alike
        for name, fn in (("bare loop", bare_rate), ("lightning", lightning_rate)):
            dm = WindowDataModule(args.data, batch_size=args.batch_size, horizon=3, seed=0,
                                  cache_bytes=1 << 30, num_workers=1)  # fmt: skip
            cfg = TDMPC2Config(size=args.size, tasks=dm.tasks, obs_dim=dm.obs_dim,
                               action_dim=dm.action_dim, batch_size=args.batch_size)  # fmt: skip
            results[name].append(fn(dm, cfg, args.steps, args.warmup))
    best = {name: max(rows, key=lambda r: r["rate"]) for name, rows in results.items()}
    base = best["bare loop"]["rate"]
    print(f"\n{args.size} mt80, batch {args.batch_size}, horizon 3, {args.steps} timed updates")
    print(f"{'path':<10} {'updates/s':>10} {'vs bare':>8} {'loader wait':>12}")
    for name, r in best.items():
        print(f"{name:<10} {r['rate']:>10.2f} {r['rate'] / base:>7.2f}x {100 * r['wait']:>11.1f}%")
    print(f"load after: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
