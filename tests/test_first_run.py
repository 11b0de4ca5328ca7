"""A new user's first runs (issue #26): the README's commands agree with the recipes they
name, GPU-sized runs on a CPU are announced or refused before they start, short finetunes
are mostly training, and logs written to a file hold no progress-bar refreshes."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tdmpc2_model.cli import load_recipe

README = Path(__file__).parents[1] / "README.md"


def readme_commands() -> list[list[str]]:
    """The ``$ tdmpc2-...`` lines of the README's console blocks, as argv lists."""
    lines = re.findall(r"^\$ (tdmpc2-\S+ .*)$", README.read_text(), re.MULTILINE)
    return [shlex.split(line.split("  #")[0]) for line in lines]


def cli(command: str) -> list[str]:
    """``python`` arguments running ``tdmpc2-<command>`` of this checkout."""
    return ["-c", f"import sys; from tdmpc2_model.cli import {command}_main; "
            f"sys.exit({command}_main())"]  # fmt: skip


def test_readme_commands_with_a_recipe_repeat_its_values_and_cite_files_that_exist():
    """The 8-GPU line said --strategy fsdp where its recipe (and --help) say ddp."""
    checked = 0
    for argv in readme_commands():
        if "--recipe" not in argv:
            continue
        recipe_path = argv[argv.index("--recipe") + 1]
        assert (README.parent / recipe_path).is_file(), recipe_path
        recipe = load_recipe(README.parent / recipe_path)
        flags = dict(zip(argv[1::2], argv[2::2], strict=False))
        for flag, value in flags.items():
            key = flag.removeprefix("--").replace("-", "_")
            if key in recipe and recipe[key] not in ("auto", None):
                assert str(recipe[key]) == value, (" ".join(argv), key, recipe[key])
                checked += 1
    assert checked >= 1


def test_progress_bars_follow_the_terminal_and_the_switches(monkeypatch):
    import io

    from tdmpc2_data.progress import SWITCHES, bars_enabled, progress_bar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for name in SWITCHES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not bars_enabled() and progress_bar(range(3)).disable  # a log file
    monkeypatch.setenv("TDMPC2_DISABLE_PROGRESS_BARS", "0")
    assert bars_enabled()  # asked for
    monkeypatch.setattr("sys.stderr", Terminal())
    for name in SWITCHES:
        monkeypatch.setenv("TDMPC2_DISABLE_PROGRESS_BARS", "")
        monkeypatch.setenv(name, "1")
        assert not bars_enabled(), name
        monkeypatch.delenv(name)
    monkeypatch.delenv("TDMPC2_DISABLE_PROGRESS_BARS")
    assert bars_enabled() and not progress_bar(range(3)).disable
    assert progress_bar(range(3), enabled=False).disable


def test_a_log_file_holds_no_bar_refreshes(tmp_path):
    """collect, pretrain and train with their output in a file: each line once, no
    carriage-return refreshes of bars (before: 27 KB for these runs, 100-144 KB per
    quickstart, and a stray ``Training: 0/?`` Lightning bar)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("TDMPC2_DISABLE_PROGRESS_BARS",
                                                             "TQDM_DISABLE")}  # fmt: skip
    env["OMP_NUM_THREADS"] = "1"
    small = ["--config", "num_samples=16", "--config", "num_elites=2", "--config",
             "num_pi_trajs=2", "--config", "iterations=1"]  # fmt: skip
    commands = [
        ["-m", "tdmpc2_data.cli", "collect", "--tasks", "mw-reach", "--episodes", "2", "data"],
        [*cli("pretrain"), "--size", "1M", "--data", "data", "--max-steps", "20",
         "--batch-size", "16", "--log-every", "5", "--out", "pt"],
        [*cli("train"), "--task", "mw-reach", "--size", "1M", "--steps", "300",
         "--seed-steps", "100", "--batch-size", "16", "--eval-episodes", "1", "--out", "tr",
         *small],
    ]  # fmt: skip
    log = tmp_path / "log.txt"
    with open(log, "w") as out:
        for argv in commands:
            code = subprocess.run([sys.executable, *argv], stdout=out, stderr=out,
                                  cwd=tmp_path, env=env, timeout=600).returncode  # fmt: skip
            assert code == 0, log.read_text()
    text = log.read_text()
    assert "\r" not in text and "Training:" not in text, text
    assert "evaluating 1 episode at the end (1 evaluation" in text  # the plan, up front
    assert len(text) < 4096, (len(text), text)


def test_a_short_finetunes_default_plan_is_mostly_training():
    """``--steps 2000`` on door-open evaluated 10 episodes before training and 10 at the end
    (230 s of a 15-minute run); the defaults now fit the run's length."""
    from tdmpc2_data.tasks import get_task
    from tdmpc2_model.cli import finetune_parser
    from tdmpc2_model.online import eval_plan

    length = get_task("door-open").episode_length
    for steps in (2000, 20_000, 1_000_000):
        args = finetune_parser().parse_args(["--task", "door-open", "--steps", str(steps)])
        plan = eval_plan(args.steps, length, args.eval_every, args.eval_episodes,
                         args.eval_at_start)  # fmt: skip
        episodes = plan.evaluations(steps) * plan.episodes
        assert 1 <= episodes and episodes * length <= 0.1 * steps, (steps, plan)
        assert plan.at_start == (steps >= 100_000)
    assert eval_plan(2000, length).line(2000, length) == (
        "evaluating 1 episode every 1000 steps and at the end (2 evaluations, 10% of the run's "
        "2000 steps; --eval-every, --eval-episodes, --eval-at-start)"
    )
    given = eval_plan(2000, length, every=500, episodes=3, at_start=True)
    assert (given.evaluations(2000), given.episodes) == (5, 3)  # flags are kept as given
    assert eval_plan(2000, get_task("walker-walk").episode_length).evaluations(2000) == 1
