"""Online RL: `tdmpc2-train` on a real Meta-World task writes a verifiable shard replay buffer
and loadable checkpoints, resumes where it stopped, evaluates; the replay buffer serves exact,
uniform windows; checkpoints act as `tdmpc2-data collect` policies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from checkout import ROOT
from quick_runs import SMALL

from tdmpc2_data import Batch, open_dataset
from tdmpc2_data.format import verify_dataset
from tdmpc2_model import TDMPC2, TDMPC2Config
from tdmpc2_model.apps.cli import eval_main, finetune_main, pretrain_main, train_main
from tdmpc2_model.evaluation.episodes import OnlineError, check_task, evaluate
from tdmpc2_model.formats.run_checkpoint import latest_checkpoint
from tdmpc2_model.outputs.loggers import read_metrics
from tdmpc2_model.training.replay import ReplayBuffer

TASK = "mw-reach"  # 100-step episodes: the cheapest real task


def steps(points: list[tuple[int, float]]) -> list[int]:
    return [s for s, _ in points]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """200 steps of `tdmpc2-train` with 100 seed steps (two episodes)."""
    out = tmp_path_factory.mktemp("train") / "run"
    argv = ["--task", TASK, "--size", "1M", "--steps", "200", "--seed-steps", "100",
            "--eval-episodes", "1", "--eval-at-start", "--checkpoint-every", "100",
            "--out", str(out), "--logger", "tensorboard", *SMALL]  # fmt: skip
    assert train_main(argv) == 0
    return out


def test_the_run_logs_to_tensorboard_and_plots(run, tmp_path):
    from run_logs import png_size, read_csv, tensorboard_scalars

    from tdmpc2_model.apps.plot_cli import main as plot_main

    first = json.loads((run / "run_config.json").read_text())["runs"][0]
    assert first["command"] == "tdmpc2-train" and first["settings"]["task"] == TASK
    assert first["settings"]["config"]["num_samples"] == 32 and "--logger" in first["argv"]
    assert first["device"] == "cpu" and first["seed_steps"] == 100 and first["torch_threads"] >= 1
    assert first["versions"]["torch"] == torch.__version__
    # one CSV of numbers, as pretraining's: a row per episode and per evaluation
    logs = run / "logs" / "version_0"
    raw = read_csv(logs / "metrics.csv")
    assert sorted(p.name for p in (run / "logs").iterdir()) == ["version_0"]
    assert not (run / "metrics.jsonl").exists()
    assert {"step", "train/episode", "train/episode_return", "train/episode_success",
            "train/updates", "train/elapsed_s", "train/total_loss", "train/pi_loss",
            "eval/episodes", "eval/mean_return", "eval/success_rate"} <= set(raw[0])  # fmt: skip
    assert not [k for k in raw[0] if k.startswith("eval/task") or k.endswith("/kind")]
    assert all(v == "" or np.isfinite(float(v)) for r in raw for v in r.values())
    train = [r for r in raw if r["train/episode"]]
    evals = [r for r in raw if r["eval/mean_return"]]
    assert [(r["step"], r["train/episode"]) for r in train] == [("100", "1"), ("200", "2")]
    assert {r["train/episode_success"] for r in train} <= {"0", "1"}  # booleans as 0/1
    assert [r["step"] for r in evals] == ["0", "200"]  # the start and the end
    assert not any(r["train/episode"] for r in evals)  # an evaluation is a row of its own
    # TensorBoard beside it holds the same numbers, column for column
    metrics = read_metrics(run)
    board = tensorboard_scalars(run / "logs")
    assert list(logs.glob("events.out.tfevents.*")) and board.keys() == metrics.keys()
    for column, points in metrics.items():
        assert board[column] == [(s, pytest.approx(v)) for s, v in points], column
    assert metrics["train/episode_return"] == [
        (int(r["step"]), float(r["train/episode_return"])) for r in train
    ]
    out = tmp_path / "curve.png"
    assert plot_main(["curves", str(run), "--out", str(out)]) == 0  # the task from run.json
    assert png_size(out) == (800, 500)
    ours = [r for r in read_csv(out.with_suffix(".csv")) if r["curve"] == "run"]
    assert [(int(r["step"]), float(r["mean"])) for r in ours] == [
        (int(r["step"]), pytest.approx(float(r["eval/success_rate"]))) for r in evals
    ]
    assert plot_main(["losses", str(run), "--out", str(tmp_path / "losses.png")]) == 0
    losses = read_csv(tmp_path / "losses.csv")
    total = [(float(r["step"]), float(r["value"])) for r in losses if r["loss"] == "total_loss"]
    updated = [r for r in train if r["train/updates"] != "0"]  # the first episode: no update
    assert total == [(int(r["step"]), pytest.approx(float(r["train/total_loss"])))
                     for r in updated] and total  # fmt: skip
    assert {"consistency_loss", "reward_loss", "value_loss", "pi_loss"} <= {
        r["loss"] for r in losses
    }


def test_train_writes_a_verified_shard_buffer_and_checkpoints(run):
    report = verify_dataset(run / "buffer")
    assert report.ok, report
    ds = open_dataset(run / "buffer")
    assert ds.tasks == [TASK] and ds.num_episodes == 2 and ds.num_transitions == 200
    meta = ds.episode_metadata(0)  # provenance: the run's source and its episode numbers
    assert meta["source"].tolist() == [0, 0] and meta["source_index"].tolist() == [0, 1]
    assert "episode_success" in meta
    agent = TDMPC2.from_pretrained(run / "final")
    assert agent.cfg.task_names == [TASK] and agent.cfg.size == "1M"
    assert agent.cfg.num_samples == 32  # the run's settings travel with the checkpoint
    assert latest_checkpoint(run).name == "step-000000200"
    metrics = read_metrics(run)
    assert steps(metrics["train/episode"]) == [100, 200]
    # 100 updates when the seed phase ends, then one per step: as many as steps
    assert sum(v for _, v in metrics["train/updates"]) == 200
    assert np.isfinite(metrics["train/total_loss"][-1][1])
    assert steps(metrics["train/episode_success"]) == [100, 200]
    assert metrics["eval/mean_return"][-1][0] == 200 and np.isfinite(
        metrics["eval/mean_return"][-1][1]
    )
    fresh = TDMPC2(agent.cfg)
    assert not torch.equal(fresh.model._pi[0].weight, agent.model._pi[0].weight)


def test_resume_continues_the_step_count_and_refuses_to_overwrite(run, capsys):
    before = (run / "buffer" / "zarr.json").read_text()
    assert train_main(["--task", TASK, "--steps", "300", "--out", str(run), *SMALL]) == 2
    assert "already holds an online run" in capsys.readouterr().err
    assert (run / "buffer" / "zarr.json").read_text() == before  # nothing touched
    argv = ["--task", TASK, "--steps", "300", "--eval-episodes", "0", "--out", str(run),
            "--resume", "--keep-checkpoints", "0", *SMALL]  # fmt: skip
    assert train_main(argv) == 0
    said = capsys.readouterr().out
    assert f"resuming {run} at step 200 (2 episodes" in said and "step-000000200" in said
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == ["step-000000100", "step-000000200", "step-000000300"]  # 0: keep all
    metrics = read_metrics(run)  # both invocations' logs, in order
    assert sorted(p.name for p in (run / "logs").iterdir()) == ["version_0", "version_1"]
    assert steps(metrics["train/episode"]) == [100, 200, 300]
    assert metrics["train/updates"][-1] == (300, 100)
    assert open_dataset(run / "buffer").num_transitions == 300
    ds = open_dataset(run / "buffer")
    index = np.concatenate([ds.episode_metadata(i)["source_index"] for i in range(len(ds.shards))])
    assert sorted(index.tolist()) == [0, 1, 2]  # the resumed run numbers on
    assert latest_checkpoint(run).name == "step-000000300"
    state = torch.load(latest_checkpoint(run) / "trainer_state.pt", weights_only=True)
    assert state["step"] == 300 and state["optim"]["state"]  # Adam moments were saved


def test_eval_returns_numbers_and_json(run, tmp_path, capsys):
    agent = TDMPC2.from_pretrained(run / "final")
    result = evaluate(agent, TASK, episodes=2, seed=3, progress=False)
    assert len(result.episodes) == 2 and np.isfinite(result.mean_return)
    assert 0.0 <= result.success_rate <= 1.0
    assert all(e["length"] == 100 for e in result.episodes)
    again = evaluate(agent, TASK, episodes=2, seed=3, progress=False)
    assert result.episodes[0]["return"] != again.episodes[1]["return"]  # episodes differ
    path = tmp_path / "eval.json"
    argv = ["--checkpoint", str(run / "final"), "--task", "reach", "--episodes", "1",
            "--json", str(path)]  # fmt: skip
    assert eval_main(argv) == 2  # ambiguous short name: a clear error
    assert "mw-reach" in capsys.readouterr().err
    argv[3] = TASK
    assert eval_main(argv) == 0
    saved = json.loads(path.read_text())
    assert saved["task"] == TASK and len(saved["rows"]) == 1
    assert "mean return" in capsys.readouterr().out


def test_checkpoint_is_a_collect_policy(run, tmp_path):
    from tdmpc2_data.collect import collect

    collect(tmp_path / "rollouts", [TASK], episodes=1, policy=str(run / "final"))
    ds = open_dataset(tmp_path / "rollouts")
    assert ds.num_episodes == 1 and ds.num_transitions == 100


@pytest.mark.parametrize("main", [eval_main, train_main, finetune_main])
def test_a_single_task_flag_given_twice_is_refused(main, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*(["--checkpoint", "x"] if main is not train_main else []),
              "--task", "mw-reach", "--task", "mw-push"])  # fmt: skip
    assert exc.value.code == 2
    assert "--task given twice (for several, use --tasks a,b)" in capsys.readouterr().err


def test_print_config_shows_the_resolved_settings_and_runs_nothing(tmp_path, capsys):
    import yaml

    out = tmp_path / "never"
    argv = [
        "--recipe",
        "train-walker-walk",
        "--task",
        TASK,
        "--out",
        str(out),
        "--print-config",
        *SMALL,
    ]
    with pytest.raises(SystemExit) as exc:
        train_main(argv)
    assert exc.value.code == 0 and not out.exists()
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["command"] == "tdmpc2-train" and shown["argv"] == argv
    assert shown["settings"]["out"] == str(out) and shown["settings"]["config"]["iterations"] == 1
    assert shown["settings"]["seed"] == 0 and shown["versions"]["mujoco"]


def test_task_checks_name_the_problem():
    single = TDMPC2(TDMPC2Config(size="1M", tasks="walker-walk"))
    with pytest.raises(OnlineError, match="trained on 'walker-walk', not 'mw-reach'"):
        check_task(single, "mw-reach")
    multi = TDMPC2(TDMPC2Config(size="1M", tasks=["walker-walk", "mw-reach"]))
    assert check_task(multi, "mw-reach").name == "mw-reach"
    with pytest.raises(OnlineError, match="not in this model's task table.*held-out"):
        check_task(multi, "mw-door-open")


def test_replay_buffer_windows_are_exact_slices_and_uniform():
    length, horizon = 5, 3
    buffer = ReplayBuffer(capacity=3 * length, episode_length=length, obs_dim=2, action_dim=1)
    for e in range(4):  # the 4th episode replaces the 1st (capacity: 3 episodes)
        t = np.arange(length + 1, dtype=np.float32)
        obs = np.stack([np.full(length + 1, e, np.float32), t], 1)
        buffer.add(obs, (e * 100 + t[:-1])[:, None], e * 100 + t[:-1] + 0.5)
    assert buffer.episodes == 3 and buffer.num_transitions == 15
    batch = buffer.sample(4000, horizon)
    obs, action, reward = batch.obs, batch.action, batch.reward
    assert obs.shape == (horizon + 1, 4000, 2) and action.shape == (horizon, 4000, 1)
    assert isinstance(batch, Batch) and batch.task.eq(0).all()
    episode, start = obs[0, :, 0], obs[0, :, 1]
    assert set(episode.unique().tolist()) == {1.0, 2.0, 3.0}
    steps = torch.arange(horizon + 1)[:, None]
    assert torch.equal(obs[:, :, 0], episode.expand(horizon + 1, -1))  # one episode per window
    assert torch.equal(obs[:, :, 1], start + steps)  # consecutive steps
    assert torch.equal(action[:, :, 0], episode * 100 + start + steps[:-1])  # a[t]: o[t] -> o[t+1]
    assert torch.equal(reward, episode * 100 + start + steps[:-1] + 0.5)
    counts = np.bincount((episode * 10 + start).long().numpy(), minlength=40)
    counts = counts[counts > 0]
    assert len(counts) == 3 * (length - horizon + 1)  # every valid window is drawn ...
    assert counts.min() > 0.6 * counts.mean()  # ... about equally often
    with pytest.raises(ValueError, match="horizon=6 is longer"):
        buffer.sample(2, 6)


@pytest.mark.parametrize("main", [pretrain_main, finetune_main, train_main, eval_main])
def test_help_shows_examples(main, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "--recipe" in out


def test_recipe_values_are_defaults_that_flags_override(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: mw-reach\nsize: 1M\nsteps: 50\nconfig: {num_samples: 100}\n")
    out = ["--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit, match="2"):  # refused by the parser, up front
        train_main(["--recipe", str(recipe), "--steps", "0", *out])
    assert "--steps 0: must be >= 1" in capsys.readouterr().err  # the flag beat the recipe
    assert train_main(["--recipe", str(recipe), "--config", "num_elites=999", *out]) == 2
    assert "num_elites=999; must be <= num_samples=100" in capsys.readouterr().err
    recipe.write_text("task: mw-reach\nstepz: 10\n")
    with pytest.raises(SystemExit):
        train_main(["--recipe", str(recipe)])
    assert "unknown key(s) ['stepz']" in capsys.readouterr().err


RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_every_recipe_parses_with_its_command(recipe):
    from tdmpc2_model.apps import cli
    from tdmpc2_model.apps.cli import load_recipe

    if recipe.stem == "quickstart":
        assert set(load_recipe(recipe)) >= {"collect", "pretrain", "finetune", "eval"}
        return
    command = recipe.stem.split("-")[0]
    parser = getattr(cli, f"{command}_parser")()
    args, _ = cli._parse(parser, ["--recipe", str(recipe)])
    assert args.out.startswith("runs/")
    if command == "pretrain":
        TDMPC2Config(size=args.size, tasks=args.data, **args.config)  # a valid model


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


def test_resume_after_a_checkpoint_inside_a_short_seed_phase_equals_an_uninterrupted_run(
    tmp_path,
):
    """Seed phase (50 steps) shorter than an episode (100): the 50 seed updates are owed at
    the first checkpoint; a run stopped there and resumed makes them, and ends with the
    weights of the run that was never stopped."""
    common = ["--task", TASK, "--size", "1M", "--seed-steps", "50", "--eval-episodes", "0",
              "--checkpoint-every", "100", "--keep-checkpoints", "0", *SMALL]  # fmt: skip
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert train_main([*common, "--steps", "200", "--out", str(whole)]) == 0
    assert train_main([*common, "--steps", "100", "--out", str(parts)]) == 0  # then stopped
    state = torch.load(parts / "checkpoints/step-000000100/trainer_state.pt", weights_only=True)
    assert state["updates"] == 100  # the 50 seed updates and one per step since
    assert train_main([*common, "--steps", "200", "--out", str(parts), "--resume"]) == 0
    counts = [sum(v for _, v in read_metrics(out)["train/updates"]) for out in (whole, parts)]
    assert counts == [200, 200]
    a, b = _weights(whole / "final"), _weights(parts / "final")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def test_a_nan_weight_stops_online_training_naming_the_update_and_the_loss(tmp_path, capsys):
    """A NaN in the reward head: the first update's reward loss is NaN; the run stops there
    (no checkpoint of NaN weights), and the CLI says so in one line."""
    from tdmpc2_model.core.update import NonFiniteLossError
    from tdmpc2_model.training.online import train
    from tdmpc2_model.training.settings import OnlineConfig

    agent = TDMPC2(TDMPC2Config(size="1M", tasks=TASK, batch_size=32, num_samples=32,
                                num_elites=4, num_pi_trajs=4, iterations=1))  # fmt: skip
    with torch.no_grad():
        agent.model._reward[2].weight[0, 0] = float("nan")
    out = tmp_path / "run"
    with pytest.raises(
        NonFiniteLossError, match=r"^update 1: non-finite reward_loss, pi_loss; training"
    ):
        settings = OnlineConfig(task=TASK, out=str(out), steps=200, seed_steps=50, eval_episodes=0)
        train(agent, settings, progress=False)
    assert latest_checkpoint(out) is None and not (out / "final").exists()
    assert open_dataset(out / "buffer").num_episodes == 1  # the data is kept


@pytest.mark.parametrize(
    "checkpoint_every, killed_after, replayed",
    [(200, "000002", 1), (1000, "000001", 2)],
    ids=["episodes-after-the-checkpoint", "no-checkpoint-yet"],
)
def test_sigkill_anywhere_then_resume_ends_with_the_uninterrupted_weights(
    tmp_path, capsys, checkpoint_every, killed_after, replayed
):
    """Killed once the buffer holds an episode the newest checkpoint has not seen (or before
    any checkpoint): the resumed run redoes those episodes' updates without planning them
    again, and its weights and buffer equal those of the run that was never stopped."""
    from killing import kill_when

    common = ["--task", TASK, "--size", "1M", "--seed-steps", "50", "--eval-episodes", "0",
              "--checkpoint-every", str(checkpoint_every), "--steps", "400", *SMALL]  # fmt: skip
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert train_main([*common, "--out", str(whole)]) == 0
    kill_when("train_main", [*common, "--out", str(parts)], parts / "buffer/shards" / killed_after)
    assert not (parts / "final").exists()
    capsys.readouterr()
    assert train_main([*common, "--out", str(parts), "--resume"]) == 0
    said = capsys.readouterr().out
    assert f"redid the updates of the {replayed} episodes stored after it" in said, said
    a, b = _weights(whole / "final"), _weights(parts / "final")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    stored = [open_dataset(out / "buffer").read_shard(0)["obs"] for out in (whole, parts)]
    assert stored[0].shape == stored[1].shape == (4, 101, 39)
    assert np.array_equal(*stored)  # the same episodes, none twice
    # the killed run's rows (a readable CSV) and the resumed run's, each step once
    logged = steps(read_metrics(parts)["train/episode"])
    assert logged[0] == 100 and logged[-1] == 400 and logged == sorted(set(logged)), logged
    assert sorted(p.name for p in (parts / "logs").iterdir()) == ["version_0", "version_1"]


def test_push_to_hub_uploads_the_final_model_with_run_and_evaluation(hub, tmp_path, capsys):
    repo = f"{hub.user}/reach-run"
    bad = ["--task", TASK, "--steps", "100", "--out", str(tmp_path / "x"), "--push-to-hub", "a/b/c"]
    assert train_main(bad) == 2 and "--push-to-hub a/b/c" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before the run
    out = tmp_path / "run"
    argv = ["--task", TASK, "--steps", "100", "--seed-steps", "100", "--eval-every", "0",
            "--eval-episodes", "1", "--out", str(out), "--push-to-hub", repo, *SMALL]  # fmt: skip
    assert train_main(argv) == 0
    assert f"pushed {out / 'final'} to {repo}" in capsys.readouterr().out
    pushed = TDMPC2.from_pretrained(repo)
    local = TDMPC2.from_pretrained(out / "final")
    for key, value in local.model.state_dict().items():
        assert torch.equal(value, pushed.model.state_dict()[key]), key
    card = Path(hub.api().hf_hub_download(repo, "README.md")).read_text()
    _, mean_return = read_metrics(out)["eval/mean_return"][-1]
    assert "## Evaluation" in card and f"{mean_return:.2f}" in card
    assert '"push_to_hub"' not in card and f'"out": "{out}"' in card and '"torch"' in card
    scores = {r.metric_type: r for r in hub.api().model_info(repo).card_data.eval_results}
    assert scores["mean_reward"].dataset_type == TASK  # the Hub's model-index, parsed
    assert scores["mean_reward"].metric_value == pytest.approx(mean_return)


def test_online_commands_use_one_thread_unless_told(tmp_path, monkeypatch):
    """Spinning OpenMP threads made a run 20x slower next to a busy process
    (bench/contention.py): one torch thread by default, --threads or OMP_NUM_THREADS else."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        for extra, expected in (([], 1), (["--threads", "2"], 2)):
            out = tmp_path / f"run{expected}"
            argv = ["--task", TASK, "--size", "1M", "--steps", "100", "--seed-steps", "100",
                    "--eval-episodes", "0", "--out", str(out), *extra, *SMALL]  # fmt: skip
            assert train_main(argv) == 0
            record = json.loads((out / "run_config.json").read_text())["runs"][0]
            assert record["torch_threads"] == expected
    finally:
        torch.set_num_threads(before)


def test_a_resumed_runs_state_equals_the_uninterrupted_runs_at_the_same_step(tmp_path, request):
    """A run whose newest checkpoint (step 200) is lost resumes from step 100: it restores the
    checkpoint's counters and buffer, redoes the stored second episode's updates, and its
    `OnlineState` at step 200 equals the uninterrupted run's."""
    import shutil

    from tdmpc2_model.training.online import train
    from tdmpc2_model.training.settings import OnlineConfig

    def agent() -> TDMPC2:  # the same initial weights each time
        torch.manual_seed(0)
        return TDMPC2(TDMPC2Config(size="1M", tasks=TASK, batch_size=32, num_samples=32,
                                   num_elites=4, num_pi_trajs=4, iterations=1))  # fmt: skip

    def settings(out: Path, resume: bool = False) -> OnlineConfig:
        return OnlineConfig(task=TASK, out=str(out), steps=200, seed_steps=50, eval_episodes=0,
                            checkpoint_every=100, keep_checkpoints=0, resume=resume)  # fmt: skip

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CLI does: spinning threads crawl on a busy machine
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    whole = train(agent(), settings(tmp_path / "whole"), progress=False).state
    parts = tmp_path / "parts"
    train(agent(), settings(parts), progress=False)
    shutil.rmtree(parts / "checkpoints/step-000000200")  # as if killed before writing it
    shutil.rmtree(parts / "final")
    resumed = train(agent(), settings(parts, resume=True), progress=False).state
    counters = [(s.step, s.episode, s.updates, s.buffer.added) for s in (whole, resumed)]
    assert counters[0] == counters[1] == (200, 2, 200, 2) and whole.losses == resumed.losses == []
    for name in ("obs", "action", "reward"):
        assert torch.equal(getattr(whole.buffer, name), getattr(resumed.buffer, name)), name
    a, b = _weights(tmp_path / "whole/final"), _weights(parts / "final")
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
