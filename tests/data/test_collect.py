"""`collect` loses nothing and repeats nothing: episodes are on disk as they finish, a rerun
continues an interrupted collection (the same episodes as an uninterrupted one, none twice),
and bad arguments are refused before anything is written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from dataset_content import episodes

from tdmpc2_data.cli import main
from tdmpc2_data.collect import collect, episode_seed
from tdmpc2_data.reader import open_dataset
from tdmpc2_data.verify import verify_dataset

TASKS = ["cartpole-balance", "mw-reach"]


def test_episode_seeds_do_not_depend_on_the_other_tasks(tmp_path):
    collect(tmp_path / "both", TASKS, 2, progress=False)
    collect(tmp_path / "one", ["mw-reach"], 2, progress=False)
    both = [e for e in episodes(tmp_path / "both") if e[0] == "mw-reach"]
    assert both == episodes(tmp_path / "one")
    assert len({episode_seed(0, t, e) for t in TASKS for e in range(1000)}) == 2000


def test_rerun_continues_and_never_duplicates(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    collect(full, TASKS, 3, progress=False)
    collect(part, TASKS, 1, progress=False)
    collect(part, TASKS, 3, progress=False)  # continues: 2 more episodes of each task
    collect(part, TASKS, 3, progress=False)  # complete: nothing added
    assert episodes(part) == episodes(full)
    assert len(set(episodes(part))) == 6
    assert verify_dataset(part).ok
    collect(part, TASKS, 1, seed=1, progress=False)  # another seed: another collection
    assert len(set(episodes(part))) == 8


def start_and_stop(out: Path, sig: int) -> subprocess.CompletedProcess:
    """Start `tdmpc2-data collect` (6 episodes), send ``sig`` once 2 episodes are on disk."""
    cmd = [sys.executable, "-m", "tdmpc2_data.cli", "collect", "--tasks", "cartpole-balance",
           "--episodes", "6", str(out)]  # fmt: skip
    # a shell that runs jobs in the background starts them with SIGINT ignored: restore it
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        shards = list((out / "shards").glob("*/zarr.json")) if (out / "shards").exists() else []
        if len(shards) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the collection finished before it could be stopped"
    os.kill(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_collection_keeps_finished_episodes_and_rerun_completes(tmp_path, sig):
    """kill -9 / SIGTERM mid-collection: the finished episodes are on disk (readable,
    verified); the rerun of the same command ends with exactly the uninterrupted collection."""
    out = tmp_path / "killed"
    start_and_stop(out, sig)
    kept = open_dataset(out).num_episodes  # the index may lag the disk by the last shard
    assert 1 <= kept < 6
    assert verify_dataset(out).ok
    assert main(["collect", "--tasks", "cartpole-balance", "--episodes", "6", str(out)]) == 0
    collect(tmp_path / "uninterrupted", ["cartpole-balance"], 6, progress=False)
    assert episodes(out) == episodes(tmp_path / "uninterrupted")


def test_ctrl_c_says_what_was_kept(tmp_path):
    out = tmp_path / "interrupted"
    done = start_and_stop(out, signal.SIGINT)
    assert done.returncode == 130
    messages = [line for line in done.stderr.splitlines() if "collect cartpole" not in line]
    assert [m for m in messages if m.strip()] == [messages[-1]]  # one line besides the bar
    assert "interrupted" in messages[-1] and "Traceback" not in done.stderr
    assert open_dataset(out).num_episodes >= 2 and verify_dataset(out).ok


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tasks", "cartpole-balance", "--episodes", "0"], "episodes=0"),
        (["--tasks", "cartpole-balance", "--episodes", "-3"], "episodes=-3"),
        (["--episodes", "1"], "give the tasks"),
    ],
)
def test_bad_arguments_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "data"
    assert main(["collect", *args, str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_an_empty_directory_argument_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["collect", "--tasks", "cartpole-balance", "--episodes", "1", ""]) == 2
    assert "empty" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_tasks_accepts_comma_lists(tmp_path, capsys):
    out = tmp_path / "data"
    assert (
        main(["collect", "--tasks", "mw-reach,cartpole-balance", "--episodes", "1", str(out)]) == 0
    )
    assert open_dataset(out).tasks == ["mw-reach", "cartpole-balance"]
    assert np.all(np.asarray(list(open_dataset(out).task_counts().values())) == 1)
