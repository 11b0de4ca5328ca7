"""`tdmpc2-data` basics: the task table, --help with examples, clean errors."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from legacy_chunks import TD02, hostile_chunk, truncated_chunk, truncated_pickle_chunk

from tdmpc2_data import open_dataset
from tdmpc2_data.cli import main


def test_list_prints_all_tasks(capsys, monkeypatch):
    monkeypatch.delenv("TDMPC2_DATA_REPO_MT80", raising=False)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "mw-door-open" in out and "myo-pen-twirl-hard" in out and "104 tasks" in out
    assert "mt80  545M transitions, 80 tasks; from nicklashansen/tdmpc2" in out


def test_list_names_the_configured_dataset_repo(capsys, monkeypatch):
    monkeypatch.setenv("TDMPC2_DATA_REPO_MT30", "my-org/mt30-shards")
    assert main(["list"]) == 0
    assert "mt30  345M, 30 tasks; from my-org/mt30-shards" in capsys.readouterr().out


def test_list_of_a_task_set_keeps_published_ids(capsys):
    assert main(["list", "--set", "mt30"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith("cup-spin "))
    assert row.split()[-1] == "28"


@pytest.mark.parametrize(
    "command", ["list", "collect", "convert", "export", "verify", "info", "download", "push"]
)
def test_every_subcommand_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "example" in capsys.readouterr().out


def test_console_script_is_installed():
    result = subprocess.run(
        [sys.executable, "-m", "tdmpc2_data.cli", "list", "--set", "mt30"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "walker-stand" in result.stdout


def test_collect_writes_real_rollouts_that_verify(tmp_path, capsys):
    out = tmp_path / "data"
    assert (
        main(
            [
                "collect",
                "--task",
                "mw-reach",
                "--task",
                "pendulum-swingup",
                "--episodes",
                "2",
                str(out),
            ]
        )
        == 0
    )
    assert "4 episodes" in capsys.readouterr().out
    from tdmpc2_data import open_dataset
    from tdmpc2_data.format import verify_dataset

    ds = open_dataset(out)
    assert ds.tasks == ["mw-reach", "pendulum-swingup"]
    assert ds.num_transitions == 2 * 100 + 2 * 500
    assert verify_dataset(out).ok
    episode = ds.read_shard(0, fields=("action", "reward"))
    assert np.all(np.abs(episode["action"]) <= 1)


def test_collect_of_an_unavailable_simulator_is_a_clean_error_that_writes_nothing(tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["collect", "--task", "lift-cube", "--episodes", "1", str(out)]) == 2
    assert "mani_skill2" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------- expected errors: one line
def _refused(tmp: Path):
    path, _ = hostile_chunk(tmp / "chunk_0.pt", "os.system", tmp / "pwned")
    return ["convert", path, tmp / "ds"], f"{path}: ", "refuses to load os.system: not one of the"


def _truncated(tmp: Path):
    path = truncated_chunk(tmp / "chunk_0.pt")
    return ["convert", path, tmp / "ds"], f"{path}: ", "not a torch zip archive (truncated"


def _damaged_inside(tmp: Path):
    path = truncated_pickle_chunk(tmp / "chunk_0.pt")
    return ["convert", path, tmp / "ds"], f"{path}: ", "damaged pickle ("


def _unknown_task(tmp: Path):
    argv = ["convert", TD02["mt80"], tmp / "ds", "--tasks", "walkr"]
    return argv, "Unknown task 'walkr'", "Did you mean: walker-run, walker-walk"


def _missing_file(tmp: Path):
    path = tmp / "nowhere" / "chunk_0.pt"
    return (
        ["convert", path, tmp / "ds", "--from", "legacy-pt"],
        f"{path}: ",
        "no such file or directory",
    )


def _output_is_a_file(tmp: Path):
    (tmp / "ds").write_text("my notes")
    argv = ["convert", TD02["mt80"], tmp / "ds"]
    return argv, f"{tmp / 'ds'}: ", "exists and is not a directory (expected a directory"


def _bad_task_set(tmp: Path):
    argv = ["convert", TD02["mt80"], tmp / "ds", "--task-set", "mt81"]
    return argv, "--task-set 'mt81': ", "expected one of mt30, mt80"


def _push_of_no_dataset(tmp: Path):
    return ["push", tmp / "ds", "tester/x"], f"{tmp / 'ds' / 'zarr.json'}: ", "not found"


def _collect_unknown_task(tmp: Path):
    return ["collect", "--tasks", "nosuch", tmp / "ds"], "Unknown task 'nosuch'", "tdmpc2-data list"


@pytest.mark.parametrize(
    "case",
    [
        _refused,
        _truncated,
        _damaged_inside,
        _unknown_task,
        _missing_file,
        _output_is_a_file,
        _bad_task_set,
        _push_of_no_dataset,
        _collect_unknown_task,
    ],  # fmt: skip
    ids=lambda f: f.__name__.strip("_"),
)
def test_expected_errors_are_one_line_naming_the_file_or_flag(tmp_path, case):
    """`tdmpc2-data` as a user runs it: one stderr line `error: <file/flag>: <what>` (an
    unknown task: the name given and the closest ones), exit 2, no traceback, nothing written
    (an existing file at the output path is left as it was)."""
    argv, head, what = case(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    run = subprocess.run(
        [sys.executable, "-m", "tdmpc2_data.cli", *map(str, argv)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    prefix = f"tdmpc2-data {argv[0]}: error: {head}"
    assert run.stderr.startswith(prefix) and what in run.stderr, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no ds/ appeared
    if (tmp_path / "ds").is_file():
        assert (tmp_path / "ds").read_text() == "my notes"
    assert not (tmp_path / "pwned").exists()


def test_ctrl_c_during_convert_says_what_was_kept(tmp_path, monkeypatch, capsys):
    from tdmpc2_data.convert import legacy_pt

    first, second, dst = TD02["mt80"], tmp_path / "chunk_1.pt", tmp_path / "ds"
    second.write_bytes(first.read_bytes())
    real, calls = legacy_pt._add_slice, []

    def add_then_stop(*args):
        calls.append(1)
        if len(calls) == 4:  # the first chunk has 3 slices (one per task): stop in the second
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(legacy_pt, "_add_slice", add_then_stop)
    assert main(["convert", str(first), str(second), str(dst)]) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        f"tdmpc2-data convert: interrupted; every source converted completely is in {dst}; "
        "the partial shards of the interrupted one were removed. Rerun the same command to "
        "continue."
    )
    ds = open_dataset(dst)  # the first chunk is in, nothing of the second
    assert ds.num_episodes == 6 and [s["complete"] for s in ds.attrs["sources"]] == [True, False]
    monkeypatch.undo()
    assert main(["convert", str(first), str(second), str(dst)]) == 0
    assert "chunk_tiny_td02.pt: already converted, skipped" in capsys.readouterr().out
    ds = open_dataset(dst)
    assert ds.num_episodes == 12 and all(s["complete"] for s in ds.attrs["sources"])
