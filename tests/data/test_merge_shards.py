"""`tdmpc2-data convert A B OUT --from shards`: merging shard datasets (as `minari combine`)."""

import numpy as np
import pytest
from dataset_content import real_width_episodes, write_random

from tdmpc2_data import open_dataset
from tdmpc2_data.cli import main
from tdmpc2_data.format import verify_dataset
from tdmpc2_data.schema import DatasetError
from tdmpc2_data.tasks import TASK_SETS


@pytest.fixture
def two_datasets(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    written = write_random(a, ["cartpole-balance", "walker-walk"], 3, seed=0, success=False)
    more = write_random(b, ["mw-reach", "walker-walk"], 2, seed=1)
    return a, b, written, more


def test_merge_keeps_every_episode_exactly(two_datasets, tmp_path, capsys):
    a, b, written, more = two_datasets
    out = tmp_path / "merged"
    assert main(["convert", str(a), str(b), str(out), "--from", "shards"]) == 0
    ds = open_dataset(out)
    assert ds.tasks == ["cartpole-balance", "walker-walk", "mw-reach"]  # order first met
    assert ds.obs_dim == 39 and ds.action_dim == 6  # padded to the widest of the union
    assert verify_dataset(out).ok
    got = real_width_episodes(out)
    expected = {t: list(eps) for t, eps in written.items()}
    for task, eps in more.items():
        expected.setdefault(task, []).extend(eps)
    assert {t: len(e) for t, e in got.items()} == {t: len(e) for t, e in expected.items()}
    for task in expected:
        # Within a task, shard order is not episode order: match by content.
        key = lambda ep: float(ep[2].sum())  # noqa: E731
        for g, e in zip(sorted(got[task], key=key), sorted(expected[task], key=key), strict=True):
            np.testing.assert_array_equal(g[0], e[0])
            np.testing.assert_array_equal(g[1], e[1])
            np.testing.assert_array_equal(g[2], e[2])
            if e[3] is not None:
                np.testing.assert_array_equal(g[3], e[3])
    sources = open_dataset(out).attrs["sources"]
    assert {(s["path"].rsplit("/", 1)[-1], s["task"]) for s in sources} == {
        ("a", "cartpole-balance"),
        ("a", "walker-walk"),
        ("b", "mw-reach"),
        ("b", "walker-walk"),
    }
    assert all(s["complete"] and s["format"] == "shards" for s in sources)


def test_a_rerun_adds_nothing_and_tasks_filter(two_datasets, tmp_path, capsys):
    a, b, _, _ = two_datasets
    out = tmp_path / "merged"
    args = ["convert", str(a), str(b), str(out), "--from", "shards", "--tasks", "walker-walk"]
    assert main(args) == 0
    first = open_dataset(out)
    assert first.tasks == ["walker-walk"] and first.num_episodes == 5
    capsys.readouterr()
    assert main(args) == 0
    assert open_dataset(out).num_episodes == 5
    assert capsys.readouterr().out.count("already converted, skipped") == 2


def test_task_set_keeps_published_ids(two_datasets, tmp_path):
    a, _, _, _ = two_datasets
    out = tmp_path / "mt80"
    assert main(["convert", str(a), str(out), "--from", "shards", "--task-set", "mt80"]) == 0
    ds = open_dataset(out)
    assert len(ds.tasks) == 80 and ds.num_episodes == 6
    assert ds.tasks == list(TASK_SETS["mt80"])


def test_merging_into_a_source_or_bad_padding_is_refused(two_datasets, tmp_path):
    a, b, _, _ = two_datasets
    from tdmpc2_data.convert import convert

    with pytest.raises(ValueError, match="merged into itself"):
        convert([str(a), str(b)], a, "shards")
    assert open_dataset(a).num_episodes == 6  # untouched
    # Non-zero padding in a source: damage, named, and nothing written.
    ds = open_dataset(b)
    shard = ds.task_episodes("mw-reach")[0][0]
    import zarr

    arr = zarr.open_array(f"{b}/{ds.shards[shard].path}/action", mode="r+")
    block = arr[:]
    block[..., -1] = 0.5  # mw-reach has 4 action dims; the dataset pads to 6
    arr[:] = block
    out = tmp_path / "bad"
    with pytest.raises(
        DatasetError, match=r"action padding is not zero \(episode 0, dim 5 of task 'mw-reach'"
    ):
        convert([str(b)], out, "shards", tasks="mw-reach")
    assert not (out / "zarr.json").exists()
