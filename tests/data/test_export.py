"""`tdmpc2-data export`: shards -> LeRobot / Minari -> shards give the same episodes back.

Every dataset here is real: shards written by ``ShardWriter``, LeRobotDatasets written and
read by LeRobot itself, Minari datasets opened by ``minari.load_dataset``. LeRobot cannot be
installed with this project's constraints (README "LeRobot": its 0.6 releases need Python >= 3.12,
torch < 2.12, numpy < 2.3, huggingface_hub < 2, datasets < 5), so its tests skip where it is
missing and run in the separate environment the README describes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dataset_content import real_width_episodes, write_random

from tdmpc2_data import open_dataset
from tdmpc2_data.cli import main
from tdmpc2_data.convert import convert
from tdmpc2_data.export import export, select_episodes
from tdmpc2_data.format import verify_dataset
from tdmpc2_data.tasks import get_task

TASKS = ["cartpole-balance", "walker-walk", "mw-reach"]  # obs 5/24/39, action 1/6/4


def _assert_same(got: dict[str, list[tuple]], expected: dict[str, list[tuple]], success=True):
    """The same episodes per task, bit for bit (order within a task: by content)."""
    assert sorted(got) == sorted(expected)
    for task in expected:
        key = lambda ep: ep[0].tobytes()  # noqa: E731
        pairs = zip(sorted(got[task], key=key), sorted(expected[task], key=key), strict=True)
        for g, e in pairs:
            for field in range(3):
                np.testing.assert_array_equal(g[field], e[field])
            if success:
                np.testing.assert_array_equal(g[3], e[3])


@pytest.fixture
def shards(tmp_path):
    return tmp_path / "shards", write_random(
        tmp_path / "shards", TASKS, 3, length=12, episodes_per_shard=2
    )


# ---------------------------------------------------------------- selection
def test_select_episodes_by_task_and_by_pairs(shards):
    root, _ = shards
    ds = open_dataset(root)
    every = select_episodes(ds)
    assert [s.name for s in every] == TASKS
    assert [(s.obs_dim, s.action_dim) for s in every] == [(5, 1), (24, 6), (39, 4)]
    assert all(s.num_episodes == 3 for s in every)
    walker = select_episodes(ds, tasks="walker-walk")
    assert [s.name for s in walker] == ["walker-walk"]
    # pairs: shards hold 2 episodes each; pick one episode of walker-walk and all of mw-reach
    shard, run = ds.task_episodes("walker-walk")[0]
    reach = [(s, e) for s, r in ds.task_episodes("mw-reach") for e in r]
    picked = select_episodes(ds, episodes=[(shard, run.start), *reach, *reach])
    assert [(s.name, s.num_episodes) for s in picked] == [("walker-walk", 1), ("mw-reach", 3)]
    both = select_episodes(ds, tasks=["mw-reach"], episodes=[(shard, run.start), reach[0]])
    assert [(s.name, s.num_episodes) for s in both] == [("mw-reach", 1)]
    with pytest.raises(ValueError, match="names shard 99; the dataset has"):
        select_episodes(ds, episodes=[(99, 0)])
    with pytest.raises(ValueError, match="names episode 7 of shard 0, which holds 2"):
        select_episodes(ds, episodes=[(0, 7)])
    with pytest.raises(ValueError, match="no episodes of tasks"):
        select_episodes(ds, tasks="walker-walk", episodes=reach)


# ---------------------------------------------------------------- Minari
@pytest.fixture
def minari_path(tmp_path, monkeypatch):
    """Minari looks datasets up under MINARI_DATASETS_PATH: never the user's ~/.minari."""
    path = tmp_path / "minari-home"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    return path


def test_minari_round_trip(shards, tmp_path, minari_path, monkeypatch):
    import minari

    root, written = shards
    out = tmp_path / "minari-out"
    result = export(root, out, "minari", name="demo")
    assert result.written == [f"tdmpc2/{t}/demo-v0" for t in TASKS]
    assert (result.episodes, result.transitions) == (9, 9 * 12)
    assert not minari_path.exists()  # the export did not write to the user's Minari home
    # OUT is a Minari datasets root: Minari itself opens each task's dataset, unpadded.
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(out))
    reach = minari.load_dataset("tdmpc2/mw-reach/demo-v0")
    assert reach.total_episodes == 3 and reach.total_steps == 36
    assert reach.observation_space.shape == (39,) and reach.action_space.shape == (4,)
    ep = next(iter(reach.iterate_episodes()))
    first = written["mw-reach"][0]
    np.testing.assert_array_equal(ep.observations, first[0])
    np.testing.assert_array_equal(ep.actions, first[1])
    np.testing.assert_array_equal(ep.rewards, first[2])
    assert ep.truncations[-1] and not ep.terminations.any()
    np.testing.assert_array_equal(ep.infos["success"][1:], first[3])
    # The task's env comes back from the dataset (its gymnasium spec was recorded) and steps.
    assert reach.spec.env_spec.id == "tdmpc2/mw-reach-v0"
    env = reach.recover_environment()
    obs, _ = env.reset(seed=0)
    obs, reward, _, truncated, info = env.step(env.action_space.sample())
    assert obs.shape == (39,) and np.isfinite(reward) and "success" in info and not truncated
    env.close()
    # And back into shards: by dataset id (the task is read from it) and by path.
    back = tmp_path / "back"
    ids = [f"tdmpc2/{t}/demo-v0" for t in TASKS]
    convert(ids, back, "minari")
    _assert_same(real_width_episodes(back), written)
    assert open_dataset(back).tasks == TASKS
    convert([out / "tdmpc2" / "walker-walk" / "demo-v0"], tmp_path / "by-path", "minari")
    _assert_same(real_width_episodes(tmp_path / "by-path"), {"walker-walk": written["walker-walk"]})
    assert verify_dataset(back).ok


def test_minari_export_of_some_tasks(shards, tmp_path, minari_path):
    root, written = shards
    out = tmp_path / "some"
    export(root, out, "minari", tasks="mw-reach,cartpole-balance")
    assert sorted(p.name for p in (out / "tdmpc2").iterdir() if p.is_dir()) == [
        "cartpole-balance",
        "mw-reach",
    ]
    back = tmp_path / "back"
    convert(
        [out / "tdmpc2" / t / "shards-v0" for t in ("cartpole-balance", "mw-reach")], back, "minari"
    )
    _assert_same(
        real_width_episodes(back), {t: written[t] for t in ("cartpole-balance", "mw-reach")}
    )


def test_a_selected_view_exports_only_its_episodes(shards, tmp_path, minari_path, capsys):
    from tdmpc2_data.cli import main as data_main

    root, written = shards
    best = {t: max(eps, key=lambda ep: ep[2].sum()) for t, eps in written.items()}
    out = tmp_path / "best"
    argv = ["export", str(root), str(out), "--to", "minari", "--select", "top_fraction=0.3"]
    assert data_main(argv) == 0, capsys.readouterr().err
    back = tmp_path / "back"
    convert(sorted((out / "tdmpc2").glob("*/shards-v0")), back, "minari")
    _assert_same(real_width_episodes(back), {t: [ep] for t, ep in best.items()})  # 1 of 3 per task
    view = open_dataset(root).select(tasks="walker-walk", top_fraction=0.3)
    result = export(view, tmp_path / "one", "minari", tasks="walker-walk")
    assert result.episodes == 1 and result.tasks == ["walker-walk"]


# ---------------------------------------------------------------- OUT handling (any format)
def test_out_refused_when_not_empty_and_replaced_with_overwrite(shards, tmp_path, capsys):
    root, written = shards
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code = main(["export", str(root), str(out), "--to", "minari"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert (
        err
        == f"tdmpc2-data export: error: {out}: not empty; pass --overwrite (overwrite=True) to replace it."
    )
    assert (out / "keep.txt").read_text() == "mine"
    assert main(["export", str(root), str(out), "--to", "minari", "--overwrite"]) == 0
    assert not (out / "keep.txt").exists() and (out / "tdmpc2" / "walker-walk").is_dir()
    assert "9 episodes" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "shards"]  # no temp left
    # An empty OUT is fine; OUT holding the data is never replaced.
    (tmp_path / "empty").mkdir()
    assert main(["export", str(root), str(tmp_path / "empty"), "--to", "minari"]) == 0
    assert main(["export", str(root), str(tmp_path), "--to", "minari", "--overwrite"]) == 2
    assert "is (or holds) the dataset being exported" in capsys.readouterr().err
    assert real_width_episodes(root).keys() == written.keys()


def test_a_failure_midway_leaves_out_as_it_was(shards, tmp_path, capsys, monkeypatch):
    """Damage in the last task's shard stops the export after earlier tasks were written:
    OUT keeps its old content and no half dataset or temporary directory is left."""
    monkeypatch.setenv("TDMPC2_DISABLE_PROGRESS_BARS", "0")  # the bar a terminal shows
    root, _ = shards
    ds = open_dataset(root)
    shard, _ = ds.task_episodes("mw-reach")[-1]
    data_file = root / ds.shards[shard].path / "obs" / "c"
    while data_file.is_dir():
        data_file = data_file / "0"
    blob = bytearray(data_file.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    data_file.write_bytes(bytes(blob))
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    code = main(["export", str(root), str(out), "--to", "minari", "--overwrite"])
    err = capsys.readouterr().err.strip()
    assert "6/9" in err  # the bar: two tasks were written before the damage was met
    line = err.splitlines()[-1]
    assert code == 2 and line.startswith("tdmpc2-data export: error: ") and "damaged data" in line
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "shards"]


def test_cli_errors_are_one_line(shards, tmp_path, capsys):
    root, _ = shards
    cases = [
        (["--to", "minari", "--tasks", "walker-wlak"], "walker-wlak"),
        (["--to", "minari", "--fps", "10"], "--fps: only for --to lerobot"),
        (["--to", "lerobot", "--name", "x"], "--name: only for --to minari"),
    ]
    for flags, expected in cases:
        assert main(["export", str(root), str(tmp_path / "o"), *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err
    assert main(["export", str(tmp_path / "nope"), str(tmp_path / "o"), "--to", "minari"]) == 2
    assert "not found; is" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- LeRobot
def test_lerobot_round_trip_multitask(shards, tmp_path, capsys):
    pytest.importorskip("lerobot.datasets.lerobot_dataset")
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root, written = shards
    out = tmp_path / "lerobot"
    assert main(["export", str(root), str(out), "--to", "lerobot", "--repo-id", "me/demo"]) == 0
    assert "9 episodes, 108 transitions" in capsys.readouterr().out
    # LeRobot opens it and reads the same numbers frame by frame.
    lr = LeRobotDataset("me/demo", root=out)
    assert (lr.num_episodes, lr.num_frames, lr.fps) == (9, 108, 30)
    assert lr.features["observation.state"]["shape"] == (39,)  # the widest task, mw-reach
    assert lr.features["action"]["shape"] == (6,)  # walker-walk's
    frames = [lr[i] for i in range(len(lr))]
    by_episode: dict[int, list[dict]] = {}
    for f in frames:
        by_episode.setdefault(int(f["episode_index"]), []).append(f)
    assert sorted(by_episode) == list(range(9))
    seen = {t: [] for t in TASKS}
    for index in sorted(by_episode):
        eps = by_episode[index]
        task = eps[0]["task"]
        spec = get_task(task)
        assert {f["task"] for f in eps} == {task}
        assert [int(f["frame_index"]) for f in eps] == list(range(12))
        obs = np.stack([f["observation.state"].numpy() for f in eps])
        next_obs = np.stack([f["next.observation.state"].numpy() for f in eps])
        np.testing.assert_array_equal(next_obs[:-1], obs[1:])
        assert not obs[:, spec.obs_dim :].any()  # zero padding past the task's dims
        action = np.stack([f["action"].numpy() for f in eps])
        assert not action[:, spec.action_dim :].any()
        seen[task].append(
            (
                np.concatenate([obs, next_obs[-1:]])[:, : spec.obs_dim],
                action[:, : spec.action_dim],
                np.array([float(f["next.reward"]) for f in eps], np.float32),
                np.array([bool(f["next.success"]) for f in eps]),
            )
        )
    _assert_same(seen, written)
    sidecar = json.loads((out / "meta" / "tdmpc2.json").read_text())
    assert [(t["name"], t["obs_dim"], t["action_dim"]) for t in sidecar["tasks"]] == [
        ("cartpole-balance", 5, 1),
        ("walker-walk", 24, 6),
        ("mw-reach", 39, 4),
    ]
    # Back into shards: the same episodes, tasks and widths.
    back = tmp_path / "back"
    assert main(["convert", str(out), str(back), "--from", "lerobot"]) == 0
    _assert_same(real_width_episodes(back), written)
    ds = open_dataset(back)
    assert ds.tasks == TASKS and (ds.obs_dim, ds.action_dim) == (39, 6)
    assert verify_dataset(back).ok
    # --tasks keeps a subset; a rerun skips what was converted.
    sub = tmp_path / "sub"
    convert([out], sub, "lerobot", tasks="walker-walk")
    _assert_same(real_width_episodes(sub), {"walker-walk": written["walker-walk"]})
    assert all(r.skipped for r in convert([out], sub, "lerobot", tasks="walker-walk"))


def test_lerobot_export_of_one_task_is_unpadded_and_selects_episodes(shards, tmp_path):
    pytest.importorskip("lerobot.datasets.lerobot_dataset")
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root, written = shards
    ds = open_dataset(root)
    pairs = [(s, e) for s, r in ds.task_episodes("cartpole-balance") for e in r][1:]
    out = tmp_path / "one"
    result = export(root, out, "lerobot", episodes=pairs, fps=50)
    assert (result.tasks, result.episodes) == (["cartpole-balance"], 2)
    lr = LeRobotDataset(result.written[0], root=out)
    assert lr.features["observation.state"]["shape"] == (5,)
    assert lr.features["action"]["shape"] == (1,)
    assert lr.fps == 50 and float(lr[1]["timestamp"]) == pytest.approx(1 / 50)
    back = tmp_path / "back"
    convert([out], back, "lerobot")
    _assert_same(real_width_episodes(back), {"cartpole-balance": written["cartpole-balance"][1:]})


def _record(root: Path, task: str, obs_dim: int, action_dim: int, seed: int) -> list[tuple]:
    """A LeRobotDataset made with LeRobot's API as a robot recording is: no
    ``next.observation.state``; returns its episodes in the shard alignment (last frame
    dropped)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    rng = np.random.default_rng(seed)
    lr = LeRobotDataset.create(
        "someone/recorded",
        20,
        {
            "observation.state": {"dtype": "float32", "shape": (obs_dim,), "names": None},
            "action": {"dtype": "float32", "shape": (action_dim,), "names": None},
            "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
        },
        root=root,
        use_videos=False,
    )
    episodes = []
    for _ in range(2):
        obs = rng.normal(size=(8, obs_dim)).astype(np.float32)
        action = rng.uniform(-1, 1, (8, action_dim)).astype(np.float32)
        reward = rng.normal(size=(8, 1)).astype(np.float32)
        for t in range(8):
            frame = {"observation.state": obs[t], "action": action[t], "next.reward": reward[t]}
            lr.add_frame({**frame, "task": task})
        lr.save_episode()
        episodes.append((obs, action[:-1], reward[:-1, 0], None))
    lr.finalize()
    return episodes


def test_lerobot_dataset_recorded_elsewhere_converts_with_tasks(tmp_path, capsys):
    """Its task string is not a task name, so --tasks names it, and each episode's last
    frame (no next observation) is dropped."""
    pytest.importorskip("lerobot.datasets.lerobot_dataset")
    src = tmp_path / "recorded"
    episodes = _record(src, "Swing the pendulum up", 3, 1, seed=3)
    out = tmp_path / "out"
    assert main(["convert", str(src), str(out), "--from", "lerobot"]) == 2
    err = capsys.readouterr().err
    assert "'Swing the pendulum up'" in err and "pass --tasks" in err
    assert (
        main(["convert", str(src), str(out), "--from", "lerobot", "--tasks", "pendulum-swingup"])
        == 0
    )
    _assert_same(real_width_episodes(out), {"pendulum-swingup": episodes}, success=False)
    assert main(["convert", str(tmp_path), str(tmp_path / "x"), "--from", "lerobot"]) == 2
    assert "not a LeRobotDataset directory (no meta/info.json)" in capsys.readouterr().err


def test_lerobot_padding_that_is_not_zero_is_refused(tmp_path, capsys):
    """A recording named like a task but wider than it: cutting it to the task's dims would
    drop real values, so the conversion stops and says so."""
    pytest.importorskip("lerobot.datasets.lerobot_dataset")
    src = tmp_path / "wide"
    _record(src, "cartpole-balance", 6, 1, seed=4)  # cartpole-balance has 5 obs dims
    assert main(["convert", str(src), str(tmp_path / "out"), "--from", "lerobot"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "episode 0: observation.state has 6 dims and non-zero values past the task's 5" in err
    assert not (tmp_path / "out").exists()
