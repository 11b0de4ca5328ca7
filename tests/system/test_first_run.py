"""A new user's first runs (issue #26): the README's commands agree with the recipes they
name, GPU-sized runs on a CPU are announced or refused before they start, short finetunes
are mostly training, and logs written to a file hold no progress-bar refreshes."""

from __future__ import annotations

import re
import shlex

from checkout import ROOT

from tdmpc2_model.apps.cli import load_recipe

README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]


def readme_commands() -> list[list[str]]:
    """The ``$ tdmpc2-...`` lines of the README's and the docs' console blocks, as argv lists."""
    text = "\n".join(page.read_text() for page in DOCS)
    lines = re.findall(r"^\$ (tdmpc2-\S+ .*)$", text, re.MULTILINE)
    return [shlex.split(line.split("  #")[0]) for line in lines]


def cli(command: str) -> list[str]:
    """``python`` arguments running ``tdmpc2-<command>`` of this checkout."""
    return ["-c", f"import sys; from tdmpc2_model.apps.cli import {command}_main; "
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
    from tdmpc2_model.apps.cli import finetune_parser
    from tdmpc2_model.training.online import eval_plan

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


def _no_trainer(monkeypatch) -> None:
    """Nothing may start: a refusal comes before the data and the Trainer."""
    import tdmpc2_model.training.pretrain as lightning

    def started(*args, **kwargs):
        raise AssertionError("the Trainer was started")

    monkeypatch.setattr(lightning.L, "Trainer", started)
    monkeypatch.setattr(lightning.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(lightning.os, "sched_getaffinity", lambda pid: {0, 1})


def test_gpu_recipes_on_a_cpu_are_refused_before_starting(tmp_path, monkeypatch, capsys):
    """The README's 8-GPU line on a 2-core machine without a GPU started 8 CPU ranks, killed
    for memory after 57 s; a 317M run that cannot fit started too."""
    from types import SimpleNamespace

    import psutil

    from tdmpc2_model.apps.cli import pretrain_main

    _no_trainer(monkeypatch)
    base = ["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")]
    argv = ["--size", "317M", "--devices", "8", "--strategy", "ddp", "--precision", "bf16-mixed"]
    assert pretrain_main([*argv, *base]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("tdmpc2-pretrain: error: --devices 8: no GPU here, so that would be 8 CPU "
                   "processes on 2 cores; use --devices 1 (at most 2), or a machine with "
                   "GPUs.")  # fmt: skip
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=8e9))
    assert pretrain_main(["--size", "317M", "--precision", "bf16-mixed", *base]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("tdmpc2-pretrain: error: --size 317M --batch-size 1024 on CPU (one "
                   "process): needs about 12.7 GB (estimate) and 8.0 GB is available; use a "
                   "smaller --size or --batch-size, or a machine with a GPU.")  # fmt: skip


def test_a_cpu_run_announces_its_processes_and_memory(tmp_path, monkeypatch, capsys):
    from tdmpc2_model.training.pretrain import check_cpu_run

    _no_trainer(monkeypatch)
    check_cpu_run("48M", 2, 256, "32-true", {}, say=True)
    said = capsys.readouterr().out.splitlines()
    assert said[0] == ("--devices 2: no GPU here: 2 CPU processes (DDP over gloo), each with "
                       "a copy of the model")  # fmt: skip
    assert said[1].startswith("--size 48M --batch-size 256 on CPU (2 processes): estimated "
                              "peak memory ")  # fmt: skip
    assert said[1].endswith("; 48M is meant for GPUs") and len(said) == 2


def test_the_memory_estimate_is_near_the_measured_peaks():
    """Bench rows: peak RSS of ``tdmpc2-pretrain --max-steps 3`` on a CPU (KiB, /usr/bin/time)
    and the 317M run of issue #26 (12.3 GB, bf16-mixed, mt80 table)."""
    from tdmpc2_data.tasks import TASK_SETS
    from tdmpc2_model.core.config import TDMPC2Config
    from tdmpc2_model.core.memory import estimate_pretrain_bytes

    table = ["mw-reach", "cartpole-balance", "mw-door-open"]
    rows = [("1M", 256, "32-true", table, 601148 * 1024), ("1M", 1024, "32-true", table, 912164 * 1024),
            ("5M", 256, "32-true", table, 788284 * 1024), ("5M", 1024, "32-true", table, 1392052 * 1024),
            ("19M", 512, "32-true", table, 1671892 * 1024),
            ("317M", 1024, "bf16-mixed", TASK_SETS["mt80"], 12.3e9)]  # fmt: skip
    for size, batch, precision, tasks, measured in rows:
        estimate = estimate_pretrain_bytes(
            TDMPC2Config(size=size, tasks=tasks), batch, 3, precision
        )
        assert abs(estimate / measured - 1) < 0.05, (size, batch, estimate, measured)
