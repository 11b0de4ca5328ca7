"""Hub transfer speed on the local Hub server: push, download, time to first batch.

    OMP_NUM_THREADS=1 python bench/hub.py [--mb 256] [--rounds 2]

The server (``tests/hub_server.py``) runs in its own process on 127.0.0.1, so client and
server do not share a GIL; the client is the real ``huggingface_hub`` (plain HTTP + LFS,
``HF_HUB_DISABLE_XET=1``). Every number is the best of ``--rounds`` (fresh repo / fresh
target each round), side by side with a baseline measured in the same run:

- push: ``tdmpc2_data.hub.push`` (bounded commits, hashes for skip-if-present, card) vs
  ``HfApi.upload_folder`` (one commit) of the same files;
- download: ``tdmpc2_data.hub.download`` (index, then shards) vs ``snapshot_download`` of
  the same repo vs plain ``urllib`` GETs of every file (what the server can serve);
- time to first batch (256 episodes of shard 0: obs, action, reward, task decoded):
  stream from ``hf://`` with fsspec's default read-ahead (each ranged read fetches ~5 MB
  more than asked) and with ``storage_options={"block_size": 64 KiB}``, vs download
  everything then read, vs download only the shard(s) of one task then read. "MB fetched"
  is what the server sent (its ``/_stats``). (``block_size=0`` streaming cannot be used:
  zarr's probe for a v2 ``.zgroup`` then raises EntryNotFound, not FileNotFoundError.)

The data is mt80-like (T=100, obs padded to 39, random-walk obs and actions), written with
``ShardWriter`` at its default shard size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKEN, USER = "hf_benchtoken", "bench"


def start_server(store: Path) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "hub_server.py"), "--root", str(store),
         "--token", f"{TOKEN}:{USER}"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    return server, server.stdout.readline().strip()


def point_client_at(endpoint: str, home: Path) -> None:
    """Environment for huggingface_hub; must run before it is imported."""
    os.environ.update(
        HF_ENDPOINT=endpoint,
        HF_HUB_DISABLE_XET="1",
        HF_HOME=str(home),
        HF_HUB_CACHE=str(home / "hub"),
        HF_TOKEN=TOKEN,
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        TDMPC2_DATA_HOME=str(home / "tdmpc2"),
    )


def make_dataset(root: Path, megabytes: float, seed: int = 0) -> None:
    import numpy as np

    from tdmpc2_data import TASK_SETS, ShardWriter, get_task

    rng = np.random.default_rng(seed)
    tasks = ["walker-walk", "mw-door-open", "cheetah-run", "mw-reach"]
    per_episode = 101 * 39 * 4 + 100 * (6 + 1) * 4  # padded bytes before compression
    per_task = int(megabytes * 1e6 / per_episode / len(tasks)) + 1
    with ShardWriter(root, tasks=TASK_SETS["mt80"], name="bench") as w:
        for name in tasks:
            t = get_task(name)
            walk = rng.normal(0, 0.05, (per_task, 101, t.obs_dim)).astype(np.float32)
            steer = rng.normal(0, 0.3, (per_task, 100, t.action_dim)).astype(np.float32)
            w.add_episodes(
                name,
                obs=np.cumsum(walk, axis=1),
                action=np.tanh(np.cumsum(steer, axis=1)),
                reward=rng.uniform(size=(per_task, 100)).astype(np.float32),
            )


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts)


def served(endpoint: str) -> int:
    """File bytes the server has sent so far."""
    with urllib.request.urlopen(f"{endpoint}/_stats") as f:
        return json.load(f)["bytes_served"]


def best(rounds: int, fn, endpoint: str) -> tuple[float, float]:
    """Best wall time of ``fn(round)`` over ``rounds``, and MB the server sent per round."""
    times, sent = [], served(endpoint)
    for r in range(rounds):
        start = time.perf_counter()
        fn(r)
        times.append(time.perf_counter() - start)
    return min(times), (served(endpoint) - sent) / rounds / 1e6


def first_batch(ds) -> None:
    batch = ds.read_shard(0, episodes=slice(0, 256))
    assert batch["obs"].shape[0] == min(256, ds.shards[0].episodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=256, help="uncompressed dataset size")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-hub-"))
    server, endpoint = start_server(work / "server")
    try:
        point_client_at(endpoint, work / "client")
        run(args, work, endpoint)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path, endpoint: str) -> None:
    from huggingface_hub import HfApi, snapshot_download

    from tdmpc2_data import hub, open_dataset

    data = work / "data"
    make_dataset(data, args.mb)
    ds = open_dataset(data)
    mb = tree_bytes(data) / 1e6
    api = HfApi()
    rows = []

    def push(r: int) -> None:
        hub.push(data, f"{USER}/ours-{r}")

    def upload_folder(r: int) -> None:
        api.create_repo(f"{USER}/base-{r}", repo_type="dataset")
        api.upload_folder(folder_path=data, repo_id=f"{USER}/base-{r}", repo_type="dataset",
                          ignore_patterns=[".*", "**/.*"])  # fmt: skip

    rows.append(("push: tdmpc2_data.hub.push", mb, best(args.rounds, push, endpoint)[0]))
    rows.append(
        ("push: HfApi.upload_folder (baseline)", mb, best(args.rounds, upload_folder, endpoint)[0])
    )
    repo = f"{USER}/ours-0"
    files = [f.path for f in api.list_repo_tree(repo, repo_type="dataset", recursive=True)
             if hasattr(f, "blob_id")]  # fmt: skip

    def download(r: int) -> None:
        hub.download(repo, local_dir=work / f"dl-ours-{r}")

    def snapshot(r: int) -> None:
        snapshot_download(repo, repo_type="dataset", local_dir=work / f"dl-base-{r}")

    def raw_get(r: int) -> None:
        for path in files:
            with urllib.request.urlopen(f"{endpoint}/datasets/{repo}/resolve/main/{path}") as f:
                while f.read(1 << 20):
                    pass

    rows.append(
        ("download: tdmpc2_data.hub.download", mb, best(args.rounds, download, endpoint)[0])
    )
    rows.append(
        ("download: snapshot_download (baseline)", mb, best(args.rounds, snapshot, endpoint)[0])
    )
    rows.append(
        (
            "download: urllib GET per file (server bound)",
            mb,
            best(args.rounds, raw_get, endpoint)[0],
        )
    )

    print(f"\nHub transfers on {endpoint} ({len(ds.shards)} shards, {len(files)} files, "
          f"{mb:.0f} MB stored, best of {args.rounds})\n")  # fmt: skip
    print(f"| {'operation':<46} | {'MB':>6} | {'s':>6} | {'MB/s':>6} |")
    print(f"|{'-' * 48}|{'-' * 8}|{'-' * 8}|{'-' * 8}|")
    for name, size, secs in rows:
        print(f"| {name:<46} | {size:>6.0f} | {secs:>6.2f} | {size / secs:>6.0f} |")

    from huggingface_hub import HfFileSystem

    def stream(options: dict | None):
        def fn(r: int) -> None:
            HfFileSystem.clear_instance_cache()  # no listing cached from an earlier round
            first_batch(open_dataset(hub.hub_url(repo), storage_options=options))

        return fn

    shard0_task = ds.tasks[min(ds.shards[0].task_counts)]
    batch = [
        ("stream hf://, then read", stream(None)),
        ("stream hf:// block_size=64 KiB, then read", stream({"block_size": 1 << 16})),
        ("download all, then read",
         lambda r: first_batch(open_dataset(hub.download(repo, local_dir=work / f"all-{r}")))),
        (f"download shards of {shard0_task}, then read",
         lambda r: first_batch(open_dataset(
             hub.download(repo, tasks=[shard0_task], local_dir=work / f"one-{r}")))),
    ]  # fmt: skip
    print(f"\nTime to first batch (256 episodes of shard 0 decoded), best of {args.rounds}\n")
    print(f"| {'how':<46} | {'s':>6} | {'MB fetched':>10} |")
    print(f"|{'-' * 48}|{'-' * 8}|{'-' * 12}|")
    for name, fn in batch:
        secs, fetched = best(args.rounds, fn, endpoint)
        print(f"| {name:<46} | {secs:>6.2f} | {fetched:>10.1f} |")


if __name__ == "__main__":
    main()
