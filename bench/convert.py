"""Legacy chunk conversion and shard codecs, measured on a synthetic mt80-like chunk.

    OMP_NUM_THREADS=1 python bench/convert.py [--gb 1.1] [--keep DIR]
    OMP_NUM_THREADS=1 python bench/convert.py --published [--episodes 90000] [--dir /tmp]

1. Writes a legacy chunk (a TensorDict [episodes, 101] saved by torch.save, NaN filler,
   80 tasks in contiguous blocks) with mt80's real padding: DMControl obs/actions padded from
   their real dims to 39/6, Meta-World 39/4 -> 39/6. Real dims are random walks (smooth
   obs, tanh actions, sigmoid rewards), not white noise, so compression is realistic.
2. Conversion: MB/s of legacy input (wall and per CPU second) and peak RSS of a fresh process
   running ``convert_chunk``, hot page cache and cold (file evicted with posix_fadvise),
   side by side with the original's way of reading a chunk (``torch.load`` with tensordict).
3. Bytes per transition: shards vs the legacy file.
4. Codec table on a 4000-episode sample (all tasks): bytes/transition, write MB/s, full read
   MB/s and random single-episode reads/s per CPU second (process time of all threads, best
   of 3: robust to other jobs on a shared machine), for the codec and chunk sizes tried.

``--published`` instead writes a chunk of the published mt30 layout at real scale (tensordict
0.2.1 state with ``_device = torch.device('cpu')``, protocol 4, T+1 = 501, obs width 24;
90,000 episodes: 5.8 GB, its obs member 4.3 GB, a ZIP64 member, and the members after it at
offsets past 4 GiB), streamed to disk block by block (never in RAM), then converts it in a
fresh process and prints its peak RSS and MB/s; both files are deleted afterwards.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tdmpc2_data.tasks import TASK_SETS, get_task

STEPS = 101  # T+1 of the mt80 chunks
REPEATS = 3
EPISODE_BYTES = STEPS * (39 + 6 + 1 + 2) * 4  # obs, action, reward float32 + task int64


def synthetic_chunk(path: Path, gigabytes: float, seed: int = 0) -> int:
    """Write an mt80-like legacy chunk of about ``gigabytes``; returns its episode count."""
    import torch
    from tensordict import TensorDict

    tasks = TASK_SETS["mt80"]
    per_task = int(gigabytes * 1e9 / EPISODE_BYTES / len(tasks)) + 1
    n = per_task * len(tasks)
    rng = np.random.default_rng(seed)
    obs = np.zeros((n, STEPS, 39), np.float32)
    action = np.zeros((n, STEPS, 6), np.float32)
    reward = np.empty((n, STEPS), np.float32)
    task = np.repeat(np.arange(len(tasks), dtype=np.int64), per_task)
    for k, name in enumerate(tasks):
        t = get_task(name)
        rows = slice(k * per_task, (k + 1) * per_task)
        walk = rng.normal(0, 0.05, (per_task, STEPS, t.obs_dim)).astype(np.float32)
        walk[:, 0] = rng.normal(0, 1, (per_task, t.obs_dim))
        obs[rows, :, : t.obs_dim] = np.cumsum(walk, axis=1)
        steer = rng.normal(0, 0.3, (per_task, STEPS, t.action_dim)).astype(np.float32)
        action[rows, :, : t.action_dim] = np.tanh(np.cumsum(steer, axis=1))
        drift = np.cumsum(rng.normal(0, 0.2, (per_task, STEPS)), axis=1)
        reward[rows] = 1 / (1 + np.exp(-drift))
    action[:, 0], reward[:, 0] = np.nan, np.nan  # the filler step
    td = TensorDict(
        {
            "obs": torch.from_numpy(obs),
            "action": torch.from_numpy(action),
            "reward": torch.from_numpy(reward),
            "task": torch.from_numpy(np.repeat(task[:, None], STEPS, axis=1)),
        },
        batch_size=[n, STEPS],
    )
    torch.save(td, path)
    return n


# ------------------------------------------------------------------ measured in a fresh process
# VmHWM is this process's own peak; ru_maxrss would include the parent's from before exec.
PEAK = """
def PEAK_RSS():
    status = open("/proc/self/status").read()
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) * 1024
"""
CONVERT = """
import json, re, sys, time
from tdmpc2_data.convert.legacy_pt import convert_chunk
t0, c0 = time.perf_counter(), time.process_time()
r = convert_chunk(sys.argv[1], sys.argv[2])
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                  "episodes": r.episodes, "transitions": r.transitions,
                  "rss": PEAK_RSS()}))
"""
TORCH_LOAD = """
import json, re, sys, time, torch
t0, c0 = time.perf_counter(), time.process_time()
td = torch.load(sys.argv[1], weights_only=False)  # the original's loader (needs tensordict)
total = float(td["obs"].sum())  # touch the data
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                  "rss": PEAK_RSS()}))
"""


# ------------------------------------------------------------------ a published chunk at real scale
MT30_STEPS, MT30_OBS, MT30_ACTION = 501, 24, 6
BLOCK_EPISODES = 500


def _published_blocks(field: str, episodes: int, seed: int):
    """Blocks (bytes) of ``field`` for ``episodes`` mt30 episodes, tasks in contiguous runs
    (a block never crosses one): random walks on the task's real dims, zero padding, filler
    step 0 (action 0, reward NaN)."""
    tasks = TASK_SETS["mt30"]
    per_task = -(-episodes // len(tasks))
    rng = np.random.default_rng(seed)
    hi = 0
    while hi < episodes:
        lo, hi = hi, min(hi + BLOCK_EPISODES, episodes, (hi // per_task + 1) * per_task)
        n, tid = hi - lo, lo // per_task
        task = get_task(tasks[tid])
        if field == "task":
            x = np.full((n, MT30_STEPS), tid, np.int32)
        elif field == "reward":
            x = rng.random((n, MT30_STEPS), np.float32)
            x[:, 0] = np.nan
        else:
            width, real = (
                (MT30_OBS, task.obs_dim) if field == "obs" else (MT30_ACTION, task.action_dim)
            )
            x = np.zeros((n, MT30_STEPS, width), np.float32)
            walk = rng.standard_normal((n, MT30_STEPS, real), np.float32)
            x[..., :real] = np.cumsum(walk * np.float32(0.05), axis=1)
            if field == "action":
                x[..., :real] = np.tanh(x[..., :real])
                x[:, 0] = 0
        yield x.tobytes()


def published_chunk(path: Path, episodes: int) -> None:
    """Stream an mt30 chunk of the published layout to ``path`` (ZIP64 where needed)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from legacy_chunks import chunk_pickle, write_torch_zip  # the tests' layout writer

    shapes = {
        "obs": (np.float32, (episodes, MT30_STEPS, MT30_OBS)),
        "action": (np.float32, (episodes, MT30_STEPS, MT30_ACTION)),
        "reward": (np.float32, (episodes, MT30_STEPS)),
        "task": (np.int32, (episodes, MT30_STEPS)),
    }
    storages = [
        (int(np.prod(shape)) * np.dtype(dtype).itemsize, _published_blocks(k, episodes, seed))
        for seed, (k, (dtype, shape)) in enumerate(shapes.items())
    ]
    write_torch_zip(path, chunk_pickle("published-mt30", shapes), storages)


def published_scale(args: argparse.Namespace) -> None:
    """Convert a real-scale published-layout chunk; print its size, peak RSS and MB/s."""
    import zipfile

    work = Path(tempfile.mkdtemp(prefix="bench-published-", dir=args.dir))
    chunk = work / "chunk_0.pt"
    try:
        t0 = time.perf_counter()
        published_chunk(chunk, args.episodes)
        size = chunk.stat().st_size
        with zipfile.ZipFile(chunk) as z:
            members = {i.filename.rsplit("/", 1)[-1]: i for i in z.infolist()}
        obs, last = members["0"], members["3"]
        print(f"published-layout mt30 chunk: {args.episodes} episodes x {MT30_STEPS} steps, "
              f"{size / 1e9:.2f} GB, obs member {obs.file_size / 2**30:.2f} GiB, task member "
              f"at offset {last.header_offset / 2**30:.2f} GiB "
              f"(written in {time.perf_counter() - t0:.0f} s)")  # fmt: skip
        evict(chunk)
        r = run_measured(CONVERT, str(chunk), str(work / "ds"))
        shards = dir_bytes(work / "ds")
        print(f"convert_chunk, cold cache: {r['episodes']} episodes in {r['wall']:.0f} s, "
              f"{size / r['wall'] / 1e6:.0f} MB/s wall, {size / r['cpu'] / 1e6:.0f} MB/s per "
              f"CPU second, peak RSS {r['rss'] / 1e9:.2f} GB (VmHWM), shards {shards / 1e9:.2f} GB")  # fmt: skip
        print(f"machine: {os.cpu_count()} cores, uptime: {os.popen('uptime').read().strip()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_measured(code: str, *args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", PEAK + code, *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def evict(path: Path) -> None:
    """Drop the file from the page cache so the next read comes from disk."""
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ------------------------------------------------------------------ codec table
def codec_table(chunk: Path, work: Path, legacy_per_transition: float) -> list[dict]:
    import zarr.codecs as zc

    from tdmpc2_data import schema
    from tdmpc2_data.convert.safe_pickle import TorchZip, as_tensordict
    from tdmpc2_data.reader import open_dataset
    from tdmpc2_data.writer import ShardWriter, finalize, shard_attributes, write_shard

    with TorchZip(chunk) as z:
        f = as_tensordict(z.load(), str(chunk)).fields
        n = f["task"].shape[0]
        pick = np.sort(np.random.default_rng(0).choice(n, 4000, replace=False))
        pick = pick[np.argsort(f["task"][pick, 0], kind="stable")]
        arrays = {
            "obs": np.array(f["obs"][pick]),
            "action": np.array(f["action"][pick, 1:]),
            "reward": np.array(f["reward"][pick, 1:]),
            "task": f["task"][pick, 0].astype(np.int16),
        }
    raw = sum(a.nbytes for a in arrays.values())
    transitions = arrays["reward"].size

    def blosc(cname, level, shuffle, itemsize):
        return [zc.BloscCodec(cname=cname, clevel=level, shuffle=shuffle, typesize=itemsize),
                zc.Crc32cCodec()]  # fmt: skip

    def zstd(level, itemsize):
        return [zc.ZstdCodec(level=level), zc.Crc32cCodec()]

    K = 1 << 10
    choices = [
        ("zstd-1", functools.partial(zstd, 1), 512 * K),
        ("zstd-3", functools.partial(zstd, 3), 512 * K),
        ("blosc-lz4-5 shuffle", functools.partial(blosc, "lz4", 5, "shuffle"), 512 * K),
        ("blosc-zstd-3 bitshuffle", functools.partial(blosc, "zstd", 3, "bitshuffle"), 512 * K),
        ("blosc-zstd-5 shuffle", functools.partial(blosc, "zstd", 5, "shuffle"), 512 * K),
        ("blosc-zstd-3 shuffle", functools.partial(blosc, "zstd", 3, "shuffle"), 512 * K),
        ("blosc-zstd-1 shuffle", functools.partial(blosc, "zstd", 1, "shuffle"), 128 * K),
        ("blosc-zstd-1 shuffle", functools.partial(blosc, "zstd", 1, "shuffle"), 2048 * K),
        ("blosc-zstd-1 shuffle (default)", schema.compressors, schema.CHUNK_TARGET_BYTES),
    ]
    rows = []
    rng = np.random.default_rng(1)
    for name, codecs, chunk_bytes in choices:
        write_s, read_s, random_s = [], [], []
        for _ in range(REPEATS):  # best of REPEATS, in CPU seconds: the machine is shared
            root = work / "codec"
            shutil.rmtree(root, ignore_errors=True)
            ShardWriter(root, tasks=TASK_SETS["mt80"]).close()
            t0 = time.process_time()
            shard = write_shard(root, arrays, shard_attributes(arrays), codecs, chunk_bytes)
            write_s.append(time.process_time() - t0)
            size = dir_bytes(root / "shards" / shard)
            finalize(root)
            ds = open_dataset(root)
            t0 = time.process_time()
            ds.read_shard(0)
            read_s.append(time.process_time() - t0)
            ds = open_dataset(root)
            t0 = time.process_time()
            for e in rng.integers(0, 4000, 200):
                ds.read_shard(0, ("obs", "action", "reward"), slice(int(e), int(e) + 1))
            random_s.append(time.process_time() - t0)
        write_s, read_s, random_s = min(write_s), min(read_s), min(random_s)
        rows.append(
            {
                "codec": name,
                "chunk_KiB": chunk_bytes // K,
                "bytes_per_transition": size / transitions,
                "vs_legacy": size / transitions / legacy_per_transition,
                "write_MBps": raw / write_s / 1e6,
                "read_MBps": raw / read_s / 1e6,
                "random_episodes_per_s": 200 / random_s,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.1, help="legacy chunk size (default 1.1)")
    parser.add_argument("--keep", help="work directory to keep (default: a temp dir, removed)")
    parser.add_argument(
        "--published", action="store_true", help="convert a real-scale published mt30 chunk"
    )
    parser.add_argument("--episodes", type=int, default=90_000, help="its episodes (--published)")
    parser.add_argument("--dir", help="where to write it (--published; default the temp dir)")
    args = parser.parse_args()
    if args.published:
        return published_scale(args)
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-convert-"))
    work.mkdir(parents=True, exist_ok=True)
    chunk = work / "chunk_0.pt"
    try:
        t0 = time.perf_counter()
        episodes = synthetic_chunk(chunk, args.gb)
        size = chunk.stat().st_size
        print(f"synthetic mt80 chunk: {episodes} episodes, {size / 1e9:.2f} GB "
              f"(made in {time.perf_counter() - t0:.0f} s)\n")  # fmt: skip

        rows = []
        for cache in ("hot", "cold"):
            if cache == "cold":
                evict(chunk)
            base = run_measured(TORCH_LOAD, str(chunk))
            rows.append(("torch.load (original, read only)", cache, base))
            shutil.rmtree(work / "shards-ds", ignore_errors=True)
            if cache == "cold":
                evict(chunk)
            ours = run_measured(CONVERT, str(chunk), str(work / "shards-ds"))
            rows.append(("tdmpc2 convert_chunk (read+convert+write)", cache, ours))
        print(f"{'conversion':<42} {'cache':>5} {'wall MB/s':>10} {'MB/s/core':>10} "
              f"{'peak RSS GB':>12} {'RSS/chunk':>10}")  # fmt: skip
        for name, cache, r in rows:
            print(f"{name:<42} {cache:>5} {size / r['wall'] / 1e6:>10.0f} "
                  f"{size / r['cpu'] / 1e6:>10.0f} {r['rss'] / 1e9:>12.2f} "
                  f"{r['rss'] / size:>10.2f}")  # fmt: skip

        transitions = ours["transitions"]
        shard_bytes = dir_bytes(work / "shards-ds" / "shards")
        legacy_pt = size / transitions
        print(f"\n{'storage':<42} {'bytes':>14} {'bytes/transition':>17} {'vs legacy':>10}")
        print(f"{'legacy .pt chunk':<42} {size:>14} {legacy_pt:>17.1f} {1:>10.2f}")
        print(f"{'shards (blosc-zstd-1 shuffle, crc32c)':<42} {shard_bytes:>14} "
              f"{shard_bytes / transitions:>17.1f} {shard_bytes / size:>10.2f}")  # fmt: skip

        print("\ncodecs on a 4000-episode sample of the same data:")
        print(f"{'codec':<32} {'chunk':>7} {'B/trans':>8} {'vs legacy':>10} "
              f"{'write MB/cpu-s':>15} {'read MB/cpu-s':>14} {'rand ep/cpu-s':>14}")  # fmt: skip
        for r in codec_table(chunk, work, legacy_pt):
            print(f"{r['codec']:<32} {r['chunk_KiB']:>5}Ki {r['bytes_per_transition']:>8.1f} "
                  f"{r['vs_legacy']:>10.2f} {r['write_MBps']:>15.0f} {r['read_MBps']:>14.0f} "
                  f"{r['random_episodes_per_s']:>14.0f}")  # fmt: skip
        load = os.getloadavg()[0]
        print(f"\nmachine: {os.cpu_count()} cores, load average {load:.1f} at the end (shared)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
