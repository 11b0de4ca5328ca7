"""Evaluating one model over a task set in the real simulators: the paper's normalized score,
eval.json / eval.csv, worker processes that give the same numbers as one process, a rerun that
skips finished tasks, and `tdmpc2-eval --tasks`."""

import csv
import dataclasses
import json
import shutil
import signal

import pytest
import torch

from tdmpc2_model import TDMPC2, TDMPC2Config, evaluate_tasks
from tdmpc2_model.apps.cli import eval_main
from tdmpc2_model.evaluation.taskset import model_fingerprint, normalized_score

#: two Meta-World tasks (100 steps, success flags) and a DMControl one (returns in [0, 1000])
TASKS = ["mw-reach", "mw-button-press", "pendulum-swingup"]
SCHEMA = {"checkpoint", "params", "seed", "episodes", "config", "versions", "tasks",
          "mean_normalized_score"}  # fmt: skip
ROW = ["task", "domain", "episodes", "mean_return", "success_rate", "normalized_score"]


def tiny_agent() -> TDMPC2:
    """A small multitask model with perturbed weights (a fresh model's heads are zero, so
    every plan would tie) and cheap planning that still draws random numbers."""
    torch.manual_seed(0)
    cfg = TDMPC2Config(size=None, tasks=TASKS, enc_dim=32, mlp_dim=32, latent_dim=16,
                       num_enc_layers=1, num_q=2, task_dim=8, num_samples=16, num_elites=4,
                       num_pi_trajs=2, iterations=1)  # fmt: skip
    agent = TDMPC2(cfg)
    with torch.no_grad():
        for p in agent.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return agent


@pytest.fixture(scope="module")
def agent():
    return tiny_agent()


@pytest.fixture(scope="module")
def serial(agent, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    return out, evaluate_tasks(agent, TASKS, episodes=2, workers=1, seed=3, out=out,
                               progress=False)  # fmt: skip


def test_normalized_score_follows_the_paper():
    assert normalized_score("dmcontrol", 750.0, None) == 75.0
    for domain in ("metaworld", "maniskill", "myosuite"):
        assert normalized_score(domain, 12.0, 0.4) == pytest.approx(40.0)
    with pytest.raises(ValueError, match="success rate"):
        normalized_score("metaworld", 12.0, None)


def test_results_files_and_scores(serial):
    out, result = serial
    saved = json.loads((out / "eval.json").read_text())
    assert set(saved) == SCHEMA and saved == json.loads(json.dumps(result.to_dict()))
    assert [t["task"] for t in saved["tasks"]] == TASKS
    assert saved["params"] == result.params > 0 and saved["episodes"] == 2
    assert saved["config"]["tasks"] == TASKS and saved["versions"]["torch"]
    rows = {t["task"]: t for t in saved["tasks"]}
    assert set(rows["mw-reach"]) == set(ROW)
    assert rows["pendulum-swingup"]["success_rate"] is None
    assert rows["pendulum-swingup"]["normalized_score"] == pytest.approx(
        rows["pendulum-swingup"]["mean_return"] / 10
    )
    assert rows["mw-reach"]["normalized_score"] == pytest.approx(
        100 * rows["mw-reach"]["success_rate"]
    )
    assert rows["mw-reach"]["mean_return"] > 0  # Meta-World rewards are positive
    scores = [t["normalized_score"] for t in saved["tasks"]]
    assert saved["mean_normalized_score"] == pytest.approx(sum(scores) / 3)
    with open(out / "eval.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["task"] for r in table] == TASKS and list(table[0]) == ROW
    assert float(table[2]["mean_return"]) == pytest.approx(rows["pendulum-swingup"]["mean_return"])
    assert sorted(p.name for p in (out / "tasks").iterdir()) == sorted(f"{t}.json" for t in TASKS)


def test_workers_give_the_same_results(agent, serial, tmp_path):
    _, one = serial
    two = evaluate_tasks(agent, TASKS, episodes=2, workers=2, seed=3, out=tmp_path,
                         progress=False)  # fmt: skip
    assert two.tasks == one.tasks
    other_seed = evaluate_tasks(agent, TASKS[:1], episodes=2, workers=1, seed=4, progress=False)
    assert other_seed.tasks[0].mean_return != one.tasks[0].mean_return


def test_a_rerun_skips_finished_tasks(agent, serial, tmp_path):
    out, first = serial
    run = tmp_path / "run"
    (run / "tasks").mkdir(parents=True)
    kept = json.loads((out / "tasks" / "mw-reach.json").read_text())
    kept["mean_return"] = 12345.0  # a value no real episode gives: shows it was not rerun
    (run / "tasks" / "mw-reach.json").write_text(json.dumps(kept))
    again = evaluate_tasks(agent, TASKS, episodes=2, workers=1, seed=3, out=run, progress=False)
    assert again.tasks[0].mean_return == 12345.0
    assert again.tasks[1:] == first.tasks[1:]  # the others ran, as before
    # other episodes or seed: the stored result does not count
    fewer = evaluate_tasks(agent, TASKS[:1], episodes=1, workers=1, seed=3, out=run,
                           progress=False)  # fmt: skip
    assert fewer.tasks[0].mean_return != 12345.0


def test_a_rerun_with_another_model_evaluates_again(agent, serial, tmp_path, capsys):
    """The same --out with other weights or planner settings: nothing stored is reused
    (before, another checkpoint's per-task results were kept and reported as this one's)."""
    out, first = serial
    run = tmp_path / "run"
    shutil.copytree(out, run)
    other = TDMPC2(dataclasses.replace(agent.cfg, iterations=agent.cfg.iterations + 1))
    other.model.load_state_dict(agent.model.state_dict())
    capsys.readouterr()
    again = evaluate_tasks(other, TASKS, episodes=2, workers=1, seed=3, out=run, progress=False)
    assert f"{len(TASKS)} stored result(s) of another model" in capsys.readouterr().out
    assert again.tasks != first.tasks
    stored = json.loads((run / "tasks" / "mw-reach.json").read_text())
    assert stored["model"] == model_fingerprint(other) != model_fingerprint(agent)


def test_cli_evaluates_a_task_set(agent, tmp_path, capsys):
    ckpt = tmp_path / "model"
    agent.save_pretrained(ckpt)
    out = tmp_path / "ev"
    argv = ["--checkpoint", str(ckpt), "--tasks", "mw-reach,pendulum-swingup", "--episodes",
            "1", "--workers", "1", "--out", str(out)]  # fmt: skip
    assert eval_main(argv) == 0
    printed = capsys.readouterr().out
    assert "mean normalized score over 2 tasks" in printed
    saved = json.loads((out / "eval.json").read_text())
    assert saved["checkpoint"] == str(ckpt) and len(saved["tasks"]) == 2


def test_cli_rejects_bad_input_before_evaluating(agent, tmp_path, capsys):
    ckpt = tmp_path / "model"
    agent.save_pretrained(ckpt)
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    argv = ["--checkpoint", str(ckpt), "--tasks", "mw-reach", "--out", str(blocked)]
    assert eval_main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and str(blocked) in err and "Traceback" not in err
    assert blocked.read_text() == "not a directory"
    argv = ["--checkpoint", str(ckpt), "--tasks", "mw-reach,walker-walk", "--out", str(tmp_path)]
    assert eval_main(argv) == 2
    assert "walker-walk" in capsys.readouterr().err  # not in this model's task table
    with pytest.raises(SystemExit):
        eval_main(["--checkpoint", str(ckpt), "--task", "mw-reach", "--tasks", "mt80"])
    with pytest.raises(SystemExit):
        eval_main(["--checkpoint", str(ckpt), "--tasks", "mt80"])  # no --out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_task_set_evaluation_ends_its_workers_and_keeps_results(agent, tmp_path, sig):
    """SIGTERM (before: the command died silently and its two workers ran on, then hung
    forever) and Ctrl-C alike: the command ends within seconds, no worker outlives it,
    the finished tasks' results stay in --out and the last line says so."""
    from killing import signal_when

    ckpt = agent.save_pretrained(tmp_path / "model")
    out = tmp_path / "ev"
    argv = ["--checkpoint", str(ckpt), "--tasks", ",".join(TASKS), "--episodes", "1",
            "--workers", "2", "--out", str(out)]  # fmt: skip
    stopped = signal_when("eval_main", argv, lambda: any(out.glob("tasks/*.json")), sig)
    assert stopped.seconds < 10 and stopped.survivors == []
    kept = sorted(out.glob("tasks/*.json"))
    assert 1 <= len(kept) < len(TASKS)
    assert all(json.loads(p.read_text())["episodes"] == 1 for p in kept)
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr, stopped.stderr[-2000:]
    assert stopped.stderr.splitlines()[-1] == (
        f"tdmpc2-eval: interrupted; the results of {len(kept)} of 3 tasks are kept in "
        f"{out / 'tasks'}; the same command run again reuses them and evaluates the rest."
    )


def test_pretraining_evaluates_into_the_run_logs(tmp_path):
    from tdmpc2_data.collect import collect
    from tdmpc2_model.training.pretrain import pretrain
    from tdmpc2_model.training.settings import PretrainConfig

    data = collect(tmp_path / "data", ["mw-reach"], episodes=2, seed=0,
                   task_set=["mw-reach", "mw-push"])  # fmt: skip
    small = dict(num_samples=16, num_elites=4, num_pi_trajs=2, iterations=1)
    settings = PretrainConfig(data=str(data), out=str(tmp_path / "run"), size="1M", max_steps=4,
                              batch_size=16, devices=1, accelerator="cpu", num_workers=0,
                              log_every=1, config=small, eval_every=2, eval_tasks="mw-reach",
                              eval_episodes=1)  # fmt: skip
    pretrain(settings, progress=False)
    with open(next((tmp_path / "run" / "logs").rglob("metrics.csv")), newline="") as f:
        rows = list(csv.DictReader(f))
    evals = [r for r in rows if r.get("eval/mean_normalized_score")]
    assert [int(r["step"]) for r in evals] == [2, 4]
    assert all(float(r["eval/mw-reach/return"]) > 0 for r in evals)
    assert all(0 <= float(r["eval/mw-reach/score"]) <= 100 for r in evals)
    assert any(r.get("train/total_loss") for r in rows)  # the same CSV as the losses
    with pytest.raises(ValueError, match="walker-walk"):  # checked before any training
        other = dataclasses.replace(settings, out=str(tmp_path / "other"), eval_tasks="walker-walk")
        pretrain(other, progress=False)
    assert not (tmp_path / "other" / "lightning").exists()
