"""Every command runs torch on one CPU thread unless told otherwise: two spinning OpenMP
threads next to one busy process made the quickstart's pretraining 36x slower
(bench/contention.py)."""

from __future__ import annotations

import pytest
import torch

from tdmpc2_model.apps.cli import load_recipe, pretrain_main
from tdmpc2_model.apps.quickstart import run
from tdmpc2_model.training.threads import set_torch_threads


class Seen(Exception):
    """Stops a command at its first stage, once the thread count there is recorded."""


@pytest.fixture
def threads(monkeypatch):
    """The thread counts seen inside stages; torch's setting restored afterwards."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # torch's own default on a 2-core machine
    seen: list[int] = []
    yield seen
    torch.set_num_threads(before)


def stop_here(seen: list[int]):
    def stage(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise Seen

    return stage


def test_set_torch_threads_defaults_to_one_unless_told(threads, monkeypatch):
    assert set_torch_threads() == 1
    assert set_torch_threads(2) == 2
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert set_torch_threads() == 2  # OpenMP's own setting is kept


def test_quickstart_stages_use_the_commands_thread_default(threads, monkeypatch, tmp_path):
    monkeypatch.setattr("tdmpc2_data.collect.collect", stop_here(threads))
    with pytest.raises(Seen):
        run(load_recipe("quickstart"), tmp_path)
    assert threads == [1]


def test_pretraining_uses_one_thread_unless_told(threads, monkeypatch, tmp_path):
    monkeypatch.setattr("tdmpc2_model.training.pretrain.pretrain", stop_here(threads))
    for extra in ([], ["--threads", "2"]):
        with pytest.raises(Seen):
            pretrain_main(["--data", str(tmp_path), "--out", str(tmp_path / "run"), *extra])
    assert threads == [1, 2]
