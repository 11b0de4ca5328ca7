"""Hub I/O end to end: the real ``huggingface_hub`` client against a real local Hub server.

The ``hub`` fixture (tests/conftest.py) runs ``tests/hub_server.py`` on 127.0.0.1 and points
HF_ENDPOINT, the cache and the token at it; nothing here mocks huggingface_hub.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from dataset_content import episodes
from huggingface_hub import constants
from legacy_fixtures import FIXTURES

from tdmpc2_data import ShardWriter, open_dataset, to_hf_dataset
from tdmpc2_data import hub as hubio
from tdmpc2_data.cli import main as cli
from tdmpc2_data.hf_datasets import episode_table
from tdmpc2_data.hub_api import HubError, published_data_repo
from tdmpc2_data.verify import verify_dataset

REPO = "tester/tiny"
TASKS = ["walker-walk", "mw-door-open", "cheetah-run"]
DIMS = {"walker-walk": (24, 6), "mw-door-open": (39, 4), "cheetah-run": (17, 6)}


def add(writer: ShardWriter, task: str, seed: int, length: int = 100) -> None:
    rng = np.random.default_rng(seed)
    d, a = DIMS[task]
    writer.add_episode(
        task,
        obs=rng.normal(size=(length + 1, d)).astype(np.float32),
        action=rng.uniform(-1, 1, (length, a)).astype(np.float32),
        reward=rng.uniform(size=length).astype(np.float32),
    )


def make_dataset(root: Path, extra: int = 0) -> Path:
    """Shards: 0 = walker-walk x3, 1 = mw-door-open x3, 2 = cheetah-run + walker-walk (mixed);
    ``extra`` more walker-walk episodes make a fourth shard (a newer version)."""
    with ShardWriter(root, tasks=TASKS, name="tiny") as w:
        for i, task in enumerate(["walker-walk", "mw-door-open"]):
            for e in range(3):
                add(w, task, 10 * i + e)
            w.flush()
        add(w, "cheetah-run", 30)
        add(w, "walker-walk", 31)
        w.flush()
        for e in range(extra):
            add(w, "walker-walk", 40 + e)
    return root


def files(root: Path) -> dict[str, bytes]:
    """Dataset files by repo path (bookkeeping dot-files excluded)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


@pytest.fixture(scope="session")
def big(tmp_path_factory) -> Path:
    """One 900-episode shard whose obs file (13 MB) spans many inner chunks."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("big") / "big"
    with ShardWriter(root, tasks=["mw-door-open"], name="big", episodes_per_shard=1000) as w:
        w.add_episodes(
            "mw-door-open",
            obs=rng.normal(size=(900, 101, 39)).astype(np.float32),
            action=rng.uniform(-1, 1, (900, 100, 4)).astype(np.float32),
            reward=rng.uniform(size=(900, 100)).astype(np.float32),
        )
    return root


@pytest.fixture
def pushed(hub, tmp_path, monkeypatch) -> Path:
    """The tiny dataset pushed to ``tester/tiny`` (tagged v1); returns the local source."""
    monkeypatch.setenv("TDMPC2_DATA_HOME", str(tmp_path / "tdmpc2-home"))
    src = make_dataset(tmp_path / "src")
    hubio.push(src, REPO, tag="v1")
    return src


# ---------------------------------------------------------------- push / download
def test_push_then_download_is_identical(hub, pushed):
    path = hubio.download(REPO)
    local, remote = files(pushed), files(path)
    assert set(local) <= set(remote) and set(remote) - set(local) == {"README.md"}
    assert all(remote[p] == local[p] for p in local)
    assert episodes(open_dataset(path)) == episodes(open_dataset(pushed))
    assert path.parent.name == "snapshots" and str(hub.cache) in str(path)  # the HF cache
    refs = hub.api().list_repo_refs(REPO, repo_type="dataset")
    assert [t.name for t in refs.tags] == ["v1"]
    assert refs.tags[0].target_commit == refs.branches[0].target_commit


def test_push_card_has_tasks_counts_and_structure(hub, pushed):
    card = (hubio.download(REPO) / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["license"] == "mit" and meta["viewer"] is True
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "episodes.parquet"}]
    names = [f["name"] for f in meta["dataset_info"]["features"]]
    assert names == ["episode", "task", "shard", "shard_episode", "length", "return", "success"]
    assert meta["dataset_info"]["splits"][0]["num_examples"] == 8
    assert "| 1 | `mw-door-open` | metaworld | 39 | 4 | 100 | 3 |" in card
    assert "{{" not in card and f"tdmpc2-data download {REPO}" in card
    info = hub.api().dataset_info(REPO)  # the server parses the front matter like the Hub
    assert info.card_data["dataset_info"]["splits"][0]["num_examples"] == 8


def test_dataset_card_round_trips_through_datasetcard_and_refuses_holes(tmp_path):
    """render_card is DatasetCard.from_template of the packaged template: DatasetCard.load
    reads back the template's metadata and the dataset's structure; a placeholder nothing
    fills, or a template without front matter, is an error instead of a card with holes."""
    from huggingface_hub import DatasetCard

    from tdmpc2_data.cards import front_matter, render_card

    ds = open_dataset(make_dataset(tmp_path / "src"))
    (tmp_path / "README.md").write_text(render_card(ds, "someone/tiny"))
    card = DatasetCard.load(tmp_path / "README.md")
    data = card.data.to_dict()
    assert {k: data[k] for k in front_matter(ds)} == front_matter(ds)
    assert (data["pretty_name"], data["license"], data["task_categories"]) == (
        "tiny", "mit", ["reinforcement-learning"])  # fmt: skip
    assert card.text.startswith("\n# tiny\n") and "someone/tiny" in card.text
    bad = tmp_path / "bad.md"
    bad.write_text("---\nlicense: mit\n---\n# {{ name }} has {{ num_episodez }} episodes\n")
    with pytest.raises(KeyError, match=r"bad\.md: unknown placeholder \{\{ num_episodez \}\}"):
        render_card(ds, "someone/tiny", bad)
    bare = tmp_path / "bare.md"
    bare.write_text("# {{ name }}\n")
    with pytest.raises(ValueError, match=r"bare\.md: a card template must start with YAML"):
        render_card(ds, "someone/tiny", bare)
    with pytest.raises(FileNotFoundError, match=r"dataset card template .*absent\.md not found"):
        render_card(ds, "someone/tiny", tmp_path / "absent.md")


def test_push_rerun_uploads_nothing_and_interrupted_push_resumes(hub, pushed, tmp_path):
    api = hub.api()
    commits = len(api.list_repo_commits(REPO, repo_type="dataset"))
    hub.server.log.clear()
    hubio.push(pushed, REPO)
    assert not [p for m, p, _ in hub.server.log if m == "PUT"]  # no file content sent again
    assert len(api.list_repo_commits(REPO, repo_type="dataset")) == commits

    # a second repo, pushed in 1-file commits; the 3rd commit fails, the rerun finishes
    hub.server.fail("POST", "/api/datasets/tester/resume/commit/", status=500, skip=2)
    with pytest.raises(HubError, match="500"):
        hubio.push(pushed, "tester/resume", commit_files=6)
    assert not api.file_exists("tester/resume", "zarr.json", repo_type="dataset")  # no index yet
    hub.server.log.clear()
    hubio.push(pushed, "tester/resume", commit_files=6)
    uploaded = [p for m, p, _ in hub.server.log if m == "PUT"]
    assert 0 < len(uploaded) < len([p for p in files(pushed) if "/c/" in p])
    resumed, first = files(hubio.download("tester/resume")), files(hubio.download(REPO))
    assert resumed.keys() == first.keys()
    assert all(resumed[p] == first[p] for p in first if p != "README.md")  # card names the repo


def test_push_mirrors_the_local_dataset(hub, pushed, tmp_path):
    merged = tmp_path / "merged"  # the same 8 episodes written as one shard
    with ShardWriter(merged, tasks=TASKS, name="tiny", episodes_per_shard=100) as w:
        for seed, task in [
            (0, "walker-walk"),
            (1, "walker-walk"),
            (2, "walker-walk"),
            (31, "walker-walk"),
        ]:
            add(w, task, seed)
        for seed in (10, 11, 12):
            add(w, "mw-door-open", seed)
        add(w, "cheetah-run", 30)
    hubio.push(merged, REPO)
    remote = [f.path for f in hub.api().list_repo_tree(REPO, repo_type="dataset", recursive=True)]
    assert not [p for p in remote if p.startswith(("shards/000001", "shards/000002"))]
    path = hubio.download(REPO)
    assert files(path).keys() - {"README.md"} == files(merged).keys()
    assert episodes(open_dataset(path)) == episodes(open_dataset(pushed))
    assert open_dataset(hubio.download(REPO, revision="v1")).num_episodes == 8  # v1 kept


def test_partial_download_fetches_only_shards_with_the_tasks(hub, pushed, tmp_path):
    hub.server.log.clear()
    view = hubio.download(REPO, tasks=["door-open"])  # short name
    fetched = {p.split("/shards/")[1].split("/")[0] for p in hub.server.downloads("/shards/")}
    assert fetched == {"000001"}
    ds = open_dataset(view)
    assert [s.path for s in ds.shards] == ["shards/000001"] and ds.tasks == TASKS
    assert {ds.tasks[t] for t in ds.read_shard(0)["task"]} == {"mw-door-open"}

    # into a directory: a mixed shard comes whole; later task downloads accumulate
    target = tmp_path / "mine"
    hubio.download(REPO, tasks=["cheetah-run"], local_dir=target)
    ds = open_dataset(target)
    assert [s.path for s in ds.shards] == ["shards/000002"]
    assert sorted(ds.tasks[t] for t in ds.read_shard(0)["task"]) == ["cheetah-run", "walker-walk"]
    hubio.download(REPO, tasks=["mw-door-open"], local_dir=target)
    assert [s.path for s in open_dataset(target).shards] == ["shards/000001", "shards/000002"]
    with pytest.raises(ValueError, match="'hopper-hop' is not in tester/tiny@"):
        hubio.download(REPO, tasks=["hopper-hop"])


def test_interrupted_file_resumes_with_a_range_request(hub, big, tmp_path):
    hubio.push(big, "tester/big")
    obs_file = "shards/000000/obs/c/0/0/0"  # 13 MB; the client keeps whole 10 MiB blocks
    hub.server.fail("GET", obs_file, drop_after=(10 << 20) + (512 << 10))
    path = hubio.download("tester/big", local_dir=tmp_path / "dl")
    ranges = [r for m, p, r in hub.server.log if m == "GET" and p.endswith(obs_file)]
    assert ranges == [None, f"bytes={10 << 20}-"]  # the retry asked for the rest only
    assert files(path)[obs_file] == (big / obs_file).read_bytes()


def test_failed_download_rerun_fetches_only_missing_files(hub, pushed):
    failed = "shards/000002/action/c/0/0/0"
    hub.server.fail("GET", failed, status=500)
    with pytest.raises(HubError, match="500"):
        hubio.download(REPO, max_workers=1)
    done = {p for p in hub.server.downloads() if not p.endswith(failed)}
    assert len(done) > 3
    hub.server.log.clear()
    path = hubio.download(REPO)
    again = hub.server.downloads()
    assert any(p.endswith(failed) for p in again) and not done & set(again)
    assert episodes(open_dataset(path)) == episodes(open_dataset(pushed))


@pytest.mark.parametrize("into", ["cache", "dir"])
def test_download_killed_mid_way_reruns_fetching_only_what_is_missing(hub, pushed, tmp_path, into):
    """`tdmpc2-data download` SIGKILLed while one shard file is in flight (the others done):
    the rerun fetches only the files it did not have, and the dataset is the pushed one,
    every episode once, verified."""
    import signal
    import time

    stalled = "shards/000001/obs/c/0/0/0"
    hub.server.fail("GET", stalled, stall=60)
    target = ["--dir", str(tmp_path / "dl")] if into == "dir" else []
    env = {**os.environ, **hub.env, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tdmpc2_data.cli", "download", REPO, *target],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while not (hub.server.downloads(stalled) and len(hub.server.downloads("/shards/")) > 10):
        assert proc.poll() is None and time.monotonic() < deadline, "stuck before the kill"
        time.sleep(0.05)
    time.sleep(0.5)  # the other files finish
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p for p in hub.server.downloads("/shards/") if not p.endswith(stalled)}
    hub.server.log.clear()
    path = hubio.download(REPO, local_dir=tmp_path / "dl" if into == "dir" else None)
    again = set(hub.server.downloads("/shards/"))
    assert any(p.endswith(stalled) for p in again) and not done & again, sorted(done & again)
    assert episodes(open_dataset(path)) == episodes(open_dataset(pushed))
    assert verify_dataset(path).ok


@pytest.mark.parametrize("into", ["cache", "dir"])
def test_bytes_unlike_the_hubs_hash_are_refused_then_replaced(hub, pushed, tmp_path, into, capsys):
    """The Hub sends other bytes than its listed sha256 (LFS) / git blob id (regular file),
    same size: `download` exits 2 naming the file (after one refetch); once the server is
    fixed, a rerun exits 0 with the right bytes."""
    lfs, regular = "shards/000001/obs/c/0/0/0", "shards/000002/zarr.json"
    for path in (lfs, lfs, regular, regular):  # the refetch gets flipped bytes too
        hub.server.fail("GET", path, flip=True)
    where = ["--dir", str(tmp_path / "dl")] if into == "dir" else []
    assert cli(["download", REPO, *where]) == 2
    err = capsys.readouterr().err  # huggingface_hub's progress bars, then the error line
    last = err.strip().splitlines()[-1]
    assert last.startswith("tdmpc2-data download: error: ") and "Traceback" not in err, err
    assert f"{lfs} (and 1 more) came with other bytes than the Hub's hash" in last, last
    assert cli(["download", REPO, *where]) == 0  # the server is fixed
    root = tmp_path / "dl" if into == "dir" else hubio.download(REPO)
    for path in (lfs, regular):
        assert (root / path).read_bytes() == (pushed / path).read_bytes()
    assert verify_dataset(root).ok


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_stopped_download_ends_at_once_and_says_what_was_kept(hub, pushed, tmp_path, sig):
    """SIGTERM or Ctrl-C while a shard file is in flight: the command ends within seconds
    (not when its download threads finish) in one line saying what was kept."""
    import signal
    import time

    stalled = "shards/000001/obs/c/0/0/0"
    hub.server.fail("GET", stalled, stall=60)
    env = {**os.environ, **hub.env, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tdmpc2_data.cli", "download", REPO, "--dir",
                             str(tmp_path / "dl")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not hub.server.downloads(stalled):
            assert proc.poll() is None and time.monotonic() < deadline, "stuck before the signal"
            time.sleep(0.05)
        proc.send_signal(getattr(signal, sig))
        start = time.monotonic()
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - start < 5, err[-3000:]  # before: when the file timed out
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert err.splitlines()[-1] == (
        "tdmpc2-data download: interrupted; every file downloaded (and legacy chunk converted) "
        "completely is kept. Rerun the same command to continue."
    )


def test_offline_from_cache(hub, pushed, monkeypatch):
    full = hubio.download(REPO)
    view = hubio.download(REPO, tasks=["walker-walk"])
    hub.server.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hubio.download(REPO) == full
    assert hubio.download(REPO, tasks=["walker-walk"]) == view
    assert len(open_dataset(view).shards) == 2
    with pytest.raises(
        HubError, match="HF_HUB_OFFLINE=1 is set and .*@v1 .* not in the local cache"
    ):
        hubio.download(REPO, tasks=["walker-walk"], revision="v1")  # tag never fetched
    with pytest.raises(HubError, match="HF_HUB_OFFLINE=1 is set") as info:
        hubio.download("tester/other")
    assert "network" not in str(info.value) and "unset HF_HUB_OFFLINE" in str(info.value)


def test_revision_pinning(hub, pushed, tmp_path):
    v1 = hub.api().list_repo_refs(REPO, repo_type="dataset").tags[0].target_commit
    newer = make_dataset(tmp_path / "newer", extra=2)
    hubio.push(newer, REPO, tag="v2")
    assert open_dataset(hubio.download(REPO)).num_episodes == 10
    assert open_dataset(hubio.download(REPO, revision="v1")).num_episodes == 8
    assert hubio.download(REPO, revision=v1).name == v1  # a commit id pins too
    target = tmp_path / "old"
    old = open_dataset(hubio.download(REPO, revision="v1", tasks=["walker-walk"], local_dir=target))
    assert [s.path for s in old.shards] == ["shards/000000", "shards/000002"]
    with pytest.raises(HubError, match="tag 'v1' .* already points at commit"):
        hubio.push(newer, REPO, tag="v1")


def test_push_revision_is_the_branch_to_commit_to(hub, pushed, tmp_path):
    """As in huggingface_hub: push commits to the branch ``revision`` (made from main if
    missing) and leaves main alone; download reads any branch, tag or commit."""
    main = hub.api().list_repo_refs(REPO, repo_type="dataset").branches[0].target_commit
    newer = make_dataset(tmp_path / "newer", extra=2)
    commit = hubio.push(newer, REPO, revision="dev", tag="dev-1")
    refs = hub.api().list_repo_refs(REPO, repo_type="dataset")
    assert {b.name: b.target_commit for b in refs.branches} == {"main": main, "dev": commit}
    assert {t.name: t.target_commit for t in refs.tags}["dev-1"] == commit
    assert open_dataset(hubio.download(REPO)).num_episodes == 8
    assert open_dataset(hubio.download(REPO, revision="dev")).num_episodes == 10
    assert open_dataset(hubio.download(REPO, revision="dev-1")).num_episodes == 10


# ---------------------------------------------------------------- streaming and info
def test_streaming_reads_over_hf_url(hub, pushed):
    hub.server.log.clear()
    ds = open_dataset(hubio.hub_url(REPO, "v1"))
    assert [p for p in hub.server.downloads() if "/shards/" in p] == []  # open = metadata only
    assert episodes(ds) == episodes(open_dataset(pushed))


def test_streaming_reads_byte_ranges_of_a_shard_file(hub, big):
    hubio.push(big, "tester/big")
    size = (big / "shards/000000/obs/c/0/0/0").stat().st_size
    hub.server.log.clear()
    ds = open_dataset(hubio.hub_url("tester/big"))
    obs = ds.read_shard(0, ("obs",), episodes=slice(450, 451))["obs"]
    np.testing.assert_array_equal(
        obs, open_dataset(big).read_shard(0, ("obs",), slice(450, 451))["obs"]
    )
    ranges = [r for m, p, r in hub.server.log if m == "GET" and p.endswith("/obs/c/0/0/0")]
    assert ranges and all(ranges)  # only byte ranges of the 13 MB file
    fetched = sum(_range_length(r, size) for r in ranges)
    assert fetched < size / 2, (ranges, size)


def _range_length(header: str, size: int) -> int:
    first, last = header.removeprefix("bytes=").split("-")
    if not first:
        return int(last)
    return min(int(last) + 1 if last else size, size) - int(first)


def test_info_reads_only_the_index(hub, pushed, capsys):
    hub.server.log.clear()
    assert cli(["info", REPO]) == 0
    out = capsys.readouterr().out
    assert "mw-door-open" in out and "8 episodes" in out
    assert [p.rsplit("/", 1)[-1] for p in hub.server.downloads()] == ["zarr.json"]


# ---------------------------------------------------------------- errors
def test_clear_errors(hub, pushed, monkeypatch, capsys):
    with pytest.raises(HubError, match="dataset repo tester/nope not found"):
        hubio.download("tester/nope")
    with pytest.raises(HubError, match="revision 'v9' does not exist in dataset repo tester/tiny"):
        hubio.download(REPO, revision="v9")
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(HubError, match="rejected your token .401 Unauthorized"):
        hubio.download(REPO)
    monkeypatch.setenv("HF_TOKEN", hub.token)
    with pytest.raises(HubError, match="may not write to someone/else .403"):
        hubio.push(pushed, "someone/else")
    assert cli(["download", REPO, "--revision", "v9"]) == 2  # one paragraph, no traceback
    err = capsys.readouterr().err
    assert err.startswith("tdmpc2-data download: error: ") and "Traceback" not in err


def tree(root: Path, skip: tuple[Path, ...]) -> set[str]:
    """Every entry under ``root`` (dangling symlinks included), except under ``skip``."""
    found = {Path(d, n) for d, dirs, names in os.walk(root) for n in dirs + names}
    return {str(p) for p in found if not any(p.is_relative_to(s) for s in skip)}


#: index paths that point outside the dataset ({tmp}: the test's directory)
HOSTILE = ["{tmp}/evil", "shards/../../evil", "C:/evil", "shards\\..\\evil", "data/000001",
           "shards/000001/../../../../evil", "shards/..", "shards/~"]  # fmt: skip


def test_hostile_index_paths_are_refused_before_any_link_or_write(hub, pushed, tmp_path, capsys):
    """A Hub index naming a shard path outside ``shards/<n>``: `download` (into the cache
    with a task view, or --dir) exits 2 with one line naming it; nothing is created outside
    the HF cache, no link, no local index."""
    doc = json.loads((pushed / "zarr.json").read_text())
    skip = (hub.cache.parent, tmp_path / "hub-server")  # HF_HOME and the server's storage
    before = tree(tmp_path, skip)
    for bad in HOSTILE:
        bad = bad.format(tmp=tmp_path)
        doc["attributes"]["shards"][1]["path"] = bad  # the mw-door-open shard
        hub.api().upload_file(path_or_fileobj=json.dumps(doc).encode(), path_in_repo="zarr.json",
                              repo_id=REPO, repo_type="dataset")  # fmt: skip
        for where in ([], ["--dir", str(tmp_path / "dl")]):
            assert cli(["download", REPO, "--tasks", "mw-door-open", *where]) == 2, bad
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and f"index entry with path {bad!r:.57}" in err, err
    assert tree(tmp_path, skip) == before


def test_hub_down_uses_the_cache(hub, pushed):
    path = hubio.download(REPO)
    hub.server.stop()
    assert hubio.download(REPO) == path  # falls back to the cached commit of main


def test_hub_down_without_cache_is_a_clear_error_at_once(hub, pushed, tmp_path, capsys):
    """A dead endpoint is found with one connection attempt, not ~24 s of huggingface_hub's
    retries; an OWNER/NAME that is also no local directory says both."""
    hub.server.stop()
    with pytest.raises(HubError, match=f"cannot reach {hub.endpoint} and tester/tiny@v1"):
        hubio.download(REPO, revision="v1")
    assert cli(["info", "nowhere/tow"]) == 2
    err = capsys.readouterr().err
    assert (
        "error: nowhere/tow: no such local directory, and reading the index of nowhere/tow: " in err
    )
    assert f"cannot reach {hub.endpoint}" in err and "Traceback" not in err


# ---------------------------------------------------------------- CLI and published names
def test_cli_push_and_download_with_tasks(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("TDMPC2_DATA_HOME", str(tmp_path / "home"))
    src = make_dataset(tmp_path / "src")
    card = tmp_path / "card.md"
    card.write_text("---\nlicense: cc-by-4.0\n---\n# my card\n")
    assert cli(["push", str(src), "tdmpc2-test/org-set", "--card", str(card), "--tag", "v1"]) == 0
    target = tmp_path / "dl"
    args = ["download", "tdmpc2-test/org-set", "--tasks", "mw-door-open,cheetah-run"]
    assert cli([*args, "--dir", str(target), "--revision", "v1"]) == 0
    assert [s.path for s in open_dataset(target).shards] == ["shards/000001", "shards/000002"]
    readme = hub.api().hf_hub_download("tdmpc2-test/org-set", "README.md", repo_type="dataset")
    assert "# my card" in Path(readme).read_text()


def test_published_name_maps_to_a_configured_shard_repo(hub, pushed, monkeypatch):
    monkeypatch.setenv("TDMPC2_DATA_REPO_MT80", REPO)
    assert published_data_repo("mt80") == REPO
    assert published_data_repo("mt80", repo="me/x") == "me/x"
    path = hubio.download("mt80", tasks=["walker-walk"])
    assert len(open_dataset(path).shards) == 2


def test_subprocess_cli_honors_hf_endpoint(hub, pushed, tmp_path):
    """A fresh process sees only the environment (HF_ENDPOINT, HF_HUB_CACHE, HF_TOKEN)."""
    env = {**os.environ, **hub.env, "TDMPC2_DATA_HOME": str(tmp_path / "h")}
    target = tmp_path / "sub"
    run = subprocess.run(
        [sys.executable, "-m", "tdmpc2_data.cli", "download", REPO, "--dir", str(target)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert episodes(open_dataset(target)) == episodes(open_dataset(pushed))
    assert any(p.endswith("/zarr.json") for p in hub.server.downloads())


# ---------------------------------------------------------------- datasets interop
def test_to_hf_dataset_episodes_and_transitions(hub, pushed):
    ds = open_dataset(pushed)
    eps = to_hf_dataset(ds, unit="episode")
    assert len(eps) == 8 and eps.features["task"].names == TASKS
    row = eps.with_format("numpy")[7]  # shard 2 holds walker-walk (id 0), then cheetah-run
    np.testing.assert_array_equal(row["obs"], ds.read_shard(2)["obs"][1])
    assert eps.features["task"].int2str(int(row["task"])) == "cheetah-run"
    steps = to_hf_dataset(ds, unit="transition", streaming=True)
    rows = list(steps.take(101))
    np.testing.assert_array_equal(rows[5]["next_obs"], rows[6]["obs"])
    np.testing.assert_array_equal(rows[5]["action"], ds.read_shard(0)["action"][0, 5])
    assert rows[100]["episode"] == 1 and rows[100]["step"] == 0
    streamed = to_hf_dataset(hubio.hub_url(REPO, "v1"), unit="episode", streaming=True)
    assert sum(1 for _ in streamed) == 8


def test_load_dataset_reads_a_pushed_repo(hub, pushed, tmp_path, monkeypatch):
    """The real ``datasets.load_dataset`` on the pushed repo: the per-episode table the card
    points at (before, it tried the zarr JSON files and failed with a CastError)."""
    import datasets

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    table = datasets.load_dataset(REPO, split="train")
    ds = open_dataset(pushed)
    assert len(table) == ds.num_episodes == 8
    assert table.features["task"].names == TASKS
    rows = table.to_list()
    assert [r["episode"] for r in rows] == list(range(8))
    for r in rows:
        shard = [s.path for s in ds.shards].index(r["shard"])
        data = ds.read_shard(shard)
        e = r["shard_episode"]
        assert TASKS[r["task"]] == ds.tasks[data["task"][e]] and r["length"] == 100
        assert r["return"] == pytest.approx(float(data["reward"][e].astype(np.float64).sum()))
        assert r["success"] is None  # these shards store no success


def test_to_hf_dataset_keeps_success_and_float16(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "succ"
    with ShardWriter(root, tasks=["mw-door-open"], obs_dtype="float16") as w:
        success = np.zeros(100, bool)
        success[60:] = True
        w.add_episode(
            "mw-door-open",
            obs=rng.normal(size=(101, 39)).astype(np.float32),
            action=rng.uniform(-1, 1, (100, 4)).astype(np.float32),
            reward=rng.uniform(size=100).astype(np.float32),
            success=success,
        )
    eps = to_hf_dataset(root)
    assert eps.features["obs"].dtype == "float16" and "success" in eps.features
    np.testing.assert_array_equal(eps.with_format("numpy")[0]["success"], success)
    steps = to_hf_dataset(open_dataset(root), unit="transition")
    assert len(steps) == 100 and steps[59]["success"] is False and steps[60]["success"] is True
    with ShardWriter(root, tasks=["mw-door-open"]) as w:  # a second shard without success
        w.add_episode("mw-door-open", obs=np.zeros((101, 39), np.float32),
                      action=np.zeros((100, 4), np.float32), reward=np.ones(100, np.float32))  # fmt: skip
    eps = to_hf_dataset(root)
    assert len(eps) == 2 and eps[0]["success"][60] is True and eps[1]["success"] is None
    table = episode_table(open_dataset(root)).to_list()
    assert [r["success"] for r in table] == [True, None] and table[1]["return"] == 100.0


# ---------------------------------------------------------------- model repos (server)
def test_server_serves_model_repos(hub, tmp_path):
    api = hub.api()
    api.create_repo("tester/model")
    weights = os.urandom(200_000)
    api.upload_file(
        path_or_fileobj=weights, path_in_repo="model.safetensors", repo_id="tester/model"
    )
    api.upload_file(
        path_or_fileobj=b'{"size": "1M"}', path_in_repo="config.json", repo_id="tester/model"
    )
    got = Path(api.hf_hub_download("tester/model", "model.safetensors")).read_bytes()
    assert got == weights
    assert json.loads(Path(api.hf_hub_download("tester/model", "config.json")).read_text()) == {
        "size": "1M"
    }
    assert sorted(s.rfilename for s in api.model_info("tester/model").siblings) == [
        ".gitattributes", "config.json", "model.safetensors",
    ]  # fmt: skip


# ---------------------------------------------------------------- legacy chunks
LEGACY = FIXTURES


@pytest.fixture(params=["_published", ""], ids=["published", "tensordict-0.8"])
def legacy_repo(hub, tmp_path, monkeypatch, request) -> str:
    """A repo laid out like the original release: two copies of the tiny fixture chunk, in
    the published chunks' pickle layout or a re-saved file's (tensordict 0.8)."""
    monkeypatch.setenv("TDMPC2_DATA_HOME", str(tmp_path / "tdmpc2-home"))
    api = hub.api()
    api.create_repo("tester/legacy", repo_type="dataset")
    for i in range(2):
        api.upload_file(
            path_or_fileobj=str(LEGACY / f"mt80_chunk_tiny{request.param}.pt"),
            path_in_repo=f"mt80/chunk_{i}.pt",
            repo_id="tester/legacy",
            repo_type="dataset",
        )
    monkeypatch.setenv("TDMPC2_DATA_REPO_MT80", "tester/legacy")
    return "tester/legacy"


def expected_episodes(tasks: set[str] | None = None) -> list[tuple[str, bytes]]:
    from tdmpc2_data import TASK_SETS

    want = np.load(LEGACY / "mt80_chunk_tiny_expected.npz")
    out = []
    for e, tid in enumerate(want["task"]):
        name = TASK_SETS["mt80"][tid]
        if tasks is None or name in tasks:
            blob = b"".join(want[k][e].tobytes() for k in ("obs", "action", "reward"))
            out.append((name, blob))
    return out


def test_legacy_chunks_download_convert_and_resume(hub, legacy_repo, tmp_path):
    hub.server.fail("GET", "mt80/chunk_1.pt", status=500)
    with pytest.raises(HubError, match="500"):
        hubio.download("mt80")
    dest = tmp_path / "tdmpc2-home" / "mt80"
    assert episodes(open_dataset(dest)) == sorted(expected_episodes())  # chunk 0 is in
    assert not list((dest / ".chunks").rglob("*.pt"))  # the converted chunk is deleted
    hub.server.log.clear()
    assert hubio.download("mt80") == dest
    assert hub.server.downloads(".pt") == [
        "/datasets/tester/legacy/resolve/" + _main(hub) + "/mt80/chunk_1.pt"
    ]
    ds = open_dataset(dest)
    assert ds.name == "mt80" and len(ds.tasks) == 80  # published ids
    assert episodes(ds) == sorted(expected_episodes() * 2)
    hub.server.log.clear()
    assert hubio.download("mt80") == dest  # all converted: nothing fetched
    assert hub.server.downloads(".pt") == []
    task = episodes(ds)[0][0]  # after the full download, a task's view (as a shard repo gives)
    view = hubio.download("mt80", tasks=[task])
    assert view != dest and hub.server.downloads(".pt") == []
    mine = [e for e in episodes(view) if e[0] == task]  # whole shards, as from a shard repo
    assert mine == sorted(expected_episodes({task}) * 2)
    hub.api().upload_file(  # upstream replaces a chunk: never mixed into the same directory
        path_or_fileobj=str(LEGACY / "mt30_chunk_tiny.pt"),
        path_in_repo="mt80/chunk_1.pt",
        repo_id=legacy_repo,
        repo_type="dataset",
    )
    with pytest.raises(HubError, match="holds a different version of mt80/chunk_1.pt"):
        hubio.download("mt80")


def test_legacy_download_killed_mid_way_resumes_without_repeating(hub, legacy_repo, tmp_path):
    """SIGKILL while chunk 1 downloads (chunk 0 converted): the rerun fetches only chunk 1
    and the dataset holds every episode once."""
    import signal
    import time

    dest = tmp_path / "tdmpc2-home" / "mt80"
    hub.server.fail("GET", "mt80/chunk_1.pt", stall=60)
    env = {**os.environ, **hub.env, "TDMPC2_DATA_HOME": str(tmp_path / "tdmpc2-home")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tdmpc2_data.cli", "download", "mt80"],
        env={**env, "TDMPC2_DATA_REPO_MT80": legacy_repo, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def chunk_0_converted() -> bool:
        try:
            return open_dataset(dest, check_index=False).num_episodes == 6
        except (FileNotFoundError, ValueError):
            return False

    deadline = time.monotonic() + 60
    while not (any("chunk_1.pt" in p for p in hub.server.downloads()) and chunk_0_converted()):
        assert proc.poll() is None and time.monotonic() < deadline, "stuck before chunk 1"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert episodes(open_dataset(dest)) == sorted(expected_episodes())  # chunk 0, once
    hub.server.log.clear()
    assert hubio.download("mt80") == dest
    assert [p.rsplit("/", 1)[-1] for p in hub.server.downloads(".pt")] == ["chunk_1.pt"]
    assert episodes(open_dataset(dest)) == sorted(expected_episodes() * 2)
    assert verify_dataset(dest).ok


def test_legacy_chunks_with_tasks_and_offline(hub, legacy_repo, tmp_path, monkeypatch):
    target = tmp_path / "mw"
    assert cli(["download", "mt80", "--tasks", "door-open", "--dir", str(target)]) == 0
    assert episodes(open_dataset(target)) == sorted(expected_episodes({"mw-door-open"}) * 2)
    hub.server.stop()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hubio.download("mt80", tasks=["mw-door-open"], local_dir=target) == target
    with pytest.raises(HubError, match="HF_HUB_OFFLINE=1 is set"):
        hubio.download("mt80", tasks=["walker-walk"], local_dir=target)


def _main(hub) -> str:
    return hub.api().dataset_info("tester/legacy").sha


def test_a_mistyped_local_path_is_not_taken_for_a_hub_repo(tmp_path, monkeypatch, capsys):
    """``data/tow`` next to a local ``data/`` is a typo, not the Hub repo data/tow: every
    command says so at once (before, 24-31 s of Hub retries, then a network error)."""
    from tdmpc2_model import TDMPC2
    from tdmpc2_model.training.pretrain import resolve_data

    (tmp_path / "data" / "two").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # a Hub call would fail
    assert cli(["info", "data/tow"]) == 2
    err = capsys.readouterr().err
    assert "'data/tow': no such file or directory (data/ is a local directory" in err
    assert err.rstrip().endswith("did you mean data/two?") and "Traceback" not in err
    with pytest.raises(FileNotFoundError, match=r"checkpoint 'data/tow'.*did you mean data/two"):
        TDMPC2.from_pretrained("data/tow")
    with pytest.raises(FileNotFoundError, match=r"--data 'data/tow'.*did you mean data/two"):
        resolve_data("data/tow")
    with pytest.raises(FileNotFoundError, match=r"'data/xyz'.*local directory.*\)\.$"):
        resolve_data("data/xyz")  # no close match: no suggestion
    with pytest.raises(FileNotFoundError, match="no such directory, and not hf://"):
        resolve_data(str(tmp_path / "missing"))  # an absolute path is never a repo id
