"""A full disk, for real: a small tmpfs mounted for the test (root, or CAP_SYS_ADMIN, is
needed; elsewhere the tests skip). Collecting or converting onto it fails in one line that
names the path, leaves no temp files or empty dataset skeleton, and keeps what was there.
The ``disk`` fixture (a 2 MiB tmpfs) is in conftest.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from legacy_fixtures import FIXTURES

from tdmpc2_data import open_dataset
from tdmpc2_data.cli import main
from tdmpc2_data.format import verify_dataset

TASK = "cartpole-balance"


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


def test_pretraining_onto_a_full_disk_leaves_no_torn_checkpoint(tmp_path, disk, capsys):
    """Lightning's own save moved a file from the system temp dir and left a torn .ckpt,
    the newest, for `--resume` to pick; now the checkpoint is whole or absent."""
    from tdmpc2_model.apps.cli import pretrain_main

    data = tmp_path / "data"
    assert main(["collect", "--tasks", "mw-reach", "--episodes", "2", str(data)]) == 0
    fill(disk, leave=1 << 20)  # room for the logs, not for a 1M model's checkpoint
    out = disk / "pt"
    argv = ["--size", "1M", "--data", str(data), "--max-steps", "4", "--batch-size", "16",
            "--checkpoint-every", "2", "--accelerator", "cpu", "--devices", "1",
            "--num-workers", "0", "--out", str(out)]  # fmt: skip
    capsys.readouterr()
    assert pretrain_main(argv) == 2
    err = one_error_line(capsys)
    assert f"{out}/lightning/" in err and "no space left on the device" in err, err
    assert list((out / "lightning").glob("*.ckpt")) == [] and no_temp_files(out) == []


def test_online_training_onto_a_full_disk_keeps_its_episodes(disk, capsys):
    from tdmpc2_model.apps.cli import train_main

    out = disk / "run"
    fill(disk, leave=1 << 20)  # room for the buffer's episodes, not for a checkpoint
    argv = ["--task", "mw-reach", "--size", "1M", "--steps", "200", "--seed-steps", "50",
            "--eval-episodes", "0", "--checkpoint-every", "100", "--out", str(out),
            "--config", "batch_size=32", "--config", "num_samples=32", "--config",
            "num_elites=4", "--config", "num_pi_trajs=4", "--config", "iterations=1"]  # fmt: skip
    capsys.readouterr()
    assert train_main(argv) == 2
    err = one_error_line(capsys)
    assert f"{out}/checkpoints/step-000000100: no space left on the device" in err, err
    assert list((out / "checkpoints").iterdir()) == [] and no_temp_files(out) == []
    assert open_dataset(out / "buffer").num_episodes == 1 and verify_dataset(out / "buffer").ok
