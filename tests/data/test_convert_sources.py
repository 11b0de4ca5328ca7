"""Converters from single-task buffers (TorchRL dumps, Minari, npz, HDF5) into one shard dataset.

Every source is a real file made here with the real library. The episodes written into the
sources follow a known dynamics (``obs[t+1][:a] = obs[t][:a] + action[t]``, ``reward[t] =
obs[t][0] + sum(action[t])``), so besides exact array equality the converted data is checked
for that relation: an action or reward shifted by one step breaks it.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from tdmpc2_data import get_task, open_dataset
from tdmpc2_data.cli import main
from tdmpc2_data.convert import convert
from tdmpc2_data.format import verify_dataset
from tdmpc2_data.tasks import TASK_SETS


# ---------------------------------------------------------------- canonical episodes
def make_episodes(task: str, count: int, length: int, seed: int) -> list[tuple]:
    """``count`` episodes (obs [T+1, d], action [T, a], reward [T]) of ``task``'s real widths."""
    t = get_task(task)
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(count):
        obs = rng.normal(size=(length + 1, t.obs_dim)).astype(np.float32)
        action = rng.uniform(-1, 1, size=(length, t.action_dim)).astype(np.float32)
        for i in range(length):  # the known dynamics
            obs[i + 1, : t.action_dim] = obs[i, : t.action_dim] + action[i]
        reward = (obs[:-1, 0] + action.sum(1)).astype(np.float32)
        episodes.append((obs, action, reward))
    return episodes


def follows_dynamics(obs: np.ndarray, action: np.ndarray, reward: np.ndarray) -> bool:
    a = action.shape[1]
    return bool(
        np.allclose(obs[1:, :a], obs[:-1, :a] + action, atol=1e-5)
        and np.allclose(reward, obs[:-1, 0] + action.sum(1), atol=1e-5)
    )


def read_back(root: Path) -> list[dict]:
    """Every episode of a dataset, unpadded, with its task name and source entry."""
    ds = open_dataset(root)
    sources = {s["id"]: s for s in ds.attrs["sources"]}
    out = []
    for i in range(len(ds.shards)):
        data = ds.read_shard(i, fields=("obs", "action", "reward", "task", "source"))
        for e in range(data["task"].shape[0]):
            info = ds.task_info[int(data["task"][e])]
            d, a = info["obs_dim"], info["action_dim"]
            assert not data["obs"][e][:, d:].any() and not data["action"][e][:, a:].any()
            out.append(
                {
                    "task": info["name"],
                    "source": sources[int(data["source"][e])],
                    "obs": data["obs"][e][:, :d],
                    "action": data["action"][e][:, :a],
                    "reward": data["reward"][e],
                }
            )
    return out


def assert_same_episodes(got: list[dict], expected: list[tuple]) -> None:
    """``got`` holds exactly the ``expected`` episodes (any order), bit for bit."""
    assert len(got) == len(expected)
    key = lambda obs: obs.tobytes()  # noqa: E731
    by_obs = {key(e["obs"]): e for e in got}
    for obs, action, reward in expected:
        e = by_obs[key(obs)]
        np.testing.assert_array_equal(e["action"], action)
        np.testing.assert_array_equal(e["reward"], reward)
        assert follows_dynamics(e["obs"], e["action"], e["reward"])


def legacy_rows(episodes: list[tuple]) -> list[tuple]:
    """The original TD-MPC2 layout of each episode: T+1 rows, NaN filler at row 0."""
    out = []
    for obs, action, reward in episodes:
        filler_a = np.full((1, action.shape[1]), np.nan, np.float32)
        out.append((obs, np.concatenate([filler_a, action]), np.r_[np.float32(np.nan), reward]))
    return out


# ---------------------------------------------------------------- npz
def test_npz_per_episode_both_conventions(tmp_path):
    eps = make_episodes("walker-walk", 3, 12, seed=0)
    aligned = tmp_path / "aligned.npz"
    np.savez(
        aligned,
        obs=np.stack([e[0] for e in eps]),
        action=np.stack([e[1] for e in eps]),
        reward=np.stack([e[2] for e in eps]),
        task="walker-walk",
        seed=7,
    )
    convert([aligned], tmp_path / "a", "npz")
    got = read_back(tmp_path / "a")
    assert_same_episodes(got, eps)
    assert got[0]["source"]["seed"] == 7 and got[0]["source"]["format"] == "npz"

    rows = legacy_rows(eps)
    legacy = tmp_path / "legacy.npz"
    np.savez_compressed(
        legacy,
        obs=np.stack([r[0] for r in rows]),
        actions=np.stack([r[1] for r in rows]),
        rewards=np.stack([r[2] for r in rows])[..., None],  # [E, T+1, 1] is accepted
    )
    with pytest.raises(ValueError, match="index-convention"):
        convert([legacy], tmp_path / "b", "npz", tasks="walker-walk")
    assert not (tmp_path / "b").exists()
    convert([legacy], tmp_path / "b", "npz", tasks="walker-walk", index_convention="legacy")
    assert_same_episodes(read_back(tmp_path / "b"), eps)


def test_wrong_convention_is_caught_by_the_dynamics_check(tmp_path):
    """Reading legacy rows (filler at 0) as `shards` shifts actions by one: the data the
    converter writes then breaks the dynamics, which is what the checks above rely on."""
    eps = make_episodes("walker-walk", 2, 8, seed=1)
    rows = legacy_rows(eps)
    # a 0 filler (older files) is finite, so nothing stops the wrong reading but the check
    stack = {
        "obs": np.stack([r[0] for r in rows]),
        "action": np.nan_to_num(np.stack([r[1] for r in rows])),
        "reward": np.nan_to_num(np.stack([r[2] for r in rows])),
    }
    np.savez(tmp_path / "zero_filler.npz", **stack)
    for convention, ok in (("legacy", True), ("shards", False)):
        dst = tmp_path / convention
        convert(
            [tmp_path / "zero_filler.npz"],
            dst,
            "npz",
            tasks="walker-walk",
            index_convention=convention,
        )
        got = read_back(dst)
        assert all(follows_dynamics(e["obs"], e["action"], e["reward"]) == ok for e in got)


@pytest.mark.parametrize("layout", ["ids-legacy", "done-next-obs", "done-shards"])
def test_npz_stacked_rows(tmp_path, layout):
    eps = make_episodes("cheetah-run", 3, 10, seed=2) + make_episodes("cheetah-run", 1, 6, seed=3)
    arrays: dict[str, np.ndarray] = {}
    expected = eps
    if layout == "ids-legacy":
        rows = legacy_rows(eps)
        arrays = {
            k: np.concatenate([r[i] for r in rows])
            for i, k in enumerate(("obs", "action", "reward"))
        }
        arrays["episode"] = np.concatenate([np.full(len(r[2]), 10 + i) for i, r in enumerate(rows)])
        convention = "legacy"
    elif layout == "done-next-obs":
        arrays = {
            "observations": np.concatenate([e[0][:-1] for e in eps]),
            "next_observations": np.concatenate([e[0][1:] for e in eps]),
            "actions": np.concatenate([e[1] for e in eps]),
            "rewards": np.concatenate([e[2] for e in eps]),
            "terminals": np.concatenate([np.arange(len(e[2])) == len(e[2]) - 1 for e in eps]),
        }
        convention = None
    else:  # obs[t], action[t] per row, no final obs: the last transition is lost
        arrays = {
            "obs": np.concatenate([e[0][:-1] for e in eps]),
            "action": np.concatenate([e[1] for e in eps]),
            "reward": np.concatenate([e[2] for e in eps]),
            "done": np.concatenate([np.arange(len(e[2])) == len(e[2]) - 1 for e in eps]),
        }
        expected = [(o[:-1], a[:-1], r[:-1]) for o, a, r in eps]
        convention = "shards"
    np.savez(tmp_path / "rows.npz", task=np.array("cheetah-run"), **arrays)
    convert([tmp_path / "rows.npz"], tmp_path / "out", "npz", index_convention=convention)
    got = read_back(tmp_path / "out")
    assert_same_episodes(got, expected)
    assert {e["task"] for e in got} == {"cheetah-run"}
    assert verify_dataset(tmp_path / "out").ok


def test_npz_streams_stored_files_from_a_memory_map(tmp_path):
    from tdmpc2_data.convert.from_npz import load_arrays

    np.savez(tmp_path / "a.npz", obs=np.zeros((5, 3), np.float32))
    np.savez_compressed(tmp_path / "b.npz", obs=np.zeros((5, 3), np.float32))
    assert isinstance(load_arrays(tmp_path / "a.npz")["obs"], np.memmap)
    assert not isinstance(load_arrays(tmp_path / "b.npz")["obs"], np.memmap)
    np.savez(tmp_path / "c.npz", obs=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"c\.npz: array 'obs' holds Python objects"):
        load_arrays(tmp_path / "c.npz")


# ---------------------------------------------------------------- merging and tasks
def _npz_source(path: Path, task: str | None, eps: list[tuple], seed: int) -> Path:
    extra = {"task": np.array(task)} if task else {}
    np.savez(
        path,
        obs=np.stack([e[0] for e in eps]),
        action=np.stack([e[1] for e in eps]),
        reward=np.stack([e[2] for e in eps]),
        seed=seed,
        **extra,
    )
    return path


def test_merge_sources_into_mt80_ids(tmp_path):
    sources = {
        "walker-walk": [make_episodes("walker-walk", 2, 10, seed=s) for s in (10, 11)],
        "mw-door-open": [make_episodes("mw-door-open", 3, 10, seed=12)],
    }
    paths, expected = [], []
    for task, per_seed in sources.items():
        for seed, eps in enumerate(per_seed):
            paths.append(_npz_source(tmp_path / f"{task}-{seed}.npz", task, eps, seed))
            expected.append((str(paths[-1]), task, seed, eps))
    results = convert(paths, tmp_path / "mt80", "npz", task_set="mt80")
    assert [r.episodes for r in results] == [2, 2, 3]

    ds = open_dataset(tmp_path / "mt80")
    assert ds.tasks == TASK_SETS["mt80"] and ds.name == "mt80"
    assert ds.task_id("walker-walk") == 1 and ds.task_id("mw-door-open") == 41
    assert (ds.obs_dim, ds.action_dim) == (39, 6)
    assert [(s["path"], s["task"], s["seed"], s["complete"]) for s in ds.attrs["sources"]] == [
        (p, t, s, True) for p, t, s, _ in expected
    ]
    got = read_back(tmp_path / "mt80")
    for path, task, _, eps in expected:
        mine = [e for e in got if e["source"]["path"] == path]
        assert {e["task"] for e in mine} == {task}
        assert_same_episodes(mine, eps)
    assert verify_dataset(tmp_path / "mt80").ok


def test_tasks_flag_assigns_tasks_in_order_and_rerun_skips(tmp_path):
    cheetah, walker = make_episodes("cheetah-run", 2, 9, 20), make_episodes("walker-run", 2, 9, 21)
    a = _npz_source(tmp_path / "a.npz", None, cheetah, 0)
    b = _npz_source(tmp_path / "b.npz", "walker-walk", walker, 1)  # metadata overridden
    dst = tmp_path / "out"
    convert([a, b], dst, "npz", tasks="cheetah-run,walker-run")
    ds = open_dataset(dst)
    assert ds.tasks == ["cheetah-run", "walker-run"]
    got = read_back(dst)
    assert_same_episodes([e for e in got if e["task"] == "cheetah-run"], cheetah)
    assert_same_episodes([e for e in got if e["task"] == "walker-run"], walker)

    results = convert([a, b], dst, "npz", tasks="cheetah-run,walker-run")
    assert all(r.skipped for r in results)
    assert open_dataset(dst).num_episodes == 4

    # one task for all sources
    c = _npz_source(tmp_path / "c.npz", None, make_episodes("cheetah-run", 2, 9, 22), 2)
    convert([a, c], tmp_path / "one", "npz", tasks="cheetah-run")
    assert open_dataset(tmp_path / "one").tasks == ["cheetah-run"]
    assert len(read_back(tmp_path / "one")) == 4


def test_convert_killed_mid_way_reruns_to_the_uninterrupted_dataset(tmp_path):
    """`tdmpc2-data convert` SIGKILLed while a source is half converted (the ones before it
    complete): the rerun skips the complete sources, redoes the interrupted one and ends with
    exactly the dataset of an uninterrupted run, every episode once."""
    import signal
    import subprocess
    import sys
    import time

    from dataset_content import episodes

    paths = [_npz_source(tmp_path / f"s{k}.npz", "cheetah-run",
                         make_episodes("cheetah-run", 300, 50, 40 + k), k) for k in range(4)]  # fmt: skip
    dst = tmp_path / "killed"
    argv = ["convert", *map(str, paths), str(dst), "--from", "npz"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tdmpc2_data.cli", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def sources() -> list[dict]:
        try:
            return json.loads((dst / "zarr.json").read_text())["attributes"]["sources"]
        except (OSError, ValueError, KeyError):
            return []

    deadline = time.monotonic() + 120
    while not (len(sources()) >= 2 and not sources()[-1]["complete"]):
        assert proc.poll() is None and time.monotonic() < deadline, "finished before the kill"
        time.sleep(0.005)
    proc.send_signal(signal.SIGSTOP)  # freeze it where it is, then kill it there
    assert [s["complete"] for s in sources()][-1] is False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert main(argv) == 0
    convert(paths, tmp_path / "uninterrupted", "npz")
    assert episodes(dst) == episodes(tmp_path / "uninterrupted")
    done = [(s["path"], s["complete"], s["episodes"]) for s in open_dataset(dst).attrs["sources"]]
    assert done == [(str(p), True, 300) for p in paths]
    report = verify_dataset(dst)
    assert report.ok and not report.warnings, report.summary()  # no episode twice


def test_bad_inputs_give_clear_errors_and_leave_data_alone(tmp_path):
    eps = make_episodes("reacher-easy", 2, 5, 30)
    good = _npz_source(tmp_path / "good.npz", "reacher-easy", eps, 0)
    np.savez(tmp_path / "noreward.npz", obs=np.zeros((2, 6, 6)), action=np.zeros((2, 5, 2)))
    with pytest.raises(ValueError, match=r"noreward\.npz: no reward array \(looked for reward"):
        convert([tmp_path / "noreward.npz"], tmp_path / "x", "npz", tasks="reacher-easy")
    with pytest.raises(ValueError, match="2 tasks for 1 sources"):
        convert([good], tmp_path / "x", "npz", tasks="reacher-easy,walker-walk")
    anonymous = _npz_source(tmp_path / "anon.npz", None, eps, 0)
    with pytest.raises(ValueError, match=r"anon\.npz: cannot tell which task.*pass --tasks"):
        convert([anonymous], tmp_path / "x", "npz")
    with pytest.raises(ValueError, match=r"good\.npz: obs has 6 dims, but task 'walker-walk'"):
        convert([good], tmp_path / "x", "npz", tasks="walker-walk")
    with pytest.raises(
        ValueError, match=r"good\.npz: its task 'reacher-easy' is not in --task-set"
    ):
        convert([good], tmp_path / "x", "npz", task_set="metaworld")
    wide = [(np.pad(o, ((0, 0), (0, 3)), constant_values=1.0), a, r) for o, a, r in eps]
    wide_path = _npz_source(tmp_path / "wide.npz", "reacher-easy", wide, 0)
    with pytest.raises(ValueError, match=r"wide\.npz episode 0: .*obs has shape \(6, 9\)"):
        convert([wide_path], tmp_path / "x", "npz")
    loud = [(o, 2 * a, r) for o, a, r in eps]  # a source acting in [-2, 2]
    loud_path = _npz_source(tmp_path / "loud.npz", "reacher-easy", loud, 0)
    with pytest.raises(ValueError, match=r"loud\.npz episode 0: .*act in \[-1, 1\]. Rescale"):
        convert([loud_path], tmp_path / "x", "npz")
    assert not (tmp_path / "x").exists()

    # an existing dataset survives a source that fails midway (NaN in its 2nd episode)
    dst = tmp_path / "out"
    convert([good], dst, "npz")
    before = read_back(dst)
    bad_eps = make_episodes("reacher-easy", 2, 5, 31)
    bad_eps[1][1][2, 0] = np.nan
    bad = _npz_source(tmp_path / "bad.npz", "reacher-easy", bad_eps, 1)
    with pytest.raises(ValueError, match=r"bad\.npz episode 1: action of step 2 is NaN"):
        convert([bad], dst, "npz", episodes_per_shard=1)  # episode 0 is on disk by then
    after = read_back(dst)
    assert len(after) == len(before) == 2
    assert verify_dataset(dst).ok
    # a new dataset whose only source fails is not left behind
    with pytest.raises(ValueError, match="NaN"):
        convert([bad], tmp_path / "new", "npz")
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------- HDF5
def test_hdf5_d4rl_flat_and_episode_groups(tmp_path):
    eps = make_episodes("hopper-hop", 3, 8, 40) + make_episodes("hopper-hop", 1, 5, 41)
    flat = tmp_path / "d4rl.hdf5"
    with h5py.File(flat, "w") as f:
        f["observations"] = np.concatenate([e[0][:-1] for e in eps])
        f["next_observations"] = np.concatenate([e[0][1:] for e in eps])
        f["actions"] = np.concatenate([e[1] for e in eps])
        f["rewards"] = np.concatenate([e[2] for e in eps])
        ends = [np.arange(len(e[2])) == len(e[2]) - 1 for e in eps]
        f["terminals"] = np.concatenate(ends[:2] + [np.zeros_like(x) for x in ends[2:]])
        f["timeouts"] = np.concatenate([np.zeros_like(x) for x in ends[:2]] + ends[2:])
        f.attrs["task"] = "hopper-hop"
        f.attrs["seed"] = 3
    groups = tmp_path / "groups.h5"
    with h5py.File(groups, "w") as f:
        for i, (obs, action, reward) in enumerate(eps):  # 10 > 2: numeric, not text, order
            g = f.create_group(f"episode_{i * 8}")
            g["observations"], g["actions"], g["rewards"] = obs, action, reward
    dst = tmp_path / "out"
    convert([flat, groups], dst, "hdf5", tasks="hopper-hop")
    got = read_back(dst)
    for path in (flat, groups):
        assert_same_episodes([e for e in got if e["source"]["path"] == str(path)], eps)
    assert got[0]["source"]["seed"] == 3

    # D4RL without next_observations: actions[t] at observations[t], last row dropped
    with h5py.File(tmp_path / "nonext.hdf5", "w") as f, h5py.File(flat) as src:
        for key in ("observations", "actions", "rewards", "terminals", "timeouts"):
            f[key] = src[key][()]
    convert([tmp_path / "nonext.hdf5"], tmp_path / "nonext", "hdf5", tasks="hopper-hop")
    assert_same_episodes(
        read_back(tmp_path / "nonext"), [(o[:-1], a[:-1], r[:-1]) for o, a, r in eps]
    )

    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["observations"] = np.zeros((4, 15))
        f["actions"] = np.zeros((3, 4))
        f["rewards"] = np.zeros(4)
    with pytest.raises(ValueError, match=r"bad\.h5: /actions has 3 rows, /observations 4"):
        convert([tmp_path / "bad.h5"], tmp_path / "x", "hdf5", tasks="hopper-hop")


# ---------------------------------------------------------------- TorchRL
def _tdmpc2_buffer(path: Path, eps: list[tuple], storage: str) -> None:
    """A replay buffer as the original TD-MPC2 fills it: one TensorDict of T+1 rows per episode
    (obs, action, reward, episode; NaN filler at row 0), then ``dumps``."""
    import torch
    from tensordict import TensorDict
    from torchrl.data import LazyMemmapStorage, LazyTensorStorage, ReplayBuffer

    cls = {"tensor": LazyTensorStorage, "memmap": LazyMemmapStorage}[storage]
    buffer = ReplayBuffer(storage=cls(1000))
    for i, (obs, action, reward) in enumerate(legacy_rows(eps)):
        td = TensorDict(
            {
                "obs": torch.from_numpy(obs),
                "action": torch.from_numpy(action),
                "reward": torch.from_numpy(reward),
                "episode": torch.full((len(obs),), i, dtype=torch.int64),
            },
            batch_size=[len(obs)],
        )
        buffer.extend(td)
    buffer.dumps(path)


@pytest.mark.parametrize("storage", ["tensor", "memmap"])
def test_torchrl_tdmpc2_layout(tmp_path, storage):
    eps = make_episodes("walker-walk", 3, 10, 50)
    _tdmpc2_buffer(tmp_path / "buffer", eps, storage)
    # loading never unpickles: a hostile prefetch.pkl next to the data stays unread
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Evil(str(marker)))
    (tmp_path / "buffer" / "prefetch.pkl").write_bytes(payload)
    results = convert([tmp_path / "buffer"], tmp_path / "out", "torchrl", tasks="walker-walk")
    assert not marker.exists()
    assert results[0].episodes == 3
    assert_same_episodes(read_back(tmp_path / "out"), eps)


class _Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_torchrl_transitions_ring_buffer(tmp_path):
    """TorchRL's transition layout in a ring buffer that wrapped: episodes from done flags,
    read from the cursor on; the oldest episode is cut (its first steps were overwritten)."""
    import torch
    from tensordict import TensorDict
    from torchrl.data import LazyMemmapStorage, ReplayBuffer

    eps = make_episodes("cartpole-swingup", 4, 10, 60)
    buffer = ReplayBuffer(storage=LazyMemmapStorage(32))  # 40 rows written: wraps
    for obs, action, reward in eps:
        n = len(reward)
        done = torch.zeros(n, 1, dtype=torch.bool)
        done[-1] = True
        buffer.extend(
            TensorDict(
                {
                    "observation": torch.from_numpy(obs[:-1]),
                    "action": torch.from_numpy(action),
                    "next": {
                        "observation": torch.from_numpy(obs[1:]),
                        "reward": torch.from_numpy(reward)[:, None],
                        "done": done,
                        "truncated": done,
                        "terminated": torch.zeros(n, 1, dtype=torch.bool),
                    },
                },
                batch_size=[n],
            )
        )
    buffer.dumps(tmp_path / "buffer")
    convert([tmp_path / "buffer"], tmp_path / "out", "torchrl", tasks="cartpole-swingup")
    got = read_back(tmp_path / "out")
    o, a, r = eps[0]
    expected = [(o[8:], a[8:], r[8:]), *eps[1:]]  # rows 0-7 of episode 0 were overwritten
    assert_same_episodes(got, expected)


def test_torchrl_collector_buffer(tmp_path):
    """A buffer filled by a real TorchRL collector on Pendulum-v1 (obs 3, action 1 like
    pendulum-swingup): episodes from ("collector", "traj_ids"), next obs chained exactly."""
    import torch
    from torchrl.collectors import Collector
    from torchrl.data import LazyTensorStorage, ReplayBuffer
    from torchrl.envs import GymEnv, StepCounter, TransformedEnv

    torch.manual_seed(0)
    env = TransformedEnv(GymEnv("Pendulum-v1"), StepCounter(max_steps=15))
    env.set_seed(0)
    collector = Collector(env, None, frames_per_batch=30, total_frames=60)
    buffer = ReplayBuffer(storage=LazyTensorStorage(100))
    batches = [b.clone() for b in collector]
    collector.shutdown()
    for batch in batches:  # Pendulum acts in [-2, 2], the tasks in [-1, 1] (the writer checks)
        batch["action"] /= 2
    for batch in batches:
        buffer.extend(batch)
    buffer.dumps(tmp_path / "buffer")
    convert([tmp_path / "buffer"], tmp_path / "out", "torchrl", tasks="pendulum-swingup")

    rows = torch.cat(batches)
    ids = rows["collector", "traj_ids"].numpy()
    expected = []
    for i in np.unique(ids):
        sel = ids == i
        obs = rows["observation"][sel].numpy()
        nxt = rows["next", "observation"][sel].numpy()
        expected.append(
            (
                np.concatenate([obs, nxt[-1:]]),
                rows["action"][sel].numpy(),
                rows["next", "reward"][sel].numpy()[:, 0],
            )
        )
    got = read_back(tmp_path / "out")
    assert len(got) == len(expected) >= 4
    key = lambda obs: obs.tobytes()  # noqa: E731
    by_obs = {key(e["obs"]): e for e in got}
    for obs, action, reward in expected:
        np.testing.assert_array_equal(by_obs[key(obs)]["action"], action)
        np.testing.assert_array_equal(by_obs[key(obs)]["reward"], reward)


def test_torchrl_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: not a ReplayBuffer\.dumps directory"):
        convert([tmp_path / "empty"], tmp_path / "x", "torchrl", tasks="walker-walk")
    _tdmpc2_buffer(tmp_path / "buffer", make_episodes("walker-walk", 1, 4, 70), "tensor")
    os.remove(tmp_path / "buffer" / "storage" / "action.memmap")
    meta = json.loads((tmp_path / "buffer" / "storage" / "meta.json").read_text())
    assert "action" in meta
    with pytest.raises(ValueError, match=r"action\.memmap: missing"):
        convert([tmp_path / "buffer"], tmp_path / "x", "torchrl", tasks="walker-walk")


# ---------------------------------------------------------------- Minari
@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def _collect(env, dataset_id: str, episodes: int, steps: int) -> tuple[object, list[tuple]]:
    """Roll a random policy through ``minari.DataCollector``; returns the dataset and what was
    seen (obs as returned by the env, actions sent, rewards received)."""
    import minari

    collector = minari.DataCollector(env)
    seen = []
    for ep in range(episodes):
        obs, _ = collector.reset(seed=ep)
        collector.action_space.seed(ep)
        observations, actions, rewards = [obs], [], []
        for _ in range(steps):
            action = collector.action_space.sample()
            obs, reward, terminated, truncated, _ = collector.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
            if terminated or truncated:
                break
        seen.append((observations, np.array(actions), np.array(rewards, np.float32)))
    dataset = collector.create_dataset(dataset_id=dataset_id, algorithm_name="random")
    collector.close()
    return dataset, seen


def test_minari_task_from_dataset_id_and_by_path(tmp_path, minari_root):
    from tdmpc2_data import make_env

    dataset, seen = _collect(
        make_env("pendulum-swingup", seed=0), "tdmpc2/pendulum-swingup/random-v0", 3, 12
    )
    expected = [(np.array(o, np.float32), a.astype(np.float32), r) for o, a, r in seen]
    convert(["tdmpc2/pendulum-swingup/random-v0"], tmp_path / "by-id", "minari")
    got = read_back(tmp_path / "by-id")
    assert {e["task"] for e in got} == {"pendulum-swingup"}
    assert got[0]["source"]["dataset_id"] == "tdmpc2/pendulum-swingup/random-v0"
    assert len(got) == 3
    by_obs = {e["obs"].tobytes(): e for e in got}
    for obs, action, reward in expected:
        e = by_obs[obs.tobytes()]
        np.testing.assert_array_equal(e["action"], action)
        np.testing.assert_allclose(e["reward"], reward, rtol=1e-6)

    path = minari_root / "tdmpc2" / "pendulum-swingup" / "random-v0"
    convert([path], tmp_path / "by-path", "minari")
    assert len(read_back(tmp_path / "by-path")) == 3


def test_minari_dict_observations_flattened(tmp_path, minari_root):
    import gymnasium as gym
    from gymnasium import spaces

    class DictObs(gym.ObservationWrapper):
        def __init__(self, env):
            super().__init__(env)
            self.observation_space = spaces.Dict(
                {
                    "angle": spaces.Box(-1, 1, (2,), np.float32),
                    "velocity": spaces.Box(-8, 8, (1,), np.float32),
                }
            )

        def observation(self, obs):
            return {"angle": obs[:2], "velocity": obs[2:]}

    env = DictObs(gym.make("Pendulum-v1", max_episode_steps=10))
    dataset, seen = _collect(env, "test/pendulum-dict/random-v0", 2, 10)
    convert(["test/pendulum-dict/random-v0"], tmp_path / "out", "minari", tasks="pendulum-swingup")
    got = read_back(tmp_path / "out")
    assert got[0]["source"]["env_id"] == "Pendulum-v1"
    assert got[0]["source"]["action_bounds"] == [[-2.0], [2.0]]  # Pendulum acts in [-2, 2]
    by_obs = {e["obs"].tobytes(): e for e in got}
    for obs, action, _ in seen:
        flat = np.stack([spaces.flatten(env.observation_space, o) for o in obs]).astype(np.float32)
        np.testing.assert_allclose(by_obs[flat.tobytes()]["action"], action / 2, rtol=1e-6)
    assert verify_dataset(tmp_path / "out").ok

    with pytest.raises(ValueError, match=r"'Pendulum-v1'.*pass --tasks"):
        convert(["test/pendulum-dict/random-v0"], tmp_path / "x", "minari")
    with pytest.raises(ValueError, match="nope/none-v0: neither a Minari dataset directory"):
        convert(["nope/none-v0"], tmp_path / "x", "minari", tasks="pendulum-swingup")


# ---------------------------------------------------------------- CLI
def test_cli_convert_npz_with_index_convention(tmp_path, capsys):
    eps = make_episodes("walker-walk", 2, 6, 80)
    rows = legacy_rows(eps)
    np.savez(
        tmp_path / "s0.npz",
        obs=np.stack([r[0] for r in rows]),
        action=np.stack([r[1] for r in rows]),
        reward=np.stack([r[2] for r in rows]),
    )
    dst = tmp_path / "out"
    argv = ["convert", str(tmp_path / "s0.npz"), str(dst), "--from", "npz", "--tasks", "walker"]
    assert main(argv) == 2
    assert "Unknown task 'walker'" in capsys.readouterr().err
    argv[-1] = "walker-walk"
    assert main(argv) == 2
    assert "--index-convention" in capsys.readouterr().err
    assert main([*argv, "--index-convention", "legacy", "--task-set", "mt30"]) == 0
    assert "2 episodes" in capsys.readouterr().out
    assert open_dataset(dst).tasks == TASK_SETS["mt30"]
    assert_same_episodes(read_back(dst), eps)
