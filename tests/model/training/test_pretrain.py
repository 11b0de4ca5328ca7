"""Lightning pretraining: real Trainer runs on a dataset collected from real simulators; the
module's update is `TDMPC2.update` to the bit; resume continues the Lightning checkpoint;
the pretrained model finetunes online on a task held out of the data."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from quick_runs import SMALL

from tdmpc2_data import open_dataset
from tdmpc2_data.collect import collect
from tdmpc2_data.loader import WindowSampler
from tdmpc2_model import TDMPC2, TDMPC2Config
from tdmpc2_model.apps.cli import eval_main, finetune_main, pretrain_main
from tdmpc2_model.formats.run_checkpoint import latest_checkpoint
from tdmpc2_model.outputs.loggers import read_metrics
from tdmpc2_model.training.pretrain import TDMPC2Module

TABLE = ["mw-reach", "mw-push", "mw-door-open"]  # mw-door-open: in the table, no data


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "mw"
    return collect(root, TABLE[:2], episodes=3, seed=0, task_set=TABLE)


def pretrain_args(data: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return ["--size", "1M", "--data", str(data), "--max-steps", str(steps), "--batch-size", "32",
            "--out", str(out), "--accelerator", "cpu", "--devices", "1", "--num-workers", "0",
            "--log-every", "5", *extra]  # fmt: skip


def global_step(out: Path) -> int:
    return torch.load(out / "lightning" / "last.ckpt", weights_only=False)["global_step"]


@pytest.fixture(scope="module")
def pretrained(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain") / "run"
    assert pretrain_main(pretrain_args(dataset, out, 20, "--logger", "csv,tensorboard")) == 0
    return out


def test_pretrain_writes_a_model_of_the_datasets_table(pretrained, dataset):
    agent = TDMPC2.from_pretrained(pretrained / "final")
    ds = open_dataset(dataset)
    assert agent.cfg.task_names == ds.tasks == TABLE and agent.cfg.multitask
    assert (agent.cfg.obs_dim, agent.cfg.action_dim) == (ds.obs_dim, ds.action_dim)
    assert agent.cfg.batch_size == 32 and agent.cfg.size == "1M"
    fresh = TDMPC2(agent.cfg)
    assert not torch.equal(fresh.model._encoder["state"][0].weight,
                           agent.model._encoder["state"][0].weight)  # fmt: skip
    assert global_step(pretrained) == 20  # one Lightning step per update
    rows = list(csv.DictReader(open(next((pretrained / "logs").rglob("metrics.csv")))))
    losses = [float(r["train/total_loss"]) for r in rows if r.get("train/total_loss")]
    assert len(losses) == 4 and all(np.isfinite(losses))


def test_pretraining_logs_to_tensorboard_and_plots_losses_and_embeddings(pretrained, tmp_path):
    from run_logs import png_size, read_csv, tensorboard_scalars

    from tdmpc2_model.apps.plot_cli import main as plot_main

    logged = list(csv.DictReader(open(pretrained / "logs" / "version_0" / "metrics.csv")))
    logged = [(int(r["step"]), float(r["train/total_loss"])) for r in logged
              if r.get("train/total_loss")]  # fmt: skip
    board = tensorboard_scalars(pretrained / "logs" / "version_0")
    assert [(s, pytest.approx(v)) for s, v in board["train/total_loss"]] == logged
    assert plot_main(["losses", str(pretrained), "--out", str(tmp_path / "losses.png")]) == 0
    assert png_size(tmp_path / "losses.png") == (800, 500)
    plotted = [(int(float(r["step"])), float(r["value"]))
               for r in read_csv(tmp_path / "losses.csv") if r["loss"] == "total_loss"]  # fmt: skip
    assert plotted[: len(logged)] == [(s, pytest.approx(v)) for s, v in logged]
    out = tmp_path / "emb.png"
    argv = ["embeddings", "--checkpoint", str(pretrained / "final"), "--out", str(out)]
    assert plot_main(argv) == 0
    assert [r["task"] for r in read_csv(out.with_suffix(".csv"))] == TABLE


def test_resume_auto_continues_the_lightning_checkpoint(pretrained, dataset, capsys):
    assert pretrain_main(pretrain_args(dataset, pretrained, 25)) == 2  # no --resume
    assert "already holds a pretraining run" in capsys.readouterr().err
    assert global_step(pretrained) == 20
    assert pretrain_main(pretrain_args(dataset, pretrained, 25, "--resume", "auto")) == 0
    assert global_step(pretrained) == 25
    assert pretrain_main(pretrain_args(dataset, pretrained, 27, "--resume")) == 0  # the switch
    assert global_step(pretrained) == 27


def test_the_console_shows_updates_done_of_total_and_no_lightning_noise(pretrained, dataset,
                                                                      tmp_path, hub):  # fmt: skip
    run = tmp_path / "run"
    shutil.copytree(pretrained, run)
    steps = global_step(run) + 3
    repo = f"{hub.user}/pretrained"
    argv = pretrain_args(dataset, run, steps, "--resume", "auto", "--push-to-hub", repo)
    env = {**os.environ, **hub.env, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default",
           "TDMPC2_DISABLE_PROGRESS_BARS": "0"}  # the bar a terminal shows  # fmt: skip
    code = "import sys; from tdmpc2_model.apps.cli import pretrain_main; sys.exit(pretrain_main())"
    done = subprocess.run([sys.executable, "-c", code, *argv],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    said = done.stdout + done.stderr
    assert "pretraining a 1M model" in said and f"for {steps} updates" in said
    assert f"{steps}/{steps}" in said and "update/s" in said and "loss=" in said
    for noise in ("Epoch", "v_num", "Tip:", "LeafSpec", "exists and is not empty", "GPU available",
                  "Trainable params"):  # fmt: skip
        assert noise not in said, noise
    runs = json.loads((run / "run_config.json").read_text())["runs"]
    assert runs[-1]["command"] == "tdmpc2-pretrain" and "--resume" in runs[-1]["argv"]
    assert runs[-1]["device"] == "1 cpu" and runs[-1]["settings"]["max_steps"] == steps
    assert f"pushed {run / 'final'} to {repo}" in said  # and it is that model:
    assert TDMPC2.from_pretrained(repo).cfg.task_names == TABLE


def test_excluded_tasks_stay_in_the_table_and_are_never_trained_on(dataset, tmp_path):
    out = tmp_path / "heldout"
    assert pretrain_main(pretrain_args(dataset, out, 3, "--exclude-tasks", "push")) == 0
    cfg = TDMPC2.from_pretrained(out / "final").cfg
    assert cfg.task_names == TABLE
    ckpt = torch.load(out / "lightning" / "last.ckpt", weights_only=False)
    moments = [s["exp_avg"] for s in ckpt["optimizer_states"][0]["state"].values()]
    emb = next(m for m in moments if m.shape == (len(TABLE), cfg.task_dim))  # task embeddings
    grads_seen = emb.abs().sum(-1)
    assert grads_seen[TABLE.index("mw-reach")] > 0
    assert grads_seen[TABLE.index("mw-push")] == 0 and grads_seen[TABLE.index("mw-door-open")] == 0


def test_pretraining_on_a_hub_dataset_pushes_a_card_naming_it(dataset, hub, tmp_path,
                                                              monkeypatch):  # fmt: skip
    """``--data OWNER/NAME --push-to-hub REPO``: the model card's ``datasets`` metadata (what
    the Hub links the model to) names the Hub dataset it was pretrained on."""
    from tdmpc2_data import hub as hubio

    monkeypatch.setenv("TDMPC2_DATA_HOME", str(tmp_path / "home"))
    data_repo, model_repo = f"{hub.user}/mw-data", f"{hub.user}/mw-model"
    hubio.push(dataset, data_repo)
    out = tmp_path / "run"
    assert pretrain_main(pretrain_args(data_repo, out, 3, "--push-to-hub", model_repo)) == 0
    config = json.loads((out / "final" / "config.json").read_text())
    assert config["provenance"]["datasets"] == [data_repo]
    assert hub.api().model_info(model_repo).card_data["datasets"] == [data_repo]


def test_bf16_mixed_precision_trains(dataset, tmp_path):
    out = tmp_path / "bf16"
    assert pretrain_main(pretrain_args(dataset, out, 5, "--precision", "bf16-mixed")) == 0
    rows = list(csv.DictReader(open(next((out / "logs").rglob("metrics.csv")))))
    assert np.isfinite(float(rows[-1]["train/total_loss"]))
    assert TDMPC2.from_pretrained(out / "final").cfg.task_names == TABLE


def test_bad_input_is_one_line_errors(dataset, tmp_path, capsys):
    assert pretrain_main(pretrain_args(tmp_path / "missing", tmp_path / "o", 5)) == 2
    assert "no such directory" in capsys.readouterr().err
    assert pretrain_main(pretrain_args(dataset, tmp_path / "o", 5, "--precision", "16-mixed")) == 2
    assert "precision='16-mixed'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


class _Reseed(L.Callback):
    """Keeps each batch and restarts the random stream before each of the module's steps."""

    def __init__(self) -> None:
        self.batches = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.batches.append(batch)
        torch.manual_seed(123 + batch_idx)


def test_module_steps_are_the_agents_updates(dataset):
    """Two steps, so that what carries from one update to the next (gradients left by the
    policy loss, optimizer moments, the running scale) must match as well."""
    torch.manual_seed(0)
    agent = TDMPC2(TDMPC2Config(size="1M", tasks=TABLE, batch_size=32))
    module = TDMPC2Module.from_agent(agent)
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    sampler = WindowSampler(dataset, batch_size=32, horizon=3, seed=0, batches_per_epoch=2)
    reseed = _Reseed()
    trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[reseed])  # fmt: skip
    trainer.fit(module, train_dataloaders=sampler)
    assert len(reseed.batches) == 2
    for step, batch in enumerate(reseed.batches):
        torch.manual_seed(123 + step)
        info = agent.update(batch)
    after = module.agent.state_dict()
    for key, value in agent.state_dict().items():  # weights, target Qs, running Q scale
        torch.testing.assert_close(after[key], value, rtol=0, atol=0, msg=key)
    moved = [k for k, v in after.items() if not torch.equal(v, before[k])]
    assert any("_pi" in k for k in moved) and any("_target_Qs" in k for k in moved)
    for key, value in info.items():
        assert trainer.callback_metrics[f"train/{key}"].item() == pytest.approx(value, rel=1e-6)


def test_finetune_the_pretrained_model_on_a_held_out_task(pretrained, tmp_path, capsys):
    out = tmp_path / "ft"
    argv = ["--task", "door-open", "--checkpoint", str(pretrained / "final"), "--steps", "150",
            "--seed-steps", "100", "--eval-every", "100", "--eval-episodes", "1", "--eval-at-start",
            "--out", str(out), *SMALL]  # fmt: skip
    assert finetune_main(argv) == 0
    # the pretrained model's score first, then every 100 steps, then at the end
    assert [s for s, _ in read_metrics(out)["eval/mean_return"]] == [0, 100, 200]
    agent = TDMPC2.from_pretrained(out / "final")
    assert agent.cfg.task_names == TABLE  # the table is kept
    ds = open_dataset(out / "buffer")
    assert ds.tasks == TABLE and ds.task_counts() == {2: 2}  # rollouts in the model's table
    # the run's planner settings (SMALL) are recorded, not saved as the model's defaults
    base = TDMPC2.from_pretrained(pretrained / "final")
    assert (agent.cfg.num_samples, agent.cfg.batch_size) == (base.cfg.num_samples, 32) != (32, 32)
    saved = json.loads((out / "final" / "config.json").read_text())
    assert saved["provenance"]["run_settings"] == {"num_samples": 32, "num_elites": 4,
                                                   "num_pi_trajs": 4, "iterations": 1}  # fmt: skip
    argv_resume = [*argv[: argv.index("--steps") + 1], "250", *argv[argv.index("--steps") + 2 :],
                   "--resume"]  # fmt: skip
    assert finetune_main(argv_resume) == 0  # the resumed run uses its own settings again
    assert [s for s, _ in read_metrics(out)["eval/mean_return"]] == [0, 100, 200, 300]
    step = json.loads((latest_checkpoint(out) / "config.json").read_text())
    assert step["num_samples"] == base.cfg.num_samples
    assert step["provenance"]["run_settings"]["num_samples"] == 32
    argv[1], argv[argv.index("--out") + 1] = "walker-walk", str(tmp_path / "x")
    assert finetune_main(argv) == 2
    assert "not in this model's task table" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_lightning_checkpoints_are_models_for_every_command(pretrained, tmp_path):
    """A pretraining ``.ckpt`` loads with from_pretrained (the same model as OUT/final when it
    is the last one), with Lightning's own load_from_checkpoint, and in tdmpc2-eval/finetune."""
    ckpt = pretrained / "lightning" / "last.ckpt"
    final, agent = TDMPC2.from_pretrained(pretrained / "final"), TDMPC2.from_pretrained(ckpt)
    assert agent.cfg.to_dict() == final.cfg.to_dict()
    for key, value in final.model.state_dict().items():
        assert torch.equal(agent.model.state_dict()[key], value), key
    assert torch.equal(agent.scale.value, final.scale.value)
    assert "offline pretraining" in agent.hub_provenance["training_data"]
    module = TDMPC2Module.load_from_checkpoint(ckpt)
    assert torch.equal(module.agent.model._pi[0].weight, final.model._pi[0].weight)
    report = tmp_path / "eval.json"
    argv = ["--checkpoint", str(ckpt), "--task", "mw-reach", "--episodes", "1", "--json",
            str(report), *SMALL]  # fmt: skip
    assert eval_main(argv) == 0 and json.loads(report.read_text())["episodes"] == 1
    argv = ["--task", "mw-reach", "--checkpoint", str(ckpt), "--steps", "100", "--seed-steps",
            "100", "--eval-episodes", "0", "--out", str(tmp_path / "ft"), *SMALL]  # fmt: skip
    assert finetune_main(argv) == 0
    assert TDMPC2.from_pretrained(tmp_path / "ft" / "final").cfg.task_names == TABLE
    with pytest.raises(ValueError, match="not a tdmpc2-pretrain Lightning checkpoint"):
        torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
        TDMPC2.from_pretrained(tmp_path / "other.ckpt")


def test_ddp_and_fsdp_on_two_cpu_processes_train_the_same_model(dataset, tmp_path):
    """Two ranks (gloo) each: DDP (both backward passes leave parameters unused) and FSDP2
    (sharded parameters, gathered target EMA and export) give the same weights."""
    script = Path(sys.executable).parent / "tdmpc2-pretrain"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    models = []
    for strategy in ("ddp", "fsdp"):
        out = tmp_path / strategy
        argv = pretrain_args(dataset, out, 6, "--strategy", strategy)
        argv[argv.index("--devices") + 1] = "2"
        done = subprocess.run([str(script), *argv], env=env, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert global_step(out) == 6
        models.append(TDMPC2.from_pretrained(out / "final").state_dict())
    ddp, fsdp = models
    for key, value in ddp.items():
        torch.testing.assert_close(fsdp[key], value, rtol=1e-5, atol=1e-6, msg=key)
    # online and target Q start equal; the updates moved them apart (the EMA lags)
    assert not torch.equal(fsdp["model._Qs.params.0.weight"],
                           fsdp["model._target_Qs_params.0.weight"])  # fmt: skip


@pytest.mark.slow
def test_quickstart_runs_every_stage(tmp_path):
    """The README job with a smaller recipe (the real one takes ~2 minutes)."""
    from tdmpc2_model.apps.cli import load_recipe
    from tdmpc2_model.apps.quickstart import run, table

    recipe = load_recipe("quickstart")
    recipe["collect"]["episodes"] = 1
    recipe["pretrain"]["max_steps"] = 10
    recipe["finetune"].update(steps=100, seed_steps=50)
    recipe["eval"]["episodes"] = 1
    rows = run(recipe, tmp_path / "qs", progress=False)
    assert [r["stage"] for r in rows] == ["collect", "pretrain", "eval pretrained", "finetune",
                                          "eval finetuned"]  # fmt: skip
    assert "mw-door-open: mean return" in table(rows)
    assert TDMPC2.from_pretrained(tmp_path / "qs" / "finetune" / "final").cfg.num_tasks == 4


def test_a_diverging_run_stops_naming_the_update_and_the_loss(dataset, tmp_path, capsys):
    """A learning rate so high that the first update diverges: the run stops with one line
    naming the update and the loss, and writes no checkpoint or model from NaN weights."""
    out = tmp_path / "run"
    assert pretrain_main(pretrain_args(dataset, out, 10, "--config", "lr=1.0e+38")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("tdmpc2-pretrain: error: update 1: non-finite pi_loss;"), err
    assert "Traceback" not in "\n".join(err)
    assert not list((out / "lightning").glob("*.ckpt")) and not (out / "final").exists()


def test_sigkill_mid_pretraining_then_resume_finishes_every_update(dataset, tmp_path):
    """`tdmpc2-pretrain` killed (SIGKILL) once its first Lightning checkpoint exists: the
    rerun with --resume continues from it to --max-steps, keeps the logs of both parts, and
    writes the final model, bit for bit the one an uninterrupted run writes (the resumed run
    continues the batch stream, the random state and the policy's carried task-embedding
    gradients of the checkpoint; before, it started the batch stream over and the weights
    differed by ~1e-3); a killed run never leaves a half checkpoint to resume from."""
    from killing import kill_when

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed process ran: bitwise equal results
    try:
        out = tmp_path / "run"
        argv = pretrain_args(dataset, out, 30, "--checkpoint-every", "10")
        kill_when("pretrain_main", argv, out / "lightning" / "last.ckpt", after_s=0.5)
        assert not (out / "final").exists()
        killed_at = global_step(out)
        assert 10 <= killed_at < 30
        # the killed run's rows were on disk as they were logged (every 5 updates here)
        assert [s for s, _ in read_metrics(out)["train/total_loss"]][:1] == [4]  # 5th update
        assert pretrain_main([*argv, "--resume"]) == 0
        whole = tmp_path / "uninterrupted"
        assert pretrain_main(pretrain_args(dataset, whole, 30, "--checkpoint-every", "10")) == 0
    finally:
        torch.set_num_threads(threads)
    assert global_step(out) == 30
    assert TDMPC2.from_pretrained(out / "final").cfg.task_names == TABLE
    logged = sorted({int(r["step"]) for log in (out / "logs").glob("version_*/metrics.csv")
                     for r in csv.DictReader(open(log)) if r.get("train/total_loss")})  # fmt: skip
    assert logged[-1] >= 25 and any(s <= killed_at for s in logged)
    runs = json.loads((out / "run_config.json").read_text())["runs"]
    assert [("--resume" in r["argv"]) for r in runs] == [False, True]
    resumed = TDMPC2.from_pretrained(out / "final").model.state_dict()
    for key, value in TDMPC2.from_pretrained(whole / "final").model.state_dict().items():
        assert torch.equal(resumed[key], value), key


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_pretraining_says_resume_continues_it(dataset, tmp_path, sig):
    """SIGTERM and Ctrl-C mid-pretraining: one line saying what continues the run, exit code
    130, and the loader's threads end with it (before: Lightning's exit code 1 and nothing
    said; SIGTERM also logged a line of its own)."""
    from killing import signal_when

    out = tmp_path / "run"
    argv = pretrain_args(dataset, out, 100_000, "--checkpoint-every", "5", "--num-workers", "2")
    stopped = signal_when("pretrain_main", argv, out / "lightning" / "last.ckpt", sig)
    assert stopped.returncode == 130 and stopped.seconds < 10, stopped.stderr[-2000:]
    lines = [x for x in stopped.stderr.splitlines() if x.strip() and "update/s" not in x]
    assert lines == ["tdmpc2-pretrain: interrupted; rerun with --resume to continue."], lines


def test_resume_from_a_checkpoint_with_nan_weights_is_refused_up_front(pretrained, dataset,
                                                                       tmp_path, capsys):  # fmt: skip
    ckpt = torch.load(pretrained / "lightning" / "last.ckpt", weights_only=False)
    name = next(k for k in ckpt["state_dict"] if k.endswith("_reward.0.weight"))
    ckpt["state_dict"][name][0, 0] = float("nan")
    bad = tmp_path / "nan.ckpt"
    torch.save(ckpt, bad)
    out = tmp_path / "run"
    assert pretrain_main(pretrain_args(dataset, out, 40, "--resume", str(bad))) == 2
    said = capsys.readouterr().err
    assert f"{bad}: tensor" in said and "holds 1 non-finite value(s)" in said
    assert "Traceback" not in said and not (out / "lightning").exists()
