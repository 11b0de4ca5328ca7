"""One table of dataset damage: (damage, what each entry point must do). Each row damages a
fresh copy of a small valid dataset (made once per module from real zarr stores) in one way
and states the outcome at the four places data enters: `verify_dataset` (the problem it
reports, under which shard; ``tdmpc2-data verify`` exits 1), `open_dataset` (refuses with a
`DatasetError` naming the file, or opens), `WindowSampler` (refuses naming shard, episode
and field before any batch holds the damage, or serves) and `tdmpc2-pretrain` (exit 2 with
one line naming the file, no traceback, no model written; or trains). Adding a case is one
row. Nothing damaged is ever filled in, read as zeros or trained on.

The dataset: tasks mw-reach (obs 39, action 4: the padded widths) and cartpole-balance
(obs 5, action 1: padded), episodes of 20 steps; ``shards/000000`` holds 3 mw-reach episodes
then 1 cartpole-balance episode, ``shards/000001`` 2 cartpole-balance episodes."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zarr
from bombs import blosc_zeros, replace_first_chunk
from dataset_content import write_random

from tdmpc2_data import open_dataset
from tdmpc2_data.cli import main as data_cli
from tdmpc2_data.format import DatasetError, verify_dataset
from tdmpc2_data.loader import WindowSampler

TASKS = ["mw-reach", "cartpole-balance"]
S0, S1 = "shards/000000", "shards/000001"
OPENS = SERVES = TRAINS = None  # the entry point works: the damage does not reach it
SAME = "same"  # says what the entry point before it says (open_dataset: what verify reports)


# ----------------------------------------------------------------------------- damage
def data_file(root: Path, shard: str, field: str) -> Path:
    """The one file holding an array's bytes (sharding codec: one file per array)."""
    path = root / shard / field / "c"
    while path.is_dir():
        path = path / "0"
    return path


def truncate(shard: str, field: str, keep: float = 0.0) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        path = data_file(root, shard, field)
        path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])

    return damage


def flip(shard: str, field: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        path = data_file(root, shard, field)
        data = bytearray(path.read_bytes())
        data[len(data) // 3] ^= 0x10
        path.write_bytes(bytes(data))

    return damage


def bomb(shard: str, field: str) -> Callable[[Path], None]:
    """Inner chunk 0 of an array: a valid blosc frame of 1 GiB of zeros, checksums right."""
    return lambda root: replace_first_chunk(root / shard / field, blosc_zeros())


def remove(relative: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        path = root / relative
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    return damage


def remove_data(shard: str, field: str) -> Callable[[Path], None]:
    """Remove an array's data file, its metadata kept."""
    return lambda root: data_file(root, shard, field).unlink()


def poke(shard: str, field: str, index: tuple, value) -> Callable[[Path], None]:
    """Change stored values through zarr (valid checksums): what a buggy writer would leave."""

    def damage(root: Path) -> None:
        arr = zarr.open_array(root / shard / field, mode="r+")
        arr.with_config({"write_empty_chunks": True})[index] = value  # as the writer does

    return damage


def edit_json(relative: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    """Edit a zarr.json document (``change`` edits it in place)."""

    def damage(root: Path) -> None:
        path = root / relative
        doc = json.loads(path.read_text())
        change(doc)
        path.write_text(json.dumps(doc))

    return damage


def write_text(relative: str, text: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        (root / relative).write_text(text)

    return damage


def index(shard: int, **changes) -> Callable[[Path], None]:
    """Change one entry of the root ``shards`` index."""
    return edit_json("zarr.json", lambda d: d["attributes"]["shards"][shard].update(changes))


def root_attrs(**changes) -> Callable[[Path], None]:
    return edit_json("zarr.json", lambda d: d["attributes"].update(changes))


def unindex_last(doc: dict) -> None:
    doc["attributes"]["shards"].pop()


def index_ghost(doc: dict) -> None:
    shards = doc["attributes"]["shards"]
    shards.append({**shards[-1], "path": "shards/000007"})


def array_meta(shard: str, field: str, **changes) -> Callable[[Path], None]:
    return edit_json(f"{shard}/{field}/zarr.json", lambda d: d.update(changes))


def shard_attrs(shard: str, **changes) -> Callable[[Path], None]:
    return edit_json(f"{shard}/zarr.json", lambda d: d["attributes"].update(changes))


BIG = 10**10
FORGED = {"episodes": BIG, "transitions": BIG * 20, "task_counts": {"0": BIG - 1, "1": 1}}

# (id, damage, verify: (damaged items reported, text of a problem of the first; "warning":
#  text of a warning),
#  open_dataset, WindowSampler, tdmpc2-pretrain); a string is the text the error
#  holds, OPENS/SERVES/TRAINS that the damage does not reach that entry point.
CASES = [
    ("no-damage", lambda root: None, None, OPENS, SERVES, TRAINS),  # the control
    # data files: empty, cut short, gone, flipped bytes. Never read as fill values.
    ("obs-file-0-bytes", truncate(S0, "obs"), (S0, f"{S0}/obs: the data file is empty"),
     OPENS, f"{S0}/obs: the data file is empty", SAME),
    ("action-file-0-bytes", truncate(S1, "action"),
     (S1, f"{S1}/action: the data file is empty"), OPENS,
     f"{S1}/action: the data file is empty", SAME),
    ("reward-file-0-bytes", truncate(S0, "reward"),
     (S0, f"{S0}/reward: the data file is empty"), OPENS,
     f"{S0}/reward: the data file is empty", SAME),
    ("task-file-0-bytes", truncate(S1, "task"), (S1, f"{S1}/task: the data file is empty"),
     OPENS, f"{S1}/task: the data file is empty", SAME),
    ("obs-file-cut-in-half", truncate(S0, "obs", 0.5), (S0, f"{S0}/obs: damaged data"), OPENS,
     f"{S0}/obs: damaged data", SAME),
    ("reward-file-missing", remove_data(S1, "reward"),
     (S1, f"{S1}/reward: the data file is missing"), OPENS,
     f"{S1}/reward: the data file is missing", SAME),
    ("task-array-missing", remove(f"{S0}/task"), (S0, f"{S0}/task: required array is missing"),
     OPENS, f"{S0}/task: required array is missing", SAME),
    ("obs-flipped-byte", flip(S0, "obs"), (S0, f"{S0}/obs: damaged data"), OPENS,
     f"{S0}/obs: damaged data", SAME),
    ("action-flipped-byte", flip(S1, "action"), (S1, f"{S1}/action: damaged data"), OPENS,
     f"{S1}/action: damaged data", SAME),
    ("reward-flipped-byte", flip(S0, "reward"), (S0, f"{S0}/reward: damaged data"), OPENS,
     f"{S0}/reward: damaged data", SAME),
    ("task-flipped-byte", flip(S0, "task"), (S0, f"{S0}/task: damaged data"), OPENS,
     f"{S0}/task: damaged data", SAME),
    ("obs-chunk-declares-1-GiB", bomb(S0, "obs"),
     (S0, f"{S0}/obs: damaged data (a blosc chunk of shape (4, 21, 39) declares 1073741824 "
      "bytes, expected 13104 bytes; refused before decoding)"), OPENS,
     f"{S0}/obs: damaged data (a blosc chunk of shape (4, 21, 39) declares", SAME),
    ("success-flipped-byte", flip(S1, "success"), (S1, f"{S1}/success: damaged data"), OPENS,
     SERVES, TRAINS),  # an optional array the loader does not read: verify's to find
    # values a buggy writer left, checksums valid
    ("obs-nan", poke(S0, "obs", (1, 4, 0), np.nan), (S0, "obs has NaN/inf (episode 1)"), OPENS,
     f"{S0}: obs has NaN/inf (episode 1)", SAME),
    ("obs-inf", poke(S1, "obs", (1, 20, 2), -np.inf), (S1, "obs has NaN/inf (episode 1)"),
     OPENS, f"{S1}: obs has NaN/inf (episode 1)", SAME),
    ("reward-inf", poke(S0, "reward", (2, 3), np.inf), (S0, "reward has NaN/inf (episode 2)"),
     OPENS, f"{S0}: reward has NaN/inf (episode 2)", SAME),
    ("reward-nan", poke(S1, "reward", (0, 0), np.nan), (S1, "reward has NaN/inf (episode 0)"),
     OPENS, f"{S1}: reward has NaN/inf (episode 0)", SAME),
    ("action-nan", poke(S0, "action", (3, 7, 0), np.nan), (S0, "action has NaN/inf (episode 3)"),
     OPENS, f"{S0}: action has NaN/inf (episode 3)", SAME),
    ("action-outside-bounds", poke(S0, "action", (0, 2, 1), 3.0),
     (S0, "action outside [-1, 1] (episode 0)"), OPENS,
     f"{S0}: action outside [-1, 1] (episode 0)", SAME),
    ("obs-padding-not-zero", poke(S1, "obs", (1, 3, 10), 1.0),
     (S1, "obs padding is not zero (episode 1, dim 10 of task 'cartpole-balance'"), OPENS,
     f"{S1}: obs padding is not zero (episode 1, dim 10", SAME),
    ("action-padding-not-zero", poke(S0, "action", (3, 5, 2), 0.5),
     (S0, "action padding is not zero (episode 3, dim 2 of task 'cartpole-balance'"), OPENS,
     f"{S0}: action padding is not zero (episode 3, dim 2", SAME),
    ("task-id-out-of-range", poke(S0, "task", (1,), 9),
     (S0, "task ids outside 0..1 (episode 1)"), OPENS,
     f"{S0}: task ids outside 0..1 (episode 1)", SAME),
    ("task-id-negative", poke(S1, "task", (0,), -1), (S1, "task ids outside 0..1 (episode 0)"),
     OPENS, f"{S1}: task ids outside 0..1 (episode 0)", SAME),
    ("task-id-disagrees-with-index", poke(S0, "task", (3,), 0),
     (S0, "task ids count {0: 4}, the index says {0: 3, 1: 1}"), OPENS,
     f"{S0}: episode 3 has task id 0, the root index says 1 ('cartpole-balance')", SAME),
    ("episode-return-not-the-sum", poke(S1, "episode_return", (0,), 1e6),
     (S1, "episode_return 1000000.0 is not the sum of its rewards"), OPENS, SERVES, TRAINS),  # provenance: statistics read it, training does not
    # the root index: read, then checked against the arrays, before any planning
    ("index-task-counts-swapped", index(0, task_counts={"0": 1, "1": 3}),
     (S0, "task ids count {0: 3, 1: 1}, the index says {0: 1, 1: 3}"), OPENS,
     f"{S0}: episode 1 has task id 0, the root index says 1 ('cartpole-balance')", SAME),
    ("index-task-counts-short", index(1, task_counts={"1": 1}),
     ("zarr.json", "zarr.json: index entry shards/000001 has task_counts {1: 1} that do not "
      "sum to its 2 episodes"), SAME, SAME, SAME),
    ("index-unknown-task-id", index(1, task_counts={"5": 2}),
     ("zarr.json", "index entry shards/000001 has task_counts {5: 2} that do not sum to its 2 "
      "episodes or name unknown task ids (0..1)"), SAME, SAME, SAME),
    ("index-10^10-episodes", index(0, **FORGED),
     (S0, f"{S0}/success: shape (4, 20) disagrees with the attributes (expected "
      "(10000000000, 20)"), OPENS, f"{S0}/obs: shape (4, 21, 39) disagrees with the attributes",
     SAME),
    ("index-10^10-steps", index(1, episode_length=BIG, transitions=2 * BIG),
     (S1, f"{S1}/success: shape (2, 20) disagrees"), OPENS,
     f"{S1}/obs: shape (2, 21, 39) disagrees", SAME),
    ("index-negative-length", index(1, episode_length=-5, transitions=-10),
     ("zarr.json", "zarr.json: index entry shards/000001: episode_length -5, expected an "
      "integer >= 1"), SAME, SAME, SAME),
    ("index-transitions-wrong", index(0, transitions=7),
     ("zarr.json", "index entry shards/000000: transitions 7, expected episodes x "
      "episode_length = 80"), SAME, SAME, SAME),
    ("index-size-not-a-number", index(0, episodes="four"),
     ("zarr.json", "index entry shards/000000: episodes 'four', expected an integer >= 0"),
     SAME, SAME, SAME),
    ("index-task-counts-a-list", index(0, task_counts=[3, 1]),
     ("zarr.json", "index entry shards/000000: task_counts [3, 1]; expected {task id: "),
     SAME, SAME, SAME),
    ("index-path-climbs-out", index(1, path="shards/../../ds/shards/000001"),
     ("zarr.json", "zarr.json: index entry with path 'shards/../../ds/shards/000001'; expected "
      "shards/<digits>"), SAME, SAME, SAME),
    ("index-path-absolute", index(0, path="/etc"),
     ("zarr.json", "zarr.json: index entry with path '/etc'; expected shards/<digits>"), SAME,
     SAME, SAME),
    ("index-names-a-shard-not-there", edit_json("zarr.json", index_ghost),
     ("shards/000007", "listed in the root index but not on disk"),
     "zarr.json: the shards index lists shards/000007, which is not on storage", SAME, SAME),
    ("shard-directory-missing", remove(S1), (S1, "listed in the root index but not on disk"),
     f"zarr.json: the shards index lists {S1}, which is not on storage", SAME, SAME),
    ("shard-not-in-index", edit_json("zarr.json", unindex_last),
     ("warning", f"{S1} is on disk but not in the root index"), OPENS, SERVES, TRAINS),
    # root attributes
    ("root-zarr-json-garbage", write_text("zarr.json", "garbage{"),
     ("zarr.json", "zarr.json: not valid JSON"), SAME, SAME, SAME),
    ("root-format-unknown", root_attrs(tdmpc2_format=2),
     ("zarr.json", "zarr.json: attribute tdmpc2_format=2 is not a shard format"), SAME, SAME,
     SAME),
    ("root-obs-dim-wider", root_attrs(obs_dim=40),
     (f"{S0} {S1}", f"{S0}/obs: shape (4, 21, 39) disagrees with the attributes (expected (4, 21, 40)"),
     OPENS, f"{S0}/obs: shape (4, 21, 39) disagrees", SAME),
    ("root-tasks-not-a-list", root_attrs(tasks="mw-reach"),
     ("zarr.json", "zarr.json: root attribute 'tasks' is 'mw-reach'; expected a list"), SAME,
     SAME, SAME),
    ("root-task-width-not-a-number", edit_json("zarr.json", lambda d: d["attributes"]["tasks"][1]
     .update(obs_dim="5")),
     ("zarr.json", "zarr.json: tasks[1] ('cartpole-balance') obs_dim '5', expected an integer"),
     SAME, SAME, SAME),
    # a shard's own metadata (what an append rebuilds the root index from)
    ("shard-zarr-json-episode-count", shard_attrs(S1, episodes=7),
     (S1, f"{S1}/zarr.json: says 7 episodes of length 20"), OPENS, SERVES, TRAINS),
    ("shard-zarr-json-missing", remove(f"{S1}/zarr.json"),
     (S1, f"{S1}/zarr.json: unreadable shard metadata"), OPENS, SERVES, TRAINS),
    ("shard-zarr-json-garbage", write_text(f"{S1}/zarr.json", "garbage{"),
     (S1, f"{S1}/zarr.json: unreadable shard"), OPENS, SERVES, TRAINS),
    # an array's metadata
    ("array-metadata-garbage", write_text(f"{S0}/reward/zarr.json", "garbage{"),
     (S0, f"{S0}/reward/zarr.json: unreadable array metadata"), OPENS,
     f"{S0}/reward/zarr.json: unreadable array metadata", SAME),
    ("array-dtype-wrong", array_meta(S1, "reward", data_type="float64"),
     (S1, f"{S1}/reward: dtype float64, expected one of ('float32',)"), OPENS,
     f"{S1}/reward: dtype float64", SAME),
    ("array-shape-wrong", array_meta(S1, "action", shape=[2, 20, 3]),
     (S1, f"{S1}/action: shape (2, 20, 3) disagrees with the attributes"), OPENS,
     f"{S1}/action: shape (2, 20, 3) disagrees", SAME),
]  # fmt: skip


# ----------------------------------------------------------------------------- the suite
@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clean") / "ds"
    write_random(root, TASKS, 3, length=20, episodes_per_shard=4)
    ds = open_dataset(root)
    assert [s.task_counts for s in ds.shards] == [{0: 3, 1: 1}, {1: 2}]
    assert verify_dataset(root).ok
    return root


@pytest.fixture
def damaged(request, clean, tmp_path) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(clean, root)
    request.param(root)
    return root


def _params():
    for case, damage, verify, opened, sampled, pretrained in CASES:
        yield pytest.param(damage, verify, opened, sampled, pretrained, id=case)


def _refusal(verify, opened, sampled, pretrained) -> str | None:
    """What pretraining must say: its own text, or that of the entry point that refused."""
    if pretrained != SAME:
        return pretrained
    if opened is None:
        return sampled
    return verify[1] if opened == SAME else opened


@pytest.mark.parametrize("damaged, verify, opened, sampled, pretrained", _params(),
                         indirect=["damaged"])  # fmt: skip
def test_every_entry_point_meets_the_damage(damaged, verify, opened, sampled, pretrained,
                                             capsys, monkeypatch):  # fmt: skip
    report = verify_dataset(damaged)
    where, says = verify or ("", "")
    if verify is None:
        assert report.ok and not report.warnings, report.summary()
    elif where == "warning":
        assert report.ok and any(says in w for w in report.warnings), report.summary()
    else:  # the damage, under its shard(s) (or the root index), and nothing else
        assert list(report.problems) == where.split(), report.summary()
        assert any(says in p for p in report.problems[where.split()[0]]), report.summary()
    capsys.readouterr()
    assert data_cli(["verify", str(damaged)]) == (0 if report.ok else 1)  # tdmpc2-data verify
    assert capsys.readouterr().out.rstrip().endswith("OK") == report.ok

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an unindexed shard warns; it is not damage
        if opened is not None:
            with pytest.raises(DatasetError, match="zarr.json: ") as refused:
                open_dataset(damaged)
            says = verify[1] if opened == SAME else opened  # as verify reports it
            assert says in str(refused.value)
            with pytest.raises(DatasetError, match="zarr.json: ") as refused:
                WindowSampler(damaged)  # which opens it
            assert says in str(refused.value)
        else:
            ds = open_dataset(damaged)
            sampler = WindowSampler(ds, batch_size=16, horizon=3, num_workers=1)
            if sampled is None:
                batches = [b for _, b in zip(range(3), sampler, strict=False)]
                sampler.close()
                assert all(b.obs.isfinite().all() and b.reward.isfinite().all() for b in batches)
            else:
                with pytest.raises(DatasetError) as refused:
                    next(iter(sampler))
                sampler.close()
                assert sampled in str(refused.value)
                assert str(damaged) in str(refused.value)  # the file, by its full path

    from tdmpc2_model.apps.cli import pretrain_main

    monkeypatch.chdir(damaged.parent)
    argv = ["--size", "1M", "--data", str(damaged), "--max-steps", "4", "--batch-size", "16",
            "--accelerator", "cpu", "--devices", "1", "--num-workers", "0", "--out",
            str(damaged.parent / "pt")]  # fmt: skip
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = pretrain_main(argv)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip() and "\r" not in x]
    says = _refusal(verify, opened, sampled, pretrained)
    if says is None:
        assert rc == 0 and (damaged.parent / "pt" / "final" / "model.safetensors").exists(), err
        return
    assert rc == 2 and "Traceback" not in err, err[-3000:]
    assert lines[-1].startswith("tdmpc2-pretrain: error: ") and says in lines[-1], lines[-1]
    assert not (damaged.parent / "pt" / "final").exists()


BOMB_READS = """
import resource, sys, warnings
from tdmpc2_data import open_dataset
from tdmpc2_data.format import DatasetError, verify_dataset
from tdmpc2_data.loader import WindowSampler
root = sys.argv[1]
ds = open_dataset(root)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(verify_dataset(root).summary().splitlines()[1])
for read in (lambda: ds.read_shard(0), lambda: next(iter(WindowSampler(
        ds, batch_size=16, horizon=3, num_workers=2)))):
    try:
        read()
    except DatasetError as exc:
        print(exc)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) >> 10)
"""


def test_a_chunk_declaring_a_gigabyte_is_refused_without_decoding_it(clean, tmp_path):
    """A 0.9 MB obs chunk that decodes to 1 GiB (checksums right): verify, read_shard and a
    WindowSampler with two workers each refuse it in one line, and the process grows by
    less than 100 MB (before the size check: +1 GiB in verify alone)."""
    import subprocess
    import sys

    root = tmp_path / "ds"
    shutil.copytree(clean, root)
    bomb(S0, "obs")(root)
    run = subprocess.run([sys.executable, "-c", BOMB_READS, str(root)], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    *refusals, grown = run.stdout.splitlines()
    assert run.returncode == 0 and len(refusals) == 3, run.stdout + run.stderr[-2000:]
    assert all("obs: damaged data (a blosc chunk of shape (4, 21, 39) declares 1073741824"
               in line for line in refusals), refusals  # fmt: skip
    assert int(grown) < 100, f"grew by {grown} MB"
