"""Pictures: the packaged published curves equal the paper's CSVs; every `tdmpc2-plot`
subcommand writes a real PNG of the expected size and a CSV holding exactly the numbers it was
given. (Plots of real online and pretraining runs are in test_online.py / test_pretrain.py.)"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from run_logs import png_size, read_csv

from tdmpc2_model import TDMPC2, TDMPC2Config
from tdmpc2_model.plot_cli import main as plot_main
from tdmpc2_model.plots import DPI, FIGSIZE, nearest_tasks
from tdmpc2_model.published import mean_ci, published_curve, published_dir, published_tasks
from tdmpc2_model.taskset_eval import TaskScore, TaskSetResult, normalized_score


def raw_published(method: str, file: str) -> dict[int, list[float]]:
    """The paper's CSV read independently of the package's loader."""
    rows: dict[int, list[float]] = {}
    with open(published_dir() / method / f"{file}.csv", newline="") as f:
        for r in list(csv.reader(f))[1:]:
            rows.setdefault(int(r[0]), []).append(float(r[1]))
    return rows


def test_published_curves_are_the_papers_csvs():
    assert len(published_tasks("tdmpc2")) == 104
    raw = raw_published("tdmpc2", "cartpole-balance")
    curve = published_curve("cartpole-balance")
    assert curve.metric == "reward" and list(curve.steps) == sorted(raw)
    assert curve.steps[1] - curve.steps[0] == 100_000
    for s, m, lo, hi, n in zip(curve.steps, curve.mean, curve.low, curve.high, curve.seeds,
                               strict=True):  # fmt: skip
        assert m == pytest.approx(np.mean(raw[int(s)])) and n == len(raw[int(s)])
        assert min(raw[int(s)]) <= lo <= m <= hi <= max(raw[int(s)])
    # the paper's file names differ for MyoSuite; both names resolve
    hand = raw_published("tdmpc2", "myo-hand-reach")
    myo = published_curve("myo-reach")
    assert myo.metric == "success" and myo.mean[-1] == pytest.approx(np.mean(hand[max(hand)]))
    assert published_curve("mw-reach", "sac").label == "sac"
    with pytest.raises(KeyError, match="tdmpc2-pixels has no published curve for mw-reach"):
        published_curve("mw-reach", "tdmpc2-pixels")
    with pytest.raises(KeyError, match="known: tdmpc2"):
        published_curve("mw-reach", "ppo")


def test_bootstrap_ci_is_deterministic_and_brackets_the_mean():
    values = [1.0, 2.0, 6.0]
    mean, low, high = mean_ci(values)
    assert mean == 3.0 and 1.0 <= low < mean < high <= 6.0
    assert mean_ci(values) == (mean, low, high)
    assert mean_ci([5.0]) == (5.0, 5.0, 5.0)


def write_run(root: Path, task: str, evals: list[tuple[int, float]], success: bool) -> Path:
    """An online run directory as `tdmpc2-train` leaves it (run.json, its metrics logged by
    the run's own `MetricsLog`), killed in the middle of writing a row."""
    from tdmpc2_model.online import MetricsLog

    root.mkdir(parents=True)
    (root / "run.json").write_text(json.dumps({"task": task, "seed": 0, "seed_steps": 100}))
    with MetricsLog(root, ["csv"]) as metrics:
        for s, v in evals:
            metrics.log({"kind": "eval", "step": s, "task": task, "episodes": 2,
                         "mean_return": v * 100, "success_rate": v if success else None})  # fmt: skip
    with open(root / "logs" / "version_0" / "metrics.csv", "a") as f:
        f.write("2,50")  # killed mid-write
    return root


def write_pretraining_run(root: Path, task: str, evals: list[tuple[int, float]]) -> Path:
    """A pretraining run directory's logs as Lightning's Trainer writes them through the
    run's CSV logger (``TaskSetEvaluation``'s columns, at updates; no run.json)."""
    from tdmpc2_model.loggers import lightning_loggers

    (logger,) = lightning_loggers(["csv"], root)
    for s, v in evals:
        logger.log_metrics({"train/total_loss": 1.0 / (s + 1), "epoch": 0}, step=s)
        logger.log_metrics({f"eval/{task}/return": v * 100, f"eval/{task}/success": v,
                            f"eval/{task}/score": v * 100, "eval/mean_normalized_score": v * 100,
                            "epoch": 0}, step=s)  # fmt: skip
    logger.finalize("success")
    return root


def test_curves_average_runs_and_overlay_the_published_curve(tmp_path, capsys):
    a = write_run(tmp_path / "s0", "mw-reach", [(0, 0.0), (2000, 0.5), (4000, 1.0)], True)
    b = write_run(tmp_path / "s1", "mw-reach", [(0, 0.2), (2000, 0.7), (4000, 1.0)], True)
    out = tmp_path / "plots" / "reach.png"
    assert plot_main(["curves", str(a), str(b), "--compare", "tdmpc2,sac", "--out", str(out)]) == 0
    assert png_size(out) == (FIGSIZE[0] * DPI, FIGSIZE[1] * DPI)
    rows = read_csv(out.with_suffix(".csv"))
    ours = {int(r["step"]): r for r in rows if r["curve"] == "ours"}
    assert sorted(ours) == [0, 2000, 4000]
    assert float(ours[2000]["mean"]) == pytest.approx(0.6) and ours[2000]["seeds"] == "2"
    assert float(ours[0]["ci_low"]) <= 0.1 <= float(ours[0]["ci_high"])
    # the default x range stops at the first published point after 0 for a short run
    published = [r for r in rows if r["curve"] == "tdmpc2"]
    raw = raw_published("tdmpc2", "mw-reach")
    assert [int(r["step"]) for r in published] == [0, 100_000]
    assert float(published[1]["mean"]) == pytest.approx(np.mean(raw[100_000]))
    assert {r["curve"] for r in rows} == {"ours", "tdmpc2", "sac"}
    # one line, not a traceback, for a run without evaluations, without logs or missing
    from tdmpc2_model.online import MetricsLog

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "run.json").write_text(json.dumps({"task": "mw-reach"}))
    with MetricsLog(empty, ["csv"]) as metrics:
        metrics.log({"kind": "train", "step": 100, "episode": 1, "episode_return": 3.0})
    assert plot_main(["curves", str(empty), "--out", str(out)]) == 2
    assert f"{empty}: no eval/success_rate logged (see --eval-every)" in capsys.readouterr().err
    bare = tmp_path / "bare"
    bare.mkdir()
    assert plot_main(["curves", str(bare), "--task", "mw-reach", "--out", str(out)]) == 2
    assert f"{bare}: no logs/version_*/metrics.csv" in capsys.readouterr().err
    nope = str(tmp_path / "nope")
    assert plot_main(["curves", nope, "--task", "mw-reach", "--out", str(out)]) == 2
    assert f"{nope}: no such run directory" in capsys.readouterr().err
    online = write_run(tmp_path / "o", "mw-reach", [(0, 0.1)], True)
    pretraining = write_pretraining_run(tmp_path / "p", "mw-reach", [(0, 0.1)])
    assert plot_main(["curves", str(online), str(pretraining), "--out", str(out)]) == 2
    assert "cannot share a curve" in capsys.readouterr().err


def test_curves_and_losses_of_a_pretraining_run_are_over_updates(tmp_path, capsys):
    run = write_pretraining_run(tmp_path / "pt", "mw-reach", [(10, 0.2), (20, 0.6), (30, 0.9)])
    out = tmp_path / "curve.png"
    assert plot_main(["curves", str(run), "--out", str(out)]) == 0  # the one task evaluated
    assert "no published curves over a pretraining run" in capsys.readouterr().out
    assert png_size(out) == (FIGSIZE[0] * DPI, FIGSIZE[1] * DPI)
    rows = read_csv(out.with_suffix(".csv"))
    assert [(r["curve"], int(r["step"]), float(r["mean"])) for r in rows] == [
        ("pt", 10, pytest.approx(0.2)), ("pt", 20, pytest.approx(0.6)),
        ("pt", 30, pytest.approx(0.9))]  # fmt: skip
    losses = tmp_path / "losses.png"
    assert plot_main(["losses", str(run), "--out", str(losses)]) == 0
    assert [(r["loss"], r["step"]) for r in read_csv(losses.with_suffix(".csv"))] == [
        ("total_loss", "10"), ("total_loss", "20"), ("total_loss", "30")]  # fmt: skip


def eval_dir(root: Path, params: int, scores: dict[str, tuple[float, float | None]]) -> Path:
    """A task-set evaluation directory holding an eval.json as `tdmpc2-eval --out` writes."""
    from tdmpc2_data.tasks import get_task

    rows = [TaskScore(t, get_task(t).domain, 2, r, s, normalized_score(get_task(t).domain, r, s))
            for t, (r, s) in scores.items()]  # fmt: skip
    result = TaskSetResult(str(root.name), params, 0, 2, {}, {}, rows)
    root.mkdir(parents=True)
    (root / "eval.json").write_text(json.dumps(result.to_dict()))
    return root


def test_scores_bars_per_task_and_score_vs_size(tmp_path):
    small = eval_dir(tmp_path / "1M", 1_400_000,
                     {"walker-walk": (300.0, None), "mw-reach": (10.0, 0.5)})  # fmt: skip
    big = eval_dir(tmp_path / "5M", 5_000_000,
                   {"walker-walk": (800.0, None), "mw-reach": (20.0, 1.0), "mw-push": (5.0, 0.2)})  # fmt: skip
    out = tmp_path / "scores.png"
    assert plot_main(["scores", str(small), str(big / "eval.json"), "--out", str(out)]) == 0
    width, height = png_size(out)
    assert width >= FIGSIZE[0] * DPI and height == FIGSIZE[1] * DPI
    rows = {(r["model"].split()[0], r["task"]): r for r in read_csv(out.with_suffix(".csv"))}
    assert float(rows["1M", "walker-walk"]["normalized_score"]) == pytest.approx(30.0)
    assert float(rows["5M", "mw-push"]["normalized_score"]) == pytest.approx(20.0)
    assert rows["5M", "mw-push"]["domain"] == "metaworld"
    assert float(rows["1M", "(mean)"]["normalized_score"]) == pytest.approx(40.0)
    assert float(rows["5M", "(mean)"]["normalized_score"]) == pytest.approx(200 / 3)
    assert rows["5M", "(mean)"]["params"] == "5000000"
    assert ("1M", "mw-push") not in rows  # not evaluated: no bar, no row


def test_embeddings_map_and_nearest_neighbours(tmp_path, capsys):
    tasks = ["walker-walk", "walker-run", "cheetah-run", "mw-reach", "mw-push", "mw-door-open"]
    torch_seed = 0
    import torch

    torch.manual_seed(torch_seed)
    agent = TDMPC2(TDMPC2Config(size="1M", tasks=tasks))
    with torch.no_grad():  # two clear clusters plus noise: neighbours stay in the domain
        w = agent.model._task_emb.weight
        w.normal_(0, 0.05)
        w[:3, 0] += 0.9
        w[3:, 1] += 0.9
    agent.save_pretrained(tmp_path / "model")
    out = tmp_path / "emb.png"
    assert (
        plot_main(["embeddings", "--checkpoint", str(tmp_path / "model"), "--out", str(out)]) == 0
    )
    assert png_size(out) == (FIGSIZE[0] * DPI, FIGSIZE[1] * DPI)
    table = capsys.readouterr().out
    assert "walker-walk" in table and "nearest" in table
    rows = read_csv(out.with_suffix(".csv"))
    assert [r["task"] for r in rows] == tasks
    assert [r["domain"] for r in rows] == ["dmcontrol"] * 3 + ["metaworld"] * 3
    assert all(np.isfinite(float(r["x"])) and np.isfinite(float(r["y"])) for r in rows)
    emb = agent.model.task_embeddings().numpy()
    assert np.linalg.norm(emb, axis=1).max() <= 1 + 1e-6  # as the lookup renorms them
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = unit @ unit.T
    for i, r in enumerate(rows):
        others = [j for j in np.argsort(-sim[i]) if j != i]
        assert r["nearest"] == tasks[others[0]] and r["second"] == tasks[others[1]]
        assert float(r["cosine"]) == pytest.approx(sim[i, others[0]], abs=1e-6)
        assert (tasks.index(r["nearest"]) < 3) == (i < 3)
    order, _ = nearest_tasks(emb, k=1)
    assert [tasks[j] for j in order[:, 0]] == [r["nearest"] for r in rows]


def test_single_task_models_have_no_embedding_map(tmp_path, capsys):
    TDMPC2(TDMPC2Config(size="1M", tasks=["mw-reach"])).save_pretrained(tmp_path / "m")
    assert plot_main(["embeddings", "--checkpoint", str(tmp_path / "m"),
                      "--out", str(tmp_path / "e.png")]) == 2  # fmt: skip
    assert "single-task model has no task embeddings" in capsys.readouterr().err


def test_svg_output_and_help(tmp_path, capsys):
    run = write_run(tmp_path / "r", "walker-walk", [(0, 1.0), (1000, 2.0)], False)
    out = tmp_path / "c.png"
    assert plot_main(["curves", str(run), "--compare", "", "--svg", "--out", str(out)]) == 0
    assert out.with_suffix(".svg").read_text().lstrip().startswith("<?xml")
    assert not out.exists()
    rows = read_csv(out.with_suffix(".csv"))
    assert [float(r["mean"]) for r in rows] == [100.0, 200.0]  # episode return for DMControl
    with pytest.raises(SystemExit):
        plot_main(["--help"])
    assert "examples:" in capsys.readouterr().out
