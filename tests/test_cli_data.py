"""`tdmpc2-data` basics: the task table, --help with examples, clean errors."""

import subprocess
import sys

import numpy as np
import pytest

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
    "command", ["list", "collect", "convert", "verify", "info", "download", "push"]
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
