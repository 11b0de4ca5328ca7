"""`tdmpc2-data download mt80|mt30` of the original release's chunks, as a user meets it, from
a local Hub repo laid out like `nicklashansen/tdmpc2`: download, convert, verify, pretrain;
a SIGKILL mid-transfer resumes that chunk from its bytes on disk (HTTP Range); a disk without
room, a disk filled mid-chunk, a chunk 404 and a Hub gone mid-chunk fail in one line
naming the chunk. The chunks are the published layout's tiny fixtures (`*_published*`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import CommitOperationAdd
from legacy_chunks import PUBLISHED, assert_matches, expected
from test_full_disk import fill

from tdmpc2_data import open_dataset
from tdmpc2_data.cli import main

REPO = "tester/release"
SIZE = PUBLISHED["mt80"].stat().st_size
FILES = {"mt80/chunk_0.pt": "mt80", "mt80/chunk_1.pt": "mt80", "mt30/chunk_0.pt": "mt30"}


@pytest.fixture
def release(hub, tmp_path, monkeypatch) -> str:
    """A dataset repo holding mt80/chunk_0.pt, mt80/chunk_1.pt and mt30/chunk_0.pt, which
    `download("mt80")` and `download("mt30")` use."""
    monkeypatch.setenv("TDMPC2_DATA_HOME", str(tmp_path / "tdmpc2-home"))
    api = hub.api()
    api.create_repo(REPO, repo_type="dataset")
    ops = [CommitOperationAdd(path, str(PUBLISHED[name])) for path, name in FILES.items()]
    api.create_commit(REPO, ops, commit_message="the release", repo_type="dataset")
    for name in ("mt80", "mt30"):
        monkeypatch.setenv(f"TDMPC2_DATA_REPO_{name.upper()}", REPO)
    return REPO


def cli(*argv: str) -> list[str]:
    """The `tdmpc2-data` command line, in a subprocess on the local Hub."""
    return [sys.executable, "-m", "tdmpc2_data.cli", *argv]


def cli_env(hub) -> dict[str, str]:
    return {**os.environ, **hub.env, "OMP_NUM_THREADS": "1"}


def error_line(stderr: str) -> str:
    """The one error line of a failed command (after its progress bars), no traceback."""
    assert stderr.count("error:") == 1 and "Traceback" not in stderr, stderr
    return next(line for line in stderr.splitlines() if "error:" in line)


def partial(dest: Path, chunk: str) -> Path | None:
    found = list((dest / ".chunks").glob(f"*/{chunk}.part"))
    return found[0] if found else None


def start_killable_download(hub, dest: Path, chunk: str, received: int) -> subprocess.Popen:
    """`tdmpc2-data download mt80` with the server pausing ``chunk`` after ``received`` bytes;
    returns once those bytes are on disk."""
    hub.server.fail("GET", f"mt80/{chunk}", pause_after=received)
    proc = subprocess.Popen(cli("download", "mt80", "--dir", str(dest)), env=cli_env(hub),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while (p := partial(dest, chunk)) is None or p.stat().st_size < received:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{chunk}: {received} bytes never arrived"
        time.sleep(0.05)
    return proc


def test_download_mt80_and_mt30_then_verify_and_pretrain(hub, release, tmp_path, capfd,
                                                         monkeypatch):  # fmt: skip
    from tdmpc2_model.apps.cli import pretrain_main

    monkeypatch.setenv("TDMPC2_DISABLE_PROGRESS_BARS", "0")  # the bars a terminal shows

    d80, d30 = tmp_path / "mt80", tmp_path / "mt30"
    assert main(["download", "mt80", "--dir", str(d80)]) == 0
    err = capfd.readouterr().err
    for bar in ("mt80 chunks", "chunk/s", "mt80/chunk_0.pt", "mt80/chunk_1.pt", "episode"):
        assert bar in err, (bar, err)  # the chunk bar, each chunk's byte and episode bars
    assert_matches(d80, "mt80", copies=2)
    assert not (d80 / ".chunks").exists()

    assert main(["download", "mt30", "--tasks", "cup-spin", "--dir", str(d30)]) == 0
    ds = open_dataset(d30)
    want = expected("mt30")
    cup = ds.tasks.index("cup-spin")
    assert ds.num_episodes == int((want["task"] == cup).sum()) == 2
    assert {t for t, n in ds.task_counts().items() if n} == {cup}
    np.testing.assert_array_equal(
        np.sort(ds.read_shard(0)["reward"].ravel()),
        np.sort(want["reward"][want["task"] == cup].ravel()),
    )
    assert main(["verify", str(d80)]) == 0 and main(["verify", str(d30)]) == 0

    argv = ["--size", "1M", "--data", str(d80), "--max-steps", "2", "--batch-size", "8",
            "--accelerator", "cpu", "--devices", "1", "--num-workers", "0",
            "--out", str(tmp_path / "pt")]  # fmt: skip
    assert pretrain_main(argv) == 0
    assert (tmp_path / "pt" / "final").is_dir()


def test_a_kill_mid_chunk_resumes_that_chunk_from_its_bytes_on_disk(hub, release, tmp_path):
    dest = tmp_path / "mt80"
    received = SIZE // 2
    proc = start_killable_download(hub, dest, "chunk_1.pt", received)
    proc.send_signal(signal.SIGKILL)  # mid-transfer of chunk_1, chunk_0 converted
    proc.communicate()
    assert open_dataset(dest).num_episodes == 6
    assert partial(dest, "chunk_1.pt").stat().st_size == received

    hub.server.log.clear()
    served = hub.server.bytes_served
    run = subprocess.run(cli("download", "mt80", "--dir", str(dest)), env=cli_env(hub),
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    gets = [(p, r) for m, p, r in hub.server.log if m == "GET" and p.endswith(".pt")]
    assert [r for p, r in gets if p.endswith("mt80/chunk_1.pt")] == [f"bytes={received}-"]
    assert not [p for p, _ in gets if p.endswith("chunk_0.pt")]  # converted: not requested
    assert hub.server.bytes_served - served == SIZE - received  # only the missing bytes
    assert_matches(dest, "mt80", copies=2)
    assert main(["verify", str(dest)]) == 0 and not (dest / ".chunks").exists()


def test_no_room_for_a_chunk_and_its_shards_refuses_before_downloading(hub, release, disk):
    fill(disk, leave=2 * SIZE - 4096)
    run = subprocess.run(cli("download", "mt80", "--dir", str(disk / "mt80")), env=cli_env(hub),
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 2
    line = error_line(run.stderr)
    assert line.startswith("tdmpc2-data download: error: mt80/chunk_0.pt needs 0.000"), line
    assert f"GB free on the filesystem of {disk / 'mt80'}, which has 0.000" in line, line
    assert not hub.server.downloads(".pt")  # refused before its download


@pytest.mark.parametrize("filled", ["download", "conversion"])
def test_a_disk_filled_mid_chunk_is_one_line_naming_it_and_the_rerun_continues(
    hub, release, disk, filled
):
    """Someone else fills the disk while chunk_1 downloads: its download or its conversion
    fails, naming it; the rerun resumes the download (or refetches nothing)."""
    dest = disk / "mt80"
    proc = start_killable_download(hub, dest, "chunk_1.pt", SIZE // 2)
    rest = SIZE - SIZE // 2 if filled == "conversion" else 0  # room to finish the download
    filler = fill(disk, leave=rest + 8192)
    hub.server.release()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2
    line = error_line(stderr)
    assert "error: mt80/chunk_1.pt: no space left on the device writing " in line, line
    assert line.endswith("; free some space and rerun (converted chunks and downloaded bytes "
                         "are kept).")  # fmt: skip
    part = partial(dest, "chunk_1.pt")
    assert (part is None) == (filled == "conversion")  # downloaded completely, or part of it
    have = part.stat().st_size if part else SIZE
    filler.unlink()
    hub.server.log.clear()
    run = subprocess.run(cli("download", "mt80", "--dir", str(dest)), env=cli_env(hub),
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    ranges = [r for m, p, r in hub.server.log if m == "GET" and p.endswith(".pt")]
    assert ranges == ([f"bytes={have}-"] if part else []) and have >= SIZE // 2
    assert_matches(dest, "mt80", copies=2)


def test_a_chunk_404_is_one_line_naming_it(hub, release, tmp_path):
    hub.server.fail("GET", "mt80/chunk_1.pt", status=404)
    dest = tmp_path / "mt80"
    run = subprocess.run(cli("download", "mt80", "--dir", str(dest)), env=cli_env(hub),
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 2
    line = error_line(run.stderr)
    assert f"downloading {REPO}/mt80/chunk_1.pt" in line and "404" in line, line
    assert open_dataset(dest).num_episodes == 6  # chunk_0 is kept


def test_the_hub_gone_mid_chunk_is_one_line_naming_it(hub, release, tmp_path):
    dest = tmp_path / "mt80"
    received = SIZE // 3
    proc = start_killable_download(hub, dest, "chunk_1.pt", received)
    hub.server.stop()  # cuts the held transfer; the client's retries find no server
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2
    line = error_line(stderr)
    assert f"downloading {REPO}/mt80/chunk_1.pt: no connection to {hub.endpoint}" in line, line
    assert f"after {received} of " in line and "rerun to resume" in line, line


def test_a_second_download_into_the_same_dir_leaves_the_chunk_to_the_first(hub, release, tmp_path):
    dest = tmp_path / "mt80"
    first = start_killable_download(hub, dest, "chunk_1.pt", 1000)
    try:
        run = subprocess.run(cli("download", "mt80", "--dir", str(dest)), env=cli_env(hub),
                             capture_output=True, text=True)  # fmt: skip
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    assert run.returncode == 2
    line = error_line(run.stderr)
    assert "mt80/chunk_1.pt: another process is downloading it into" in line, line
    assert partial(dest, "chunk_1.pt").stat().st_size == 1000  # untouched


def test_a_damaged_partial_download_is_caught_by_its_sha256_and_fetched_again(
    hub, release, tmp_path
):
    dest = tmp_path / "mt80"
    first = start_killable_download(hub, dest, "chunk_1.pt", SIZE // 2)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    part = partial(dest, "chunk_1.pt")
    with open(part, "r+b") as f:  # one flipped byte in what was received
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    cmd = cli("download", "mt80", "--dir", str(dest))
    run = subprocess.run(cmd, env=cli_env(hub), capture_output=True, text=True)
    assert run.returncode == 2
    line = error_line(run.stderr)
    assert f"downloading {REPO}/mt80/chunk_1.pt: the bytes received do not match" in line, line
    assert not part.exists() and open_dataset(dest).num_episodes == 6
    hub.server.log.clear()
    run = subprocess.run(cmd, env=cli_env(hub), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert [r for m, p, r in hub.server.log if m == "GET" and p.endswith(".pt")] == ["bytes=0-"]
    assert_matches(dest, "mt80", copies=2)
