"""WindowSampler and WindowDataModule on real shard datasets written with ShardWriter.

Every stored value encodes where it lives: obs[t] = (episode id, t, 7, ...), action[t] =
(episode id, t, 7, ...) / 1024 (exact in float32, and inside the tasks' [-1, 1]),
reward[t] = 1000 * episode id + t, so any misaligned, shifted or cross-episode window is
visible in the numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from checkout import ROOT
from scipy.stats import chisquare

from tdmpc2_data import ShardWriter, open_dataset
from tdmpc2_data.batch import Batch
from tdmpc2_data.loader import WindowSampler

TASKS = [
    {"name": "toy-small", "obs_dim": 3, "action_dim": 2},
    {"name": "toy-wide", "obs_dim": 5, "action_dim": 3},
]
ACTION_CODE = 1024  # actions store (id, t, 7) / ACTION_CODE


def write_dataset(root: Path, episodes: list[tuple[int, str, int]], per_shard: int, tasks=TASKS):
    """Write episodes (id, task name, T) whose values encode (id, t)."""
    dims = {t["name"]: (t["obs_dim"], t["action_dim"]) for t in tasks}
    with ShardWriter(root, tasks=tasks, episodes_per_shard=per_shard) as w:
        for gid, task, length in episodes:
            d, a = dims[task]
            steps = np.arange(length + 1, dtype=np.float32)
            obs = np.full((length + 1, d), 7.0, np.float32)
            obs[:, 0], obs[:, 1] = gid, steps
            action = np.full((length, a), 7.0, np.float32)
            action[:, 0], action[:, 1] = gid, steps[:-1]
            action /= ACTION_CODE
            w.add_episode(task, obs, action, 1000.0 * gid + steps[:-1])
    return open_dataset(root)


def stored_episodes(ds) -> dict[int, dict[str, np.ndarray]]:
    """Every episode as stored (padded), keyed by its encoded id."""
    out = {}
    for i in range(len(ds.shards)):
        data = ds.read_shard(i)
        for e in range(ds.shards[i].episodes):
            out[int(data["obs"][e, 0, 0])] = {k: v[e] for k, v in data.items()}
    return out


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Two tasks of different widths, episode lengths 8 and 13, several shards."""
    eps = [(g, TASKS[g % 2]["name"], 8 if g % 3 else 13) for g in range(60)]
    return write_dataset(tmp_path_factory.mktemp("mixed") / "ds", eps, per_shard=9)


def windows(sampler: WindowSampler, batches: int) -> list[Batch]:
    it = iter(sampler)
    out = [next(it) for _ in range(batches)]
    sampler.close()
    return out


def starts(batch: Batch) -> list[tuple[int, int]]:
    """(episode id, window start t) of each window of a batch."""
    return list(zip(*batch.obs[0, :, :2].long().T.tolist(), strict=True))


# ------------------------------------------------------------------ exact windows
@pytest.mark.parametrize("cache_bytes", [1 << 30, 6000], ids=["resident", "rotating"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_windows_are_exact_slices_of_stored_episodes(mixed, cache_bytes, num_workers):
    H = 3
    sampler = WindowSampler(
        mixed, batch_size=32, horizon=H, cache_bytes=cache_bytes, num_workers=num_workers
    )
    assert sampler.cache_info()["resident"] == (cache_bytes > 6000)
    stored = stored_episodes(mixed)
    for batch in windows(sampler, 40):
        assert batch.obs.shape == (H + 1, 32, 5) and batch.obs.dtype == torch.float32
        assert batch.action.shape == (H, 32, 3) and batch.reward.shape == (H, 32)
        assert batch.task.dtype == torch.int64 and batch.task.shape == (32,)
        for b, (gid, t) in enumerate(starts(batch)):
            ep = stored[gid]
            assert 0 <= t <= len(ep["reward"]) - H  # never past the episode's end
            np.testing.assert_array_equal(batch.obs[:, b].numpy(), ep["obs"][t : t + H + 1])
            np.testing.assert_array_equal(batch.action[:, b].numpy(), ep["action"][t : t + H])
            np.testing.assert_array_equal(batch.reward[:, b].numpy(), ep["reward"][t : t + H])
            assert batch.task[b] == ep["task"]
        # alignment spelled out: action[h] and reward[h] belong to obs[h] -> obs[h+1]
        assert torch.equal(batch.action[:, :, 1] * ACTION_CODE, batch.obs[:-1, :, 1])
        assert torch.equal(batch.reward, 1000 * batch.obs[:-1, :, 0] + batch.obs[:-1, :, 1])


def test_fsspec_store_gives_the_same_batches(mixed):
    """Remote datasets (hf://, any fsspec URL) go through the same reader: same batches."""
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.put(f"{mixed.location}/", "/loader-ds", recursive=True)
    remote = WindowSampler("memory://loader-ds", batch_size=16, cache_bytes=6000, num_workers=2)
    local = WindowSampler(mixed, batch_size=16, cache_bytes=6000)
    for a, b in zip(windows(remote, 30), windows(local, 30), strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------ distribution
@pytest.mark.parametrize("cache_bytes", [1 << 30, 3000], ids=["resident", "rotating"])
def test_uniform_over_transitions(tmp_path, cache_bytes):
    """Chi-square of window-start counts against uniform over all valid (episode, t).

    When rotating, each block gets its exact share per cycle of visits, so the counts are
    uniform up to the last, partial cycle: sample many cycles (a cycle is ~40 batches here).
    """
    H = 3
    lengths = [4, 6, 9, 15, 25]
    eps = [(g, "toy-small", lengths[g % 5]) for g in range(15)]
    ds = write_dataset(tmp_path / "ds", eps, per_shard=4)
    sampler = WindowSampler(ds, batch_size=64, horizon=H, cache_bytes=cache_bytes, seed=3)
    assert sampler.cache_info()["resident"] == (cache_bytes > 3000)
    counts = Counter(w for batch in windows(sampler, 5000) for w in starts(batch))
    valid = [(g, t) for g, _, T in eps for t in range(T - H + 1)]
    assert set(counts) == set(valid)
    observed = np.array([counts[w] for w in valid])
    assert chisquare(observed).pvalue > 1e-3
    # the original's per-episode-uniform choice would be far off on these mixed lengths
    per_episode = np.repeat(observed.sum() / len(eps), len(eps))
    sums = np.array([sum(counts[(g, t)] for t in range(T - H + 1)) for g, _, T in eps])
    assert chisquare(sums, per_episode).pvalue < 1e-6


def test_task_weights(tmp_path):
    eps = [(g, "toy-small" if g < 30 else "toy-wide", 10) for g in range(36)]  # 30 vs 6
    ds = write_dataset(tmp_path / "ds", eps, per_shard=8)

    def share_of_wide(weights) -> float:
        s = WindowSampler(ds, batch_size=512, horizon=3, task_weights=weights, seed=1)
        tasks = torch.cat([b.task for b in windows(s, 40)])
        return float((tasks == ds.task_id("toy-wide")).float().mean())

    assert abs(share_of_wide(None) - 6 / 36) < 0.01  # uniform over transitions
    assert abs(share_of_wide("balanced") - 0.5) < 0.01
    assert abs(share_of_wide({"toy-small": 1, "toy-wide": 3}) - 0.75) < 0.01
    assert share_of_wide({"toy-wide": 1}) == 1.0
    with pytest.raises(ValueError, match="'walker-walk', which is not in"):
        WindowSampler(ds, task_weights={"walker-walk": 1})
    with pytest.raises(ValueError, match="weight 0"):
        WindowSampler(ds, task_weights={"toy-wide": 0})


def test_excluded_tasks_stay_in_the_table_but_are_never_sampled(tmp_path):
    """The few-shot split: held-out tasks keep their ids, the rest stay uniform over
    transitions (episodes of different lengths)."""
    tasks = [*TASKS, {"name": "toy-held", "obs_dim": 4, "action_dim": 2}]
    eps = [(g, ("toy-small", "toy-wide", "toy-held")[g % 3], 5 + 5 * (g % 3)) for g in range(30)]
    ds = write_dataset(tmp_path / "ds", eps, per_shard=8, tasks=tasks)
    sampler = WindowSampler(ds, batch_size=512, horizon=3, seed=2, exclude_tasks=["toy-held"])
    assert sampler.tasks == ["toy-small", "toy-wide", "toy-held"]
    drawn = torch.cat([b.task for b in windows(sampler, 40)])
    assert not (drawn == 2).any()
    starts_small, starts_wide = 10 * (5 - 3 + 1), 10 * (10 - 3 + 1)  # valid starts per task
    share = float((drawn == 1).float().mean())
    assert abs(share - starts_wide / (starts_small + starts_wide)) < 0.01
    with pytest.raises(ValueError, match="exclude_tasks names 'toy-nope'"):
        WindowSampler(ds, exclude_tasks=["toy-nope"])
    with pytest.raises(ValueError, match="leaves no episodes"):
        WindowSampler(ds, exclude_tasks=["toy-small", "toy-wide", "toy-held"])


def test_rotating_cache_mixes_tasks_stored_task_by_task(tmp_path):
    """Shards hold one task after another and the cache ~16 blocks; still each batch
    serves most of the 40 tasks, because blocks interleave parts of all tasks (blocks of
    consecutive episodes would give at most ~16 tasks per batch)."""
    tasks = [{"name": f"toy-{k}", "obs_dim": 39, "action_dim": 2} for k in range(40)]
    eps = [(g, f"toy-{g // 8}", 100) for g in range(320)]  # 8 episodes per task, in order
    ds = write_dataset(tmp_path / "ds", eps, per_shard=80, tasks=tasks)
    sampler = WindowSampler(ds, batch_size=256, cache_bytes=ds.num_transitions * 168 // 4)
    assert not sampler.cache_info()["resident"] and sampler.cache_info()["slots"] <= 16
    for batch in windows(sampler, 50):
        assert len(set(batch.task.tolist())) >= 28


def test_combined_datasets_share_one_task_table(tmp_path):
    """A narrow dataset (obs 3, action 2) and a wide one: tasks by name, padding to the max."""
    narrow = write_dataset(tmp_path / "a", [(g, "toy-small", 10) for g in range(10)], 5, TASKS[:1])
    wide = write_dataset(
        tmp_path / "b", [(100 + g, TASKS[g % 2]["name"], 10) for g in range(30)], 7, TASKS[::-1]
    )
    sampler = WindowSampler([narrow, wide], batch_size=256, horizon=2)
    assert sampler.tasks == ["toy-small", "toy-wide"]
    assert (sampler.obs_dim, sampler.action_dim) == (5, 3)
    small = stored_episodes(narrow)
    for batch in windows(sampler, 10):
        for b, (gid, t) in enumerate(starts(batch)):
            name = "toy-small" if gid < 100 or gid % 2 == 0 else "toy-wide"
            assert sampler.tasks[batch.task[b]] == name
            if gid < 100:  # zero-padded from the narrow dataset's widths
                assert batch.obs[:, b, 3:].abs().sum() == 0 and batch.action[:, b, 2].sum() == 0
                np.testing.assert_array_equal(batch.obs[:, b, :3], small[gid]["obs"][t : t + 3])
    with pytest.raises(ValueError, match="cannot be combined"):
        other = [{"name": "toy-small", "obs_dim": 4, "action_dim": 2}]
        WindowSampler([narrow, write_dataset(tmp_path / "c", [(0, "toy-small", 5)], 1, other)])


# ------------------------------------------------------------------ DDP
def test_ranks_sample_disjoint_shards_balanced_by_transitions(mixed):
    seen, sizes = [], []
    for rank in range(2):
        s = WindowSampler(mixed, batch_size=256, horizon=3, rank=rank, world_size=2, seed=5)
        sizes.append(s.cache_info()["transitions"])
        seen.append({gid for b in windows(s, 20) for gid, _ in starts(b)})
    assert seen[0].isdisjoint(seen[1])
    assert seen[0] | seen[1] == set(range(60))
    assert sum(sizes) == mixed.num_transitions
    assert abs(sizes[0] - sizes[1]) <= max(s.transitions for s in mixed.shards)
    shard_of = {
        int(gid): i
        for i in range(len(mixed.shards))
        for gid in mixed.read_shard(i, ("obs",))["obs"][:, 0, 0]
    }
    assert {shard_of[g] for g in seen[0]}.isdisjoint({shard_of[g] for g in seen[1]})


def test_fewer_shards_than_ranks_splits_episode_ranges(tmp_path):
    ds = write_dataset(tmp_path / "ds", [(g, "toy-small", 10) for g in range(9)], per_shard=20)
    assert len(ds.shards) == 1
    seen = []
    for rank in range(3):
        s = WindowSampler(ds, batch_size=256, horizon=3, rank=rank, world_size=3)
        seen.append({gid for b in windows(s, 5) for gid, _ in starts(b)})
    assert [len(x) for x in seen] == [3, 3, 3]
    assert set().union(*seen) == set(range(9))
    with pytest.raises(ValueError, match="only 9 episodes"):
        WindowSampler(ds, rank=0, world_size=10).cache_info()


def test_rank_and_world_size_come_from_torch_distributed(mixed, tmp_path):
    """Two real processes in a gloo process group; no rank given to the sampler."""
    script = textwrap.dedent(
        f"""
        import json, sys, torch.distributed as dist
        from tdmpc2_data.loader import WindowSampler
        rank = int(sys.argv[1])
        dist.init_process_group("gloo", init_method="file://{tmp_path}/pg", rank=rank,
                                world_size=2)
        s = WindowSampler({mixed.location!r}, batch_size=256, seed=5)
        it = iter(s)
        ids = sorted({{int(x) for _ in range(10) for x in next(it).obs[0, :, 0]}})
        print(json.dumps([s.rank, s.world_size, ids]))
        dist.destroy_process_group()
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(r)], stdout=subprocess.PIPE, env=env)
        for r in range(2)
    ]
    out = [json.loads(p.communicate(timeout=120)[0].decode().splitlines()[-1]) for p in procs]
    assert [o[:2] for o in out] == [[0, 2], [1, 2]]
    assert set(out[0][2]).isdisjoint(out[1][2])
    for rank in range(2):  # the same split as explicit rank/world_size
        s = WindowSampler(mixed, batch_size=256, seed=5, rank=rank, world_size=2)
        assert {gid for b in windows(s, 10) for gid, _ in starts(b)} == set(out[rank][2])


# ------------------------------------------------------------------ reproducibility
def test_reproducible_from_seed_epoch_and_independent_of_workers(mixed):
    def run(seed=0, workers=0, epoch=None):
        s = WindowSampler(mixed, batch_size=64, cache_bytes=6000, seed=seed, num_workers=workers)
        if epoch is not None:
            s.set_epoch(epoch)
        return torch.stack([b.obs for b in windows(s, 300)])

    first = run()
    assert torch.equal(first, run())
    assert torch.equal(first, run(workers=2))
    assert torch.equal(first, run(epoch=0))
    assert not torch.equal(first, run(seed=1))
    assert not torch.equal(first, run(epoch=1))


@pytest.mark.parametrize("cache_bytes", [1 << 30, 6000], ids=["resident", "rotating"])
def test_resume_at_continues_the_stream_where_it_stopped(mixed, cache_bytes):
    """What a resumed training run gets: after ``resume_at(k)`` the next iteration is the
    uninterrupted one from its batch k on (rotation included); the one after is whole."""

    def sampler():
        return WindowSampler(mixed, batch_size=64, cache_bytes=cache_bytes, num_workers=1)

    whole = torch.stack([b.obs for b in windows(sampler(), 200)])
    s = sampler()
    s.resume_at(130)
    assert torch.equal(torch.stack([b.obs for b in windows(s, 70)]), whole[130:])
    s.set_epoch(0)
    assert torch.equal(torch.stack([b.obs for b in windows(s, 10)]), whole[:10])


def test_epochs_are_finite_with_batches_per_epoch(mixed):
    s = WindowSampler(mixed, batch_size=16, batches_per_epoch=5, num_workers=1)
    epochs = [list(s) for _ in range(2)]
    assert len(s) == 5 and [len(e) for e in epochs] == [5, 5]
    assert not torch.equal(epochs[0][0].obs, epochs[1][0].obs)  # each iter() moves one epoch on
    s.set_epoch(0)
    assert all(torch.equal(a.obs, b.obs) for a, b in zip(epochs[0], list(s), strict=True))
    with pytest.raises(TypeError, match="endless"):
        len(WindowSampler(mixed))
    old, new = iter(s), iter(s)
    next(old), next(new)  # the newer iterator takes over the cache
    with pytest.raises(RuntimeError, match="newer iter"):
        next(old)


# ------------------------------------------------------------------ errors
def test_clear_errors(tmp_path, mixed):
    with pytest.raises(ValueError, match="horizon=20 is longer than every episode"):
        WindowSampler(mixed, horizon=20)
    short = sum(s.episode_length == 8 for s in mixed.shards)
    with pytest.warns(UserWarning, match=f"Skipping {short} shard"):  # T=8 shards are skipped
        assert WindowSampler(mixed, horizon=10).cache_info()["transitions"] == 20 * 13
    ShardWriter(tmp_path / "empty", tasks=TASKS).close()
    with pytest.raises(ValueError, match="has no episodes"):
        WindowSampler(tmp_path / "empty")
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="batch_size="):
            WindowSampler(mixed, batch_size=bad)
    with pytest.raises(ValueError, match="horizon=0"):
        WindowSampler(mixed, horizon=0)
    with pytest.raises(ValueError, match="cache_bytes=500 is too small"):
        WindowSampler(mixed, cache_bytes=500).cache_info()
    with pytest.raises(ValueError, match="rank and world_size"):
        WindowSampler(mixed, rank=1)
    with pytest.raises(ValueError, match="at least one dataset"):
        WindowSampler([])


# ------------------------------------------------------------------ memory budget
MEMORY_SCRIPT = """
import gc, json, sys, threading, time
import psutil
from tdmpc2_data import open_dataset
from tdmpc2_data.loader import WindowSampler

ds = open_dataset(sys.argv[1])
proc = psutil.Process()


def run(budget, batches):
    peak, base, stop = [0], proc.memory_info().rss, threading.Event()

    def poll():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    t = threading.Thread(target=poll)
    t.start()
    s = WindowSampler(ds, batch_size=256, cache_bytes=budget, num_workers=2)
    it = iter(s)
    for _ in range(batches):
        next(it)
    s.close()
    stop.set()
    t.join()
    info = s.cache_info()
    del s, it
    gc.collect()
    return {"growth": peak[0] - base, **info}


run(3 << 20, 50)  # library set-up (first decode, first torch index, threads) is not cache
print(json.dumps({"bounded": run(int(sys.argv[2]), 400), "resident": run(1 << 32, 100)}))
"""


def test_memory_stays_within_budget_on_a_larger_dataset(tmp_path):
    rng = np.random.default_rng(0)
    mt = [{"name": "mt-like", "obs_dim": 39, "action_dim": 6}]
    with ShardWriter(tmp_path / "ds", tasks=mt, episodes_per_shard=500) as w:
        for _ in range(6):  # 3000 episodes of 100 steps: 55 MB decoded
            w.add_episodes(
                "mt-like",
                rng.normal(size=(500, 101, 39)).astype(np.float32),
                rng.uniform(-1, 1, (500, 100, 6)).astype(np.float32),
                rng.random((500, 100)).astype(np.float32),
            )
    budget = 16 << 20
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path / "ds"), str(budget)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    bounded, resident = result["bounded"], result["resident"]
    assert not bounded["resident"] and bounded["blocks"] > 2 * bounded["slots"]
    # slack: batches prepared ahead (prefetch x workers, + 2 being handed over), and as much
    # again that the allocator may hold between trims
    slack = 2 * (2 * 2 + 2) * bounded["group_bytes"] + (2 << 20)
    assert bounded["growth"] < 1.1 * budget + slack, result
    # the same measurement sees a cache that holds everything (55 MB)
    assert resident["resident"] and resident["growth"] > 3000 * 101 * 46 * 4, result


# ------------------------------------------------------------------ Lightning
def test_lightning_trainer_consumes_the_datamodule(mixed, tmp_path):
    import lightning as L

    from tdmpc2_data.datamodule import WindowDataModule

    class Recorder(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))
            self.seen: list[tuple[int, torch.Tensor]] = []

        def training_step(self, batch, _):
            assert isinstance(batch, Batch) and batch.obs.shape == (4, 8, 5)
            self.seen.append((self.current_epoch, batch.obs.clone()))
            return (self.w * batch.reward.mean()) ** 2

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = WindowDataModule(mixed, batch_size=8, horizon=3, batches_per_epoch=3, seed=2)
    assert dm.tasks == ["toy-small", "toy-wide"] and (dm.obs_dim, dm.action_dim) == (5, 3)
    model = Recorder()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=dm)
    assert [e for e, _ in model.seen] == [0, 0, 0, 1, 1, 1]
    for epoch in range(2):  # epoch e's batches are the sampler's stream for set_epoch(e)
        ref = WindowSampler(mixed, batch_size=8, horizon=3, batches_per_epoch=3, seed=2)
        ref.set_epoch(epoch)
        got = [obs for e, obs in model.seen if e == epoch]
        assert all(torch.equal(a, b.obs) for a, b in zip(got, ref, strict=True))
