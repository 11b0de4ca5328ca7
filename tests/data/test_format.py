"""The shard format: writer, reader and verify, on real zarr stores on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import fsspec
import numpy as np
import pytest
import zarr
from dataset_content import write_random

from tdmpc2_data import TASK_SETS, ShardWriter, open_dataset
from tdmpc2_data.cli import main as cli
from tdmpc2_data.format import DatasetError, compact, finalize, verify_dataset


def episode(obs_dim: int, action_dim: int, length: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "obs": np.cumsum(rng.normal(0, 0.1, (length + 1, obs_dim)), 0).astype(np.float32),
        "action": rng.uniform(-1, 1, (length, action_dim)).astype(np.float32),
        "reward": rng.uniform(0, 1, length).astype(np.float32),
    }


def padded(ep: dict, D: int, A: int) -> dict[str, np.ndarray]:
    obs = np.zeros((ep["obs"].shape[0], D), np.float32)
    obs[:, : ep["obs"].shape[1]] = ep["obs"]
    act = np.zeros((ep["action"].shape[0], A), np.float32)
    act[:, : ep["action"].shape[1]] = ep["action"]
    return {"obs": obs, "action": act, "reward": ep["reward"]}


def read_all(ds) -> list[dict]:
    """Every episode of the dataset as a dict, in storage order."""
    out = []
    for i in range(len(ds.shards)):
        fields = ("obs", "action", "reward", "task")
        fields += tuple(f for f in ("success", "source") if ds.has_field(i, f))
        data = ds.read_shard(i, fields)
        for e in range(ds.shards[i].episodes):
            out.append({k: v[e] for k, v in data.items()})
    return out


@pytest.fixture
def mixed(tmp_path) -> tuple[Path, list[tuple[str, dict]]]:
    """An mt80 dataset with DMControl (real dims 24/6, 6/2, 501-step) and Meta-World episodes."""
    eps = [
        ("walker-walk", episode(24, 6, 100, 1)),
        ("mw-door-open", episode(39, 4, 100, 2)),
        ("reacher-easy", episode(6, 2, 100, 3)),
        ("walker-walk", episode(24, 6, 100, 4)),
        ("cheetah-run", episode(17, 6, 500, 5)),
        ("mw-door-open", episode(39, 4, 100, 6)),
    ]
    root = tmp_path / "ds"
    with ShardWriter(root, tasks=TASK_SETS["mt80"], name="mixed", episodes_per_shard=3) as w:
        for i, (task, ep) in enumerate(eps):
            if i == 5:  # already padded input is accepted as well
                ep = padded(ep, 39, 6)
            w.add_episode(task, **ep)
    return root, eps


# ---------------------------------------------------------------- writer + reader
def test_round_trip_identical_arrays_and_root_attributes(mixed):
    root, eps = mixed
    ds = open_dataset(root)
    attrs = json.loads((root / "zarr.json").read_text())["attributes"]
    assert attrs["tdmpc2_format"] == 1 and attrs["name"] == "mixed"
    assert (attrs["obs_dim"], attrs["action_dim"]) == (39, 6)
    assert attrs["tasks"][1] == {
        "id": 1,
        "name": "walker-walk",
        "domain": "dmcontrol",
        "obs_dim": 24,
        "action_dim": 6,
        "episode_length": 500,
    }
    assert [t["name"] for t in attrs["tasks"]] == TASK_SETS["mt80"]
    assert attrs["created_by"].startswith("tdmpc2-toolkit")
    assert ds.num_episodes == 6 and ds.num_transitions == 5 * 100 + 500
    assert sorted(s.episode_length for s in ds.shards) == [100, 100, 500]
    for s in ds.shards:  # one length per shard, episodes in task order
        assert s.transitions == s.episodes * s.episode_length
    got = read_all(ds)
    assert len(got) == len(eps)
    # match each stored episode to its source by the task and the first reward (unique)
    for g in got:
        matches = [
            padded(ep, 39, 6)
            for t, ep in eps
            if ds.task_id(t) == g["task"] and ep["reward"][0] == g["reward"][0]
        ]
        assert len(matches) == 1
        want = matches[0]
        for field in ("obs", "action", "reward"):
            assert g[field].dtype == np.float32
            np.testing.assert_array_equal(g[field], want[field])


def test_padding_is_exact_zero_and_masks_match_tasks(mixed):
    root, _ = mixed
    ds = open_dataset(root)
    masks = ds.action_masks()
    assert masks.shape == (80, 6) and masks.dtype == np.float32
    for i, t in enumerate(ds.task_info):
        np.testing.assert_array_equal(masks[i], [1] * t["action_dim"] + [0] * (6 - t["action_dim"]))
    np.testing.assert_array_equal(ds.action_mask("mw-door-open"), [1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(ds.action_mask("reacher-easy"), [1, 1, 0, 0, 0, 0])
    for g in read_all(ds):
        t = ds.task_info[g["task"]]
        assert not np.any(g["obs"][:, t["obs_dim"] :].view(np.uint32))  # bitwise +0.0
        assert not np.any(g["action"][:, t["action_dim"] :].view(np.uint32))


def test_task_ranges_follow_task_order(mixed):
    root, _ = mixed
    ds = open_dataset(root)
    for i, s in enumerate(ds.shards):
        task = ds.read_shard(i, ("task",))["task"]
        assert list(task) == sorted(task)
        for tid, rng in s.task_ranges.items():
            assert set(task[rng.start : rng.stop]) == {tid}
    runs = ds.task_episodes("door-open")
    assert sum(len(r) for _, r in runs) == 2


@pytest.mark.parametrize(
    "task, fields, message",
    [
        ("walker-walk", {"obs": np.zeros((101, 30))}, "obs has shape (101, 30)"),
        ("walker-walk", {"obs": np.zeros((100, 24))}, "expected (101, d)"),
        ("mw-door-open", {"action": np.zeros((100, 5))}, "action has shape (100, 5)"),
        ("walker-walk", {"reward": np.zeros(99)}, "reward has shape (99,)"),
        ("reacher-easy", {"action": np.ones((100, 6))}, "action[..., 2:] is padding"),
        ("walker-walk", {"reward": np.full(100, np.nan)}, "reward contains NaN"),
        ("walker-run-backwards", {}, "not in the task table"),
    ],
)
def test_bad_episodes_are_rejected_naming_the_field(tmp_path, task, fields, message):
    root = tmp_path / "ds"
    with ShardWriter(root, tasks=["walker-walk", "mw-door-open", "reacher-easy"]) as w:
        w.add_episode("walker-walk", **episode(24, 6, 100, 0))
        w.flush()
        dims = {"walker-walk": (24, 6), "mw-door-open": (39, 4), "reacher-easy": (6, 2)}
        ep = {**episode(*dims.get(task, (24, 6)), 100, 1), **fields}
        with pytest.raises(ValueError) as err:
            w.add_episode(task, **ep)
        assert message in str(err.value)
    ds = open_dataset(root)  # the rejected episode left the data untouched
    assert ds.num_episodes == 1


def test_reopen_appends_and_registers_sources(tmp_path):
    root = tmp_path / "ds"
    with ShardWriter(root, tasks=TASK_SETS["mt30"], sources=[{"agent": "a", "seed": 1}]) as w:
        w.add_episode("cup-spin", **episode(8, 2, 50, 0))
    with pytest.raises(ValueError, match="not in this dataset's task table"):
        ShardWriter(root, tasks=["mw-door-open"])
    with ShardWriter(root, tasks=["walker-walk"], sources=[{"agent": "b", "seed": 2}]) as w:
        w.add_episode("walker-walk", **episode(24, 6, 50, 1))
        w.add_episode("walker-walk", **episode(24, 6, 50, 2), source={"agent": "a", "seed": 1})
    ds = open_dataset(root)
    assert ds.num_episodes == 3 and len(ds.shards) == 2
    assert [(s["id"], s["agent"]) for s in ds.attrs["sources"]] == [(0, "a"), (1, "b")]
    assert sorted(ds.read_shard(1, ("source",))["source"]) == [0, 1]
    assert list(ds.read_shard(0, ("source",))["source"]) == [0]


def test_float16_obs_and_success_round_trip(tmp_path):
    root = tmp_path / "ds"
    ep = episode(39, 4, 100, 0)
    success = np.arange(100) > 60
    with ShardWriter(root, tasks=["mw-door-open"], obs_dtype="float16") as w:
        w.add_episode("mw-door-open", **ep, success=success)
    ds = open_dataset(root)
    data = ds.read_shard(0, ("obs", "success"))
    assert data["obs"].dtype == np.float16
    np.testing.assert_array_equal(data["obs"][0], ep["obs"].astype(np.float16))
    np.testing.assert_array_equal(data["success"][0], success)


def test_fsspec_url_reads_through_zarr_fsspec_store(mixed):
    root, _ = mixed
    fs = fsspec.filesystem("memory")
    fs.put(f"{root}/", "/fsspec-ds", recursive=True)
    remote, local = open_dataset("memory://fsspec-ds"), open_dataset(root)
    assert type(remote.store).__name__ == "FsspecStore"
    assert remote.num_episodes == local.num_episodes
    for i in range(len(local.shards)):
        for k, v in local.read_shard(i).items():
            np.testing.assert_array_equal(remote.read_shard(i)[k], v)


def test_online_agent_flushes_each_episode_then_compacts(tmp_path):
    root = tmp_path / "ds"
    eps = [episode(24, 6, 50, i) for i in range(7)]
    for run in range(2):  # two runs of an agent growing one dataset
        with ShardWriter(root, tasks=["walker-walk", "cheetah-run"], sources=[{"run": run}]) as w:
            for ep in eps[run * 4 : run * 4 + 4]:
                w.add_episode("walker-walk", **ep)
                assert len(w.flush()) == 1  # on disk and indexed at once
                assert len(open_dataset(root).shards) == len(w.shards_written) + run * 4
    before = read_all(open_dataset(root))
    assert compact(root, episodes_per_shard=4) == ["000007", "000008"]
    ds = open_dataset(root)
    assert [s.episodes for s in ds.shards] == [4, 3] and ds.num_episodes == 7
    after = read_all(ds)
    for a, b in zip(
        sorted(before, key=lambda g: g["reward"][0]),
        sorted(after, key=lambda g: g["reward"][0]),
        strict=True,
    ):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    assert sorted(os.listdir(root / "shards")) == ["000007", "000008"]


def test_dataset_pickles_for_worker_processes(mixed):
    import pickle

    root, _ = mixed
    ds = open_dataset(root)
    first = ds.read_shard(0)
    clone = pickle.loads(pickle.dumps(ds))
    for k, v in clone.read_shard(0).items():
        np.testing.assert_array_equal(v, first[k])


# ---------------------------------------------------------------- refusing bad data
def _edit_root(root: Path, **changes) -> None:
    meta = json.loads((root / "zarr.json").read_text())
    meta["attributes"].update(changes)
    (root / "zarr.json").write_text(json.dumps(meta))


def test_a_writer_refuses_an_unknown_format_version(mixed):
    """(Readers meeting damage: tests/data/test_dataset_damage.py.)"""
    root, _ = mixed
    _edit_root(root, tdmpc2_format=2)
    with pytest.raises(DatasetError, match="tdmpc2_format"):
        ShardWriter(root)  # not appended to


def test_unindexed_shard_warns_and_finalize_indexes_it(mixed):
    root, _ = mixed
    attrs = json.loads((root / "zarr.json").read_text())["attributes"]
    _edit_root(root, shards=attrs["shards"][:-1])
    with pytest.warns(UserWarning, match=r"not in the root index \(shards/000002\).*finalize"):
        assert len(open_dataset(root).shards) == 2
    finalize(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(open_dataset(root).shards) == 3


def test_finalize_removes_temps_of_dead_writers_only(mixed):
    import socket

    root, _ = mixed
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    host, pid = socket.gethostname(), int(dead.stdout)
    stale = [root / f".tmp-{host}-{pid}-ab12.json", root / "shards" / f".tmp-{host}-{pid}-cd34"]
    live = root / "shards" / f".tmp-{host}-{os.getpid()}-ef56"
    stale[0].write_text("{}")
    stale[1].mkdir()
    live.mkdir()
    finalize(root)
    assert not any(p.exists() for p in stale) and live.exists()


# ---------------------------------------------------------------- verify
def test_verify_clean_dataset_and_cli(mixed, capsys):
    root, _ = mixed
    report = verify_dataset(root)
    assert report.ok and report.shards == 3 and report.episodes == 6, report.summary()
    assert cli(["verify", str(root)]) == 0
    assert capsys.readouterr().out.strip().endswith("OK")
    assert cli(["info", str(root)]) == 0
    out = capsys.readouterr().out
    assert "walker-walk" in out and "6 episodes, 1000 transitions" in out


@pytest.mark.parametrize("damage", ["episode count", "garbage"])
def test_appends_to_a_dataset_with_damaged_shard_metadata_keep_it_readable(mixed, damage):
    """A shard's own zarr.json is what an append rebuilds the root index from: before, the
    next append made the whole dataset unopenable. (What verify reports about it:
    tests/data/test_dataset_damage.py.)"""
    root, eps = mixed
    meta = root / "shards" / "000001" / "zarr.json"
    if damage == "garbage":
        meta.write_text("garbage{")
    else:
        doc = json.loads(meta.read_text())
        doc["attributes"]["episodes"] = 7
        meta.write_text(json.dumps(doc))
    before = (root / "zarr.json").read_text()
    with pytest.raises(DatasetError, match=r"shards/000001/zarr\.json: .*run tdmpc2-data verify"):
        with ShardWriter(root) as w:
            w.add_episode("walker-walk", **episode(24, 6, 100, 9))
    old = json.loads(before)["attributes"]["shards"]
    index = json.loads((root / "zarr.json").read_text())["attributes"]["shards"]
    assert index[: len(old)] == old  # the old entries stand; the new shard is added
    ds = open_dataset(root)  # still readable, with every episode (and the appended one)
    assert ds.num_episodes == len(eps) + 1


# ---------------------------------------------------------------- processes
WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from tdmpc2_data import ShardWriter
    root, wid, n, per_shard, length = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    task = ["walker-walk", "cheetah-run"][wid % 2]
    dims = {"walker-walk": (24, 6), "cheetah-run": (17, 6)}[task]
    rng = np.random.default_rng(wid)
    with ShardWriter(root, tasks=["walker-walk", "cheetah-run"], episodes_per_shard=per_shard,
                     sources=[{"writer": wid}]) as w:
        for i in range(n):
            obs = rng.normal(size=(length + 1, dims[0])).astype(np.float32)
            obs[0, 0] = wid * 100000 + i  # identifies the episode
            w.add_episode(task, obs, rng.uniform(-1, 1, (length, dims[1])), rng.normal(size=length))
    """
)


def _spawn(root: Path, wid: int, n: int, per_shard: int, length: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-c", WRITER, str(root), str(wid), str(n), str(per_shard), str(length)]
    return subprocess.Popen(args, env=env)


def test_concurrent_writer_processes_share_one_root(tmp_path):
    root = tmp_path / "ds"
    procs = [_spawn(root, wid, 24, 3, 20) for wid in (0, 1)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    ds = open_dataset(root)
    assert len(ds.shards) == 16 and len({s.path for s in ds.shards}) == 16
    ids = sorted(int(g["obs"][0, 0]) for g in read_all(ds))
    assert ids == sorted(w * 100000 + i for w in (0, 1) for i in range(24))
    assert len(ds.attrs["sources"]) == 2
    assert ds.task_counts() == {0: 24, 1: 24}


FLUSH_ON_GO = textwrap.dedent(
    """
    import sys, numpy as np
    from tdmpc2_data import ShardWriter
    with ShardWriter(sys.argv[1], tasks=["walker-walk"], sources=[{"writer": 1}]) as w:
        print("ready", flush=True)
        sys.stdin.readline()
        w.add_episode("walker-walk", np.ones((11, 24), np.float32), np.zeros((10, 6)), np.zeros(10))
    """
)


def _waits_for_a_lock(pid: int) -> bool:
    """Whether process ``pid`` is blocked on a file lock (a ``->`` line of /proc/locks)."""
    return any("->" in line and f" {pid} " in line for line in open("/proc/locks"))


def _state(pid: int) -> str:
    """The state letter of process ``pid`` (``T``: stopped)."""
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]


def test_a_compaction_between_a_writers_shard_and_its_index_is_no_error(tmp_path):
    """Two writers on a new dataset (as two `tdmpc2-data collect`): writer B's shard is on
    disk, B waits for the root lock to index it, and A's compaction (`collect` compacts at
    the end) merges it first. B exits 0 (before: "unreadable shard metadata", exit 1, 2 of
    10 rounds of two real collect-like writers), and both writers' episodes are there once.
    The interleaving is made exact with SIGSTOP: B stopped while it waits for the lock."""
    from tdmpc2_data.writer import root_lock, shard_names

    root = tmp_path / "ds"
    a = ShardWriter(root, tasks=["walker-walk"], sources=[{"writer": 0}])
    a.add_episode("walker-walk", np.zeros((11, 24), np.float32), np.zeros((10, 6)), np.zeros(10))
    a.flush()
    b = subprocess.Popen([sys.executable, "-c", FLUSH_ON_GO, str(root)], text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert b.stdout.readline() == "ready\n"
    with root_lock(root):  # B's shard goes on disk, then B waits here to index it
        b.stdin.write("go\n")
        b.stdin.flush()
        deadline = time.monotonic() + 60
        while len(shard_names(root)) < 2 or not _waits_for_a_lock(b.pid):
            assert time.monotonic() < deadline and b.poll() is None, b.communicate()
            time.sleep(0.01)
        os.kill(b.pid, signal.SIGSTOP)
        while _state(b.pid) != "T":  # stopped before the lock is free: else it could take it
            time.sleep(0.01)
    try:
        assert compact(root) == ["000002"]  # A's and B's shards merged, B's deleted
    finally:
        os.kill(b.pid, signal.SIGCONT)
    _, err = b.communicate(timeout=60)
    assert b.returncode == 0, err
    a.close()
    ds = open_dataset(root)
    assert [s.path for s in ds.shards] == ["shards/000002"] and ds.num_episodes == 2
    assert sorted(ds.read_shard(0, ("obs",))["obs"][:, 0, 0]) == [0.0, 1.0]
    assert verify_dataset(root).ok


def test_writer_killed_mid_shard_leaves_a_readable_dataset(tmp_path):
    root = tmp_path / "ds"
    proc = _spawn(root, 0, 10_000, 100, 500)  # ~5 MB shards, written continuously
    shards = root / "shards"
    deadline = time.time() + 60
    while time.time() < deadline:  # wait for a finished shard, then for a shard in progress
        names = os.listdir(shards) if shards.is_dir() else []
        if any(n.isdigit() for n in names) and any(n.startswith(".tmp-") for n in names):
            break
        time.sleep(0.005)
    else:
        proc.kill()
        pytest.fail("the writer never started a second shard")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert any(n.startswith(".tmp-") for n in os.listdir(shards))  # killed mid-shard
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # killed between rename and indexing: a warning
        ds = open_dataset(root)
    for i in range(len(ds.shards)):
        ds.read_shard(i)
    report = verify_dataset(root)
    assert report.ok and report.episodes >= 100, report.summary()
    finalize(root)  # indexes every whole shard, removes the dead writer's temp directory
    assert not any(n.startswith(".tmp-") for n in os.listdir(shards))
    ds = open_dataset(root)
    assert ds.num_episodes >= 100 and ds.num_episodes % 100 == 0
    assert verify_dataset(root).ok and not verify_dataset(root).warnings
    ShardWriter(root).close()  # and the dataset can grow again


def test_a_zstd_chunk_without_a_declared_size_is_refused_unread(tmp_path):
    """A zstd frame without a content size (streamed) decodes to whatever it holds, so it is
    refused before decoding; one declaring its chunk's size reads (``tdmpc2_data.codecs``)."""
    import zstandard

    path = tmp_path / "a"
    zarr.create_array(path, shape=(8,), chunks=(8,), dtype="float32",
                      compressors=[zarr.codecs.ZstdCodec()])[:] = 1  # fmt: skip
    data = np.full(8, 2, np.float32).tobytes()
    (path / "c" / "0").write_bytes(
        zstandard.ZstdCompressor(write_content_size=False).compress(data)
    )
    with pytest.raises(
        ValueError, match=r"zstd chunk of shape \(8,\) declares no size, expected 32"
    ):
        zarr.open_array(path, mode="r")[:]
    (path / "c" / "0").write_bytes(zstandard.ZstdCompressor().compress(data))
    assert (zarr.open_array(path, mode="r")[:] == 2).all()


def test_a_symlinked_shard_directory_is_refused_never_followed(tmp_path):
    """A shard to delete (here: merged by compact) that is a symbolic link: one error naming
    it (rmtree's own names nothing); the directory it points to stays whole."""
    root = tmp_path / "ds"
    for seed in range(2):  # two writers: two shards
        write_random(root, ["walker-walk"], 2, seed=seed)
    first = root / "shards" / sorted(os.listdir(root / "shards"))[0]
    elsewhere = tmp_path / "elsewhere"
    first.rename(elsewhere)
    first.symlink_to(elsewhere)
    with pytest.raises(OSError, match=f"^{first}: is a symbolic link .*refused to delete it"):
        compact(root, episodes_per_shard=100)
    assert first.is_symlink() and (elsewhere / "zarr.json").is_file()
