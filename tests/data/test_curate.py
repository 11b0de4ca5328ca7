"""Curation: per-episode provenance (format 1.1), stats, filtered views and merge, on real
zarr datasets written by ShardWriter, real collections and the real converters."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from tdmpc2_data import ShardWriter, WindowSampler, open_dataset, to_hf_dataset
from tdmpc2_data.cli import main as cli
from tdmpc2_data.collect import collect
from tdmpc2_data.convert import convert
from tdmpc2_data.curate import format_selection, parse_selection, select, stats
from tdmpc2_data.format import DatasetError, compact, finalize, verify_dataset
from tdmpc2_data.schema import FORMAT_MINOR

NEW_ARRAYS = ("source_index", "episode_return", "episode_success")
T = 10


def write(root: Path, per_task: int = 12, sources: int = 2, **writer) -> dict[str, np.ndarray]:
    """walker-walk (no success) and mw-door-open (success) episodes whose obs[:, 0] is a global
    id and whose reward makes return = id; episodes alternate between ``sources`` sources,
    each numbering its episodes 0, 1, ... Returns the id -> (task, source, index, return)."""
    rng = np.random.default_rng(0)
    agents = [{"agent": f"a{k}"} for k in range(sources)]
    rows = []
    with ShardWriter(root, tasks=["walker-walk", "mw-door-open"], sources=agents, **writer) as w:
        for task, d, a in (("walker-walk", 24, 6), ("mw-door-open", 39, 4)):
            count = [0] * sources
            for e in range(per_task):
                gid = len(rows)
                ret = float(rng.permutation(100)[0])  # distinct-ish returns, random order
                obs = np.zeros((T + 1, d), np.float32)
                obs[:, 0] = gid
                reward = np.full(T, ret / T, np.float32)
                success = np.zeros(T, bool) if task == "mw-door-open" else None
                if success is not None:
                    success[-1] = e % 3 == 0
                src = e % sources
                w.add_episode(task, obs, rng.uniform(-1, 1, (T, a)), reward, success, src,
                              source_index=count[src])  # fmt: skip
                rows.append((task, src, count[src], float(reward.astype(np.float64).sum())))
                count[src] += 1
    return rows


def make_old(root: Path) -> None:
    """Turn a dataset into what the writer made before format 1.1: no per-episode
    provenance arrays, no ``tdmpc2_format_minor``."""
    for shard in (root / "shards").iterdir():
        for name in NEW_ARRAYS:
            shutil.rmtree(shard / name, ignore_errors=True)
    meta = json.loads((root / "zarr.json").read_text())
    meta["attributes"].pop("tdmpc2_format_minor")
    (root / "zarr.json").write_text(json.dumps(meta))
    finalize(root)  # the index's byte counts


def ids(view) -> set[int]:
    ds = view.dataset
    return {
        int(ds.read_shard(i, ("obs",), slice(e, e + 1))["obs"][0, 0, 0]) for i, e in view.rows()
    }


# ---------------------------------------------------------------- provenance
def test_writer_records_provenance_and_verify_checks_it(tmp_path):
    rows = write(tmp_path / "d", episodes_per_shard=7)
    ds = open_dataset(tmp_path / "d")
    assert ds.attrs["tdmpc2_format_minor"] == FORMAT_MINOR and len(ds.shards) > 1
    got = {}
    for i in range(len(ds.shards)):
        meta, obs = ds.episode_metadata(i), ds.read_shard(i, ("obs", "reward"))
        assert all(ds.has_field(i, f) for f in ("source_index", "episode_return"))
        for e in range(ds.shards[i].episodes):
            success = meta.get("episode_success")
            got[int(obs["obs"][e, 0, 0])] = (
                ds.tasks[meta["task"][e]],
                int(meta["source"][e]),
                int(meta["source_index"][e]),
                float(meta["episode_return"][e]),
                None if success is None else bool(success[e]),
            )
    assert sorted(got) == list(range(len(rows)))
    for gid, (task, src, index, ret) in enumerate(rows):
        assert got[gid][:4] == (task, src, index, pytest.approx(ret, rel=1e-6))
    door = [g for g, r in enumerate(rows) if r[0] == "mw-door-open"]
    assert [got[g][4] for g in door] == [k % 3 == 0 for k in range(len(door))]
    assert verify_dataset(tmp_path / "d").ok

    # damage each array: verify names it
    shard = tmp_path / "d" / "shards" / "000000"
    for name, edit, message in (
        ("episode_return", lambda a: a + 1, "is not the sum of its rewards"),
        ("source_index", lambda a: a - 5, "source_index below 0"),
        ("source", lambda a: a + 9, "source ids outside"),
    ):
        arr = zarr.open_array(shard / name, mode="r+")
        before = arr[...]
        arr[...] = edit(before)
        report = verify_dataset(tmp_path / "d")
        assert not report.ok and message in report.summary(), name
        arr[...] = before
    assert verify_dataset(tmp_path / "d").ok


def test_success_summary_must_match_the_last_step(tmp_path):
    write(tmp_path / "d")
    ds = open_dataset(tmp_path / "d")
    i = next(i for i in range(len(ds.shards)) if ds.has_field(i, "episode_success"))
    arr = zarr.open_array(tmp_path / "d" / ds.shards[i].path / "episode_success", mode="r+")
    arr[...] = ~arr[...]
    assert "episode_success disagrees" in verify_dataset(tmp_path / "d").summary()


def test_source_index_must_be_whole_and_non_negative(tmp_path):
    with ShardWriter(tmp_path / "d", tasks=["walker-walk"]) as w:
        with pytest.raises(ValueError, match="source_index"):
            w.add_episodes("walker-walk", np.zeros((2, 3, 24)), np.zeros((2, 2, 6)),
                           np.zeros((2, 2)), source_index=[0, -3])  # fmt: skip
        w.add_episodes("walker-walk", np.zeros((3, 3, 24)), np.zeros((3, 2, 6)),
                       np.zeros((3, 2)), source_index=5)  # fmt: skip
    meta = open_dataset(tmp_path / "d").episode_metadata(0)
    assert meta["source_index"].tolist() == [5, 6, 7] and meta["source"].tolist() == [-1] * 3


def test_verify_warns_about_duplicated_provenance(tmp_path):
    with ShardWriter(tmp_path / "d", tasks=["walker-walk"], sources=[{"agent": 0}]) as w:
        for index in (0, 1, 1):  # the second episode written twice
            w.add_episode("walker-walk", np.zeros((3, 24)), np.zeros((2, 6)), np.zeros(2),
                          source_index=index)  # fmt: skip
    report = verify_dataset(tmp_path / "d")
    assert report.ok and "2 episodes share their (source, task, source_index)" in report.summary()


def test_old_datasets_open_stat_select_verify_and_upgrade(tmp_path, capsys):
    root = tmp_path / "old"
    rows = write(root)
    make_old(root)
    ds = open_dataset(root)
    assert not ds.has_field(0, "episode_return") and "format 1.0" in ds.summary()
    meta = ds.episode_metadata(0)  # computed from reward/success
    assert (meta["source_index"] == -1).all()
    by_id = {
        int(g): r
        for g, r in zip(
            ds.read_shard(0, ("obs",))["obs"][:, 0, 0], meta["episode_return"], strict=True
        )
    }
    assert all(by_id[g] == pytest.approx(rows[g][3]) for g in by_id)
    assert verify_dataset(root).ok

    s = stats(ds)
    assert s["format"] == "1.0" and s["episodes"] == len(rows)
    assert any("source_index unknown" in n for n in s["notes"])
    assert any("predate format 1.1" in n for n in s["notes"])
    assert cli(["stats", str(root)]) == 0
    assert "note: source_index unknown" in capsys.readouterr().out

    top = ds.select(top_fraction=0.5)
    assert top.num_episodes == len(rows) // 2
    with pytest.raises(DatasetError, match="no recorded source or source_index"):
        ds.select(last_fraction_of_source=0.5)
    assert cli(["stats", str(root), "--select", "last_fraction_of_source=0.5"]) == 2
    assert "before format 1.1" in capsys.readouterr().err

    # a newer writer appends: the root says minor 1, old shards stay as they are, compact
    # merges both into shards with the arrays (old episodes' source_index unknown)
    with ShardWriter(root, sources=[{"agent": "a0"}]) as w:
        w.add_episode("walker-walk", np.zeros((T + 1, 24)), np.zeros((T, 6)), np.ones(T),
                      source=0, source_index=99)  # fmt: skip
    assert open_dataset(root).attrs["tdmpc2_format_minor"] == FORMAT_MINOR
    assert verify_dataset(root).ok
    compact(root)
    ds = open_dataset(root)
    assert len(ds.shards) == 1 and ds.has_field(0, "episode_return")
    meta = ds.episode_metadata(0)
    assert sorted(meta["source_index"].tolist()) == [-1] * len(rows) + [99]
    assert verify_dataset(root).ok


def test_newer_minor_versions_open(tmp_path):
    write(tmp_path / "d")
    path = tmp_path / "d" / "zarr.json"
    meta = json.loads(path.read_text())
    meta["attributes"]["tdmpc2_format_minor"] = FORMAT_MINOR + 5
    path.write_text(json.dumps(meta))
    assert open_dataset(tmp_path / "d").num_episodes == 24 and verify_dataset(tmp_path / "d").ok
    meta["attributes"]["tdmpc2_format_minor"] = "x"
    path.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="tdmpc2_format_minor='x'"):
        open_dataset(tmp_path / "d")


def test_collect_numbers_episodes_and_a_rerun_continues(tmp_path):
    root = tmp_path / "c"
    collect(root, ["cartpole-balance", "mw-reach"], 2, progress=False)
    collect(root, ["cartpole-balance", "mw-reach"], 3, progress=False)  # continues: one more
    ds = open_dataset(root)
    s = stats(ds)
    for name in ("cartpole-balance", "mw-reach"):
        index = np.concatenate(
            [ds.episode_metadata(i)["source_index"][r] for i, r in ds.task_episodes(name)]
        )
        assert sorted(index.tolist()) == [0, 1, 2]
        assert s["tasks"][name]["sources"] == [0]
    assert s["tasks"]["cartpole-balance"]["success_rate"] is None
    assert 0 <= s["tasks"]["mw-reach"]["success_rate"] <= 1
    assert verify_dataset(root).ok


def test_converters_record_the_file_order(tmp_path):
    eps = [np.random.default_rng(s) for s in range(3)]
    obs = np.stack([r.normal(size=(T + 1, 24)) for r in eps]).astype(np.float32)
    act = np.stack([r.uniform(-1, 1, (T, 6)) for r in eps]).astype(np.float32)
    rew = np.stack([np.full(T, k, np.float32) for k in range(3)])
    np.savez(tmp_path / "buf.npz", obs=obs, action=act, reward=rew)
    convert([tmp_path / "buf.npz"], tmp_path / "d", "npz", tasks="walker-walk")
    meta = open_dataset(tmp_path / "d").episode_metadata(0)
    assert meta["source_index"].tolist() == [0, 1, 2]
    assert meta["episode_return"].tolist() == [0.0, T, 2 * T]


# ---------------------------------------------------------------- select
def test_select_filters(tmp_path):
    rows = write(tmp_path / "d", per_task=20, episodes_per_shard=9)
    ds = open_dataset(tmp_path / "d")

    def expect(keep) -> set[int]:
        return {g for g, r in enumerate(rows) if keep(g, *r)}

    assert ids(ds.select()) == set(range(len(rows)))
    assert ids(ds.select(tasks="door-open")) == expect(lambda g, t, *_: t == "mw-door-open")
    assert ids(ds.select(tasks="mt80")) == set(range(len(rows)))  # a task set: those present
    assert ids(ds.select(sources=[1])) == expect(lambda g, t, s, *_: s == 1)
    assert ids(ds.select(min_return=50)) == expect(lambda g, t, s, i, r: r >= 50)

    top = ds.select(top_fraction=0.25)  # per task: ceil(0.25 * 20) = 5 best
    for task in ("walker-walk", "mw-door-open"):
        mine = sorted((g for g, r in enumerate(rows) if r[0] == task), key=lambda g: -rows[g][3])
        assert ids(top) & set(mine) == set(mine[:5])

    last = ds.select(last_fraction_of_source=0.3)  # per (source, task): ceil(0.3 * 10) = 3 last
    assert ids(last) == expect(lambda g, t, s, i, r: i >= 7)

    # filters compose in order: the top half of each source's last 30%
    both = ds.select(last_fraction_of_source=0.3, top_fraction=0.5)
    assert both.num_episodes == 2 * 3 and ids(both) <= ids(last)
    assert ids(last.select(top_fraction=0.5)) == ids(both)
    assert both.filters == {"last_fraction_of_source": 0.3, "top_fraction": 0.5}

    view = ds.select(tasks="walker-walk", top_fraction=0.5)
    assert list(view.rows()) == sorted(view.rows()) and view.num_episodes == 10
    assert view.num_transitions == 10 * T
    assert "10 of 40 episodes" in repr(view)

    for bad, message in (
        ({"top_fraction": 0}, r"top_fraction=0.0; expected a fraction in \(0, 1\]"),
        ({"sources": [5]}, r"sources=\[5\]: .* has source ids 0..1"),
        ({"tasks": "cheetah-run"}, "cheetah-run"),
    ):
        with pytest.raises((ValueError, KeyError), match=message):
            ds.select(**bad)


def test_selection_strings_round_trip():
    spec = "tasks=mt30,walker-walk,sources=0,3,min_return=12.5,top_fraction=0.5"
    args = parse_selection(spec)
    assert args == {"tasks": "mt30,walker-walk", "sources": [0, 3], "min_return": 12.5,
                    "top_fraction": 0.5}  # fmt: skip
    assert parse_selection(format_selection(args)) == args
    for bad, message in (
        ("top=1", "unknown filter 'top'"),
        ("top_fraction=half", "top_fraction=half is not a number"),
        ("sources=a", "is not a list of integers"),
        ("min_return=1,2", "'2' is not KEY=VALUE"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_selection(bad)


@pytest.mark.parametrize("cache_bytes", [1 << 30, 30_000], ids=["resident", "rotating"])
def test_sampler_draws_only_the_view(tmp_path, cache_bytes):
    rows = write(tmp_path / "d", per_task=30, episodes_per_shard=25)
    ds = open_dataset(tmp_path / "d")
    view = ds.select(top_fraction=0.3)  # scattered: the worst case for reads
    chosen = ids(view)
    sampler = WindowSampler(view, batch_size=64, horizon=3, cache_bytes=cache_bytes, seed=1)
    assert sampler.cache_info()["resident"] == (cache_bytes > 30_000)
    assert sampler.cache_info()["transitions"] == view.num_transitions
    seen = set()
    for batch, _ in zip(sampler, range(300), strict=False):
        drawn = batch.obs[:, :, 0].round().long()
        assert (drawn == drawn[0]).all()  # windows stay in one episode
        seen |= set(drawn[0].tolist())
    sampler.close()
    assert seen == chosen and len(chosen) == 2 * 9
    assert len(rows) == 60


def test_hf_dataset_of_a_view(tmp_path):
    write(tmp_path / "d")
    view = open_dataset(tmp_path / "d").select(tasks="walker-walk", top_fraction=0.5)
    eps = to_hf_dataset(view).with_format("numpy")
    assert len(eps) == view.num_episodes == 6
    assert {int(o[0, 0]) for o in eps["obs"]} == ids(view)
    steps = to_hf_dataset(view, unit="transition")
    assert len(steps) == 6 * T


# ---------------------------------------------------------------- stats
def test_stats_json_and_plot(tmp_path, capsys):
    rows = write(tmp_path / "d")
    assert cli(["stats", str(tmp_path / "d"), "--json", "--plot", str(tmp_path / "plots")]) == 0
    s = json.loads(capsys.readouterr().out)
    ds = open_dataset(tmp_path / "d")
    assert s["episodes"] == len(rows) and s["transitions"] == len(rows) * T
    assert s["disk_bytes"] == ds.nbytes and s["decoded_bytes"] > s["disk_bytes"]
    for task in ("walker-walk", "mw-door-open"):
        ret = np.array([r[3] for r in rows if r[0] == task])
        t = s["tasks"][task]
        assert t["episodes"] == 12 and t["sources"] == [0, 1]
        assert t["return"]["mean"] == pytest.approx(ret.mean(), rel=1e-6)
        assert t["return"]["p25"] == pytest.approx(np.percentile(ret, 25), rel=1e-6)
        assert t["return"]["min"] == pytest.approx(ret.min(), rel=1e-6)  # float32 sums
        assert t["return"]["max"] == pytest.approx(ret.max(), rel=1e-6)
    assert s["tasks"]["walker-walk"]["success_rate"] is None
    assert s["tasks"]["mw-door-open"]["success_rate"] == pytest.approx(4 / 12)
    png = (tmp_path / "plots" / "returns.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli(["stats", str(tmp_path / "d"), "--select", "tasks=walker-walk"]) == 0
    out = capsys.readouterr().out
    assert "selection tasks=walker-walk" in out and "mw-door-open" not in out


def test_stats_never_reads_observations(tmp_path):
    write(tmp_path / "d")
    for shard in (tmp_path / "d" / "shards").iterdir():
        data = shard / "obs" / "c" / "0" / "0" / "0"  # the obs data file: now undecodable
        data.write_bytes(b"\0" * data.stat().st_size)
    with pytest.raises(DatasetError, match="obs: damaged data"):
        open_dataset(tmp_path / "d").read_shard(0, ("obs",))
    s = stats(open_dataset(tmp_path / "d"))
    assert s["episodes"] == 24
    assert select(open_dataset(tmp_path / "d"), top_fraction=0.5).num_episodes == 12


def test_plot_without_matplotlib_is_one_line(tmp_path, capsys, monkeypatch):
    write(tmp_path / "d")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert cli(["stats", str(tmp_path / "d"), "--plot", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install tdmpc2-toolkit[plot]" in err[0]


# ---------------------------------------------------------------- merge
def test_merge_keeps_provenance(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    collect(a, ["cartpole-balance", "mw-reach"], 2, seed=0, progress=False)
    collect(b, ["mw-reach"], 3, seed=1, progress=False)
    out = tmp_path / "both"
    assert cli(["merge", str(a), str(b), str(out)]) == 0
    merged = open_dataset(out)
    assert merged.num_episodes == 7 and verify_dataset(out).ok

    def episodes(ds) -> dict[bytes, tuple]:
        """obs bytes -> (task, source entry without bookkeeping, source_index, return, success)."""
        found = {}
        for i in range(len(ds.shards)):
            meta, obs = ds.episode_metadata(i), ds.read_shard(i, ("obs",))["obs"]
            for e in range(ds.shards[i].episodes):
                entry = ds.attrs["sources"][meta["source"][e]]
                origin = entry.get("origin", entry)
                origin = {k: v for k, v in origin.items() if k not in ("id", "complete")}
                success = meta.get("episode_success")
                key = obs[e, :, :4].tobytes()
                found[key] = (ds.tasks[meta["task"][e]], origin, int(meta["source_index"][e]),
                              float(meta["episode_return"][e]),
                              None if success is None else bool(success[e]))  # fmt: skip
        return found

    before = {**episodes(open_dataset(a)), **episodes(open_dataset(b))}
    after = episodes(merged)
    assert after == before
    assert {s["path"] for s in merged.attrs["sources"]} == {str(a), str(b)}
    # a rerun skips everything, an interrupted one is redone (the merge path is convert's)
    assert cli(["merge", str(a), str(b), str(out)]) == 0
    assert "already converted, skipped" in capsys.readouterr().out
    assert open_dataset(out).num_episodes == 7
    assert stats(open_dataset(out))["tasks"]["mw-reach"]["sources"] == [1, 2]


def test_merge_of_an_old_dataset_keeps_index_unknown(tmp_path):
    write(tmp_path / "old")
    make_old(tmp_path / "old")
    convert([tmp_path / "old"], tmp_path / "m", "shards")
    ds = open_dataset(tmp_path / "m")
    meta = ds.episode_metadata(0)
    assert (meta["source_index"] == -1).all() and verify_dataset(tmp_path / "m").ok
    origins = [s["origin"] for s in ds.attrs["sources"]]
    assert {"agent": "a0"} in origins and {"agent": "a1"} in origins


def test_merge_needs_a_destination(tmp_path, capsys):
    assert cli(["merge", str(tmp_path)]) == 2
    assert "A B ... OUT" in capsys.readouterr().err


def test_legacy_chunks_record_their_rows(tmp_path):
    from legacy_chunks import TD02, expected

    convert([TD02["mt80"]], tmp_path / "d", "legacy-pt")
    ds, want = open_dataset(tmp_path / "d"), expected("mt80")
    seen = []
    for i in range(len(ds.shards)):
        meta, got = ds.episode_metadata(i), ds.read_shard(i)
        for e, row in enumerate(meta["source_index"]):
            np.testing.assert_array_equal(got["obs"][e], want["obs"][row])
            assert meta["episode_return"][e] == pytest.approx(want["reward"][row].sum(), rel=1e-6)
            seen.append(int(row))
    assert sorted(seen) == list(range(len(want["task"])))
    assert verify_dataset(tmp_path / "d").ok


def test_pretrain_select_trains_on_the_view_and_records_it(tmp_path):
    import torch

    from tdmpc2_model import TDMPC2
    from tdmpc2_model.apps.cli import pretrain_main

    data = collect(tmp_path / "mw", ["mw-reach", "mw-push"], 2, progress=False)
    out = tmp_path / "run"
    argv = ["--size", "1M", "--data", str(data), "--max-steps", "3", "--batch-size", "16",
            "--out", str(out), "--accelerator", "cpu", "--devices", "1", "--num-workers", "0",
            "--config", "num_samples=16", "--config", "num_elites=2", "--config",
            "num_pi_trajs=2", "--config", "iterations=1",
            "--select", "tasks=mw-reach,top_fraction=0.5"]  # fmt: skip
    assert pretrain_main(argv) == 0
    ckpt = torch.load(out / "lightning" / "last.ckpt", weights_only=False)
    selection = ckpt["hyper_parameters"]["selection"]
    assert selection["filters"] == {"tasks": "mw-reach", "top_fraction": 0.5}
    assert selection["datasets"][0]["episodes"] == 1
    assert selection["datasets"][0]["of_episodes"] == 4
    assert (
        "selected by tasks=mw-reach,top_fraction=0.5 (1 of 4 episodes)"
        in (ckpt["hyper_parameters"]["training_data"])
    )
    moments = [s["exp_avg"] for s in ckpt["optimizer_states"][0]["state"].values()]
    task_dim = TDMPC2.from_pretrained(out / "final").cfg.task_dim
    emb = next(m for m in moments if m.shape == (2, task_dim))  # task embeddings
    assert emb[0].abs().sum() > 0 and emb[1].abs().sum() == 0  # mw-push never sampled
    assert pretrain_main([*argv[:-1], "tasks=mw-reach,top=1", "--out", str(tmp_path / "x")]) == 2
