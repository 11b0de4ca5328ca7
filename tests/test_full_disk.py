"""A full disk, for real: a small tmpfs mounted for the test (root, or CAP_SYS_ADMIN, is
needed; elsewhere the tests skip). Collecting or converting onto it fails in one line that
names the path, leaves no temp files or empty dataset skeleton, and keeps what was there."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from legacy_fixtures import FIXTURES

from tdmpc2_data import open_dataset
from tdmpc2_data.cli import main
from tdmpc2_data.format import verify_dataset

TASK = "cartpole-balance"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs at ``tmp_path/disk``."""
    root = tmp_path / "disk"
    root.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(root)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def fill(disk: Path, leave: int = 8192) -> Path:
    """A file taking all but ``leave`` bytes of the disk's free space."""
    stat = os.statvfs(disk)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave))
    return filler


def no_temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".tmp") or p.name.endswith(".tmp")]


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The command's error line (after its progress bar's), with no traceback."""
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err, err
    return err.splitlines()[-1]


def test_collect_onto_a_full_disk_keeps_the_dataset_and_continues_after(disk, capsys):
    data = disk / "data"
    assert main(["collect", "--tasks", TASK, "--episodes", "2", str(data)]) == 0
    before = (data / "zarr.json").read_text()
    filler = fill(disk)
    capsys.readouterr()
    assert main(["collect", "--tasks", TASK, "--episodes", "6", str(data)]) == 2
    err = one_error_line(capsys)
    assert "no space left on the device" in err and str(disk) in err, err
    filler.unlink()
    assert no_temp_files(data) == []
    report = verify_dataset(data)
    assert report.ok, report.summary()
    kept = open_dataset(data).num_episodes
    assert kept >= 2 and ((data / "zarr.json").read_text() == before or kept > 2)
    assert main(["collect", "--tasks", TASK, "--episodes", "6", str(data)]) == 0  # continues
    assert open_dataset(data).num_episodes == 6 and verify_dataset(data).ok


def test_convert_onto_a_full_disk_leaves_no_dataset_skeleton(disk, capsys):
    fill(disk)
    target = disk / "converted"
    chunk = FIXTURES / "mt30_chunk_tiny.pt"
    assert main(["convert", str(chunk), str(target)]) == 2
    err = one_error_line(capsys)
    assert "no space left on the device" in err, err
    assert not target.exists() or list(target.iterdir()) == [], sorted(target.rglob("*"))
    shutil.rmtree(target, ignore_errors=True)
    (disk / "filler").unlink()
    assert main(["convert", str(chunk), str(target)]) == 0
    assert verify_dataset(target).ok
