"""`download("mt80")` from a local Hub repo of chunks in the published layout (a 7-key
TensorDict state with `_device = torch.device('cpu')`): download, convert, resume after a
kill and after an interrupted download, match."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from legacy_chunks import PUBLISHED, assert_matches

from tdmpc2_data import hub as hubio
from tdmpc2_data import open_dataset
from tdmpc2_data.format import verify_dataset

CHUNKS = 3


@pytest.fixture
def published_repo(hub, tmp_path, monkeypatch) -> str:
    """A repo laid out like the original release, its mt80 chunks in the published layout."""
    monkeypatch.setenv("TDMPC2_DATA_HOME", str(tmp_path / "tdmpc2-home"))
    api = hub.api()
    api.create_repo("tester/legacy-published", repo_type="dataset")
    for i in range(CHUNKS):
        api.upload_file(
            path_or_fileobj=str(PUBLISHED["mt80"]),
            path_in_repo=f"mt80/chunk_{i}.pt",
            repo_id="tester/legacy-published",
            repo_type="dataset",
        )
    monkeypatch.setenv("TDMPC2_DATA_REPO_MT80", "tester/legacy-published")
    return "tester/legacy-published"


def test_2023_chunks_download_convert_and_resume_after_a_kill(hub, published_repo, tmp_path):
    dest = tmp_path / "mt80"
    kill = (  # killed (no cleanup) while converting the second chunk
        "import os, sys\n"
        "from tdmpc2_data.convert import legacy_pt\n"
        "from tdmpc2_data import hub\n"
        "real, calls = legacy_pt._add_slice, []\n"
        "def add(*a):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 5: os._exit(9)\n"
        "    return real(*a)\n"
        "legacy_pt._add_slice = add\n"
        "hub.download('mt80', local_dir=sys.argv[1])\n"
    )
    env = {**os.environ, **hub.env, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", kill, str(dest)], env=env)
    assert proc.returncode == 9
    assert open_dataset(dest).num_episodes >= 6  # chunk 0 is in (and part of chunk 1)
    hub.server.log.clear()
    # the second chunk's download is cut midway: it resumes with a Range request
    hub.server.fail("GET", "mt80/chunk_2.pt", drop_after=PUBLISHED["mt80"].stat().st_size // 2)
    assert hubio.download("mt80", local_dir=dest) == dest
    fetched = hub.server.downloads(".pt")
    assert not any(p.endswith("chunk_0.pt") for p in fetched)  # converted: not fetched again
    assert len([p for p in fetched if p.endswith("chunk_2.pt")]) == 2  # cut, then resumed
    assert_matches(dest, "mt80", copies=CHUNKS)
    ds = open_dataset(dest)
    assert all(s["complete"] for s in ds.attrs["sources"]) and verify_dataset(dest).ok
    assert not list((dest / ".chunks").rglob("*.pt"))


def test_2023_chunks_from_the_cli_and_a_failed_chunk_is_one_line(hub, published_repo, tmp_path):
    dest = tmp_path / "mt80"
    env = {**os.environ, **hub.env, "OMP_NUM_THREADS": "1"}
    hub.server.fail("GET", "mt80/chunk_1.pt", status=500)
    cmd = [sys.executable, "-m", "tdmpc2_data.cli", "download", "mt80", "--dir", str(dest)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    err = [line for line in run.stderr.splitlines() if "error:" in line]
    assert len(err) == 1 and err[0].startswith("tdmpc2-data download: error: ") and "500" in err[0]
    assert_matches(dest, "mt80", copies=1)  # chunk 0 is kept
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert_matches(dest, "mt80", copies=CHUNKS)
