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
from tdmpc2_model.apps.plot_cli import main as plot_main
from tdmpc2_model.apps.plots import DPI, FIGSIZE, nearest_tasks
from tdmpc2_model.apps.published import mean_ci, published_curve, published_dir, published_tasks
from tdmpc2_model.evaluation.taskset import TaskScore, TaskSetResult, normalized_score


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
    from tdmpc2_model.training.online import MetricsLog

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
    from tdmpc2_model.outputs.metrics_csv import lightning_loggers

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
    # the x range fits the short run: the published point at 0 is drawn, the next one
    # (100k) is named in the legend
    published = [r for r in rows if r["curve"] == "tdmpc2"]
    raw = raw_published("tdmpc2", "mw-reach")
    assert [(int(r["step"]), r["shown"]) for r in published] == [(0, "markers"),
                                                                  (100_000, "legend")]  # fmt: skip
    assert float(published[1]["mean"]) == pytest.approx(np.mean(raw[100_000]))
    assert {r["curve"] for r in rows} == {"ours", "tdmpc2", "sac"}
    # one line, not a traceback, for a run without evaluations, without logs or missing
    from tdmpc2_model.training.online import MetricsLog

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
    assert all(r["x"] == r["y"] == "" for r in rows)  # a heatmap (6 tasks), no map
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


# ------------------------------------------------- pictures that explain themselves (#26)
@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures the plots save, drawn (tick labels filled in), in order."""
    from tdmpc2_model.apps import plots

    drawn, save = [], plots._save

    def keep(fig, image):
        fig.canvas.draw()
        fig.test_renderer = fig.canvas.get_renderer()  # closing the figure drops its canvas
        drawn.append(fig)
        save(fig, image)

    monkeypatch.setattr(plots, "_save", keep)
    return drawn


def labelled_y_ticks(ax) -> set[str]:
    """The y tick labels a reader sees: non-empty, inside the axis' limits."""
    low, high = sorted(ax.get_ylim())
    ticks = [*ax.yaxis.get_major_ticks(), *ax.yaxis.get_minor_ticks()]
    return {t.label1.get_text() for t in ticks if t.label1.get_visible() and
            t.label1.get_text() and low <= t.get_loc() <= high}  # fmt: skip


def test_every_loss_panel_labels_its_y_axis(tmp_path, figures):
    """Losses spanning less than a decade (most of a short run's) got a log axis with no
    label at all; now each panel shows at least two labelled ticks, log only over a decade."""
    from tdmpc2_model.outputs.metrics_csv import lightning_loggers

    x = np.arange(50, 2001, 50)
    losses = {"consistency_loss": 1e-3 * np.exp(-x / 500) + 3e-4,  # 0.0003-0.001: < a decade
              "reward_loss": 0.3 + 0.1 * np.exp(-x / 300),  # 0.3-0.4
              "value_loss": 1.2 * np.exp(-x / 200) + 0.15,  # crosses 10^0 once
              "total_loss": 5 * np.exp(-x / 100) + 0.004,  # three decades
              "pi_loss": -0.2 - 0.1 * (1 - np.exp(-x / 100))}  # negative: linear  # fmt: skip
    (logger,) = lightning_loggers(["csv"], tmp_path / "pt")
    for i, s in enumerate(x):
        logger.log_metrics({f"train/{k}": float(v[i]) for k, v in losses.items()}, step=int(s))
    logger.finalize("success")
    out = tmp_path / "losses.png"
    assert plot_main(["losses", str(tmp_path / "pt"), "--out", str(out)]) == 0
    (fig,) = figures
    panels = {ax.get_title().split()[0]: ax for ax in fig.axes if ax.get_title()}
    assert set(panels) == set(losses)
    for name, ax in panels.items():
        assert len(labelled_y_ticks(ax)) >= 2, (name, ax.get_yscale(), labelled_y_ticks(ax))
    assert {n for n, ax in panels.items() if ax.get_yscale() == "log"} == {"total_loss"}
    assert panels["total_loss"].get_title() == "total_loss (log)"
    rows = read_csv(out.with_suffix(".csv"))
    assert len(rows) == len(losses) * len(x)
    assert [float(r["value"]) for r in rows if r["loss"] == "reward_loss"] == [
        pytest.approx(v) for v in losses["reward_loss"]]  # fmt: skip


def published_handles(ax) -> dict[str, object]:
    handles, labels = ax.get_legend_handles_labels()
    return {lab.split(",")[0]: h for h, lab in zip(handles, labels, strict=True) if
            "published" in lab}  # fmt: skip


def test_curves_fit_a_short_run_and_draw_only_the_published_points(tmp_path, figures):
    """A 2k-step run was a dot on a 100k axis, next to a published 'curve' drawn as a ramp
    from 0 to 100k through points it does not have."""
    run = write_run(tmp_path / "r", "mw-reach", [(0, 0.0), (1000, 0.0), (2000, 0.2)], True)
    out = tmp_path / "c.png"
    assert plot_main(["curves", str(run), "--compare", "tdmpc2,sac", "--out", str(out)]) == 0
    (fig,) = figures
    (ax,) = fig.axes
    low, high = ax.get_xlim()
    assert -100 <= low <= 0 and 2000 <= high <= 2200  # the run fills the axis
    published = published_handles(ax)
    assert set(published) == {"tdmpc2", "sac"}
    for method, handle in published.items():
        data = handle.lines[0]  # an error bar's points: markers, nothing joining them
        assert data.get_linestyle() == "None" and data.get_marker() not in ("None", "")
        assert data.get_xdata() == pytest.approx([0], abs=0.02 * high)  # dodged, not moved
        assert data.get_ydata() == pytest.approx([published_curve("mw-reach", method).mean[0]])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("tdmpc2, published (3 seeds); at 100k: 0.633") for t in legend)
    rows = read_csv(out.with_suffix(".csv"))
    assert [(r["curve"], r["step"], r["shown"]) for r in rows] == [
        ("r", "0", "line"), ("r", "1000", "line"), ("r", "2000", "line"),
        ("tdmpc2", "0", "markers"), ("tdmpc2", "100000", "legend"),
        ("sac", "0", "markers"), ("sac", "100000", "legend")]  # fmt: skip


def test_curves_of_longer_runs_join_published_points_without_inventing_any(tmp_path, figures):
    """Two published points in range (150k run): error bars, no ramp; four (300k): the line
    runs through exactly the published steps, with markers on them."""
    cart = write_run(tmp_path / "c", "cartpole-balance",
                     [(s, 3 + s / 25_000) for s in range(0, 150_001, 10_000)], False)  # fmt: skip
    assert plot_main(["curves", str(cart), "--out", str(tmp_path / "c.png")]) == 0
    (ax,) = figures[0].axes
    data = published_handles(ax)["tdmpc2"].lines[0]
    assert data.get_linestyle() == "None" and list(data.get_xdata()) == [0, 100_000]
    assert ax.get_xlim()[1] == pytest.approx(150_000 * 1.05)
    walker = write_run(tmp_path / "w", "walker-walk",
                       [(s, 9 * s / 300_000) for s in range(0, 300_001, 50_000)], False)  # fmt: skip
    assert plot_main(["curves", str(walker), "--out", str(tmp_path / "w.png")]) == 0
    (ax,) = figures[1].axes
    line = published_handles(ax)["tdmpc2"]
    assert list(line.get_xdata()) == [0, 100_000, 200_000, 300_000]
    assert line.get_marker() not in ("None", "") and line.get_linestyle() == "--"
    assert list(line.get_ydata()) == pytest.approx(published_curve("walker-walk").mean[:4])
    rows = read_csv(tmp_path / "w.csv")
    assert [(r["step"], r["shown"]) for r in rows if r["curve"] == "tdmpc2"] == [
        ("0", "line"), ("100000", "line"), ("200000", "line"), ("300000", "line")]  # fmt: skip


def test_score_bars_of_two_evaluations_of_one_checkpoint_are_told_apart(tmp_path, figures):
    """Both evaluations of `final` were labelled 'final (1.4M)'."""
    scores = {"walker-walk": (300.0, None), "mw-reach": (10.0, 0.5)}
    evals = [eval_dir(tmp_path / run / "eval", 1_400_000, scores) for run in ("a", "b")]
    evals.append(eval_dir(tmp_path / "c" / "eval-10ep", 1_400_000, scores))
    for e in evals:  # one checkpoint, as `tdmpc2-eval --checkpoint runs/pt/final` records it
        data = json.loads((e / "eval.json").read_text())
        (e / "eval.json").write_text(json.dumps({**data, "checkpoint": "runs/pt/final"}))
    out = tmp_path / "scores.png"
    assert plot_main(["scores", *map(str, evals), "--out", str(out)]) == 0
    models = list(dict.fromkeys(r["model"] for r in read_csv(out.with_suffix(".csv"))))
    assert models == ["a/eval (1.4M, 2 ep/task)", "b/eval (1.4M, 2 ep/task)",
                      "eval-10ep (1.4M, 2 ep/task)"]  # fmt: skip
    (fig,) = figures
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(set(legend)) == 3 and all(m in t for m, t in zip(models, legend, strict=True))
    names = [t.get_text() for t in fig.axes[1].texts]  # the score-vs-size panel's labels
    assert names == ["a/eval", "b/eval", "eval-10ep"]


def test_a_few_task_embeddings_are_a_cosine_heatmap_many_a_labelled_map(tmp_path, figures):
    """A t-SNE of 4 points says nothing (and contradicted the printed cosine table): under
    20 tasks the picture is the cosine-similarity matrix itself; 80 tasks get a t-SNE map
    whose labels do not overlap."""
    import torch

    few = ["cartpole-balance", "reacher-easy", "mw-reach", "mw-door-open"]
    torch.manual_seed(0)
    TDMPC2(TDMPC2Config(size="1M", tasks=few)).save_pretrained(tmp_path / "few")
    out = tmp_path / "few.png"
    assert plot_main(["embeddings", "--checkpoint", str(tmp_path / "few"), "--out", str(out)]) == 0
    (ax, _colorbar) = figures[0].axes
    assert len(ax.images) == 1 and not ax.collections  # a heatmap, no scatter
    emb = TDMPC2.from_pretrained(tmp_path / "few").model.task_embeddings().numpy()
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = unit @ unit.T
    assert np.asarray(ax.images[0].get_array()) == pytest.approx(sim, abs=1e-6)
    assert [t.get_text() for t in ax.get_yticklabels()] == few
    rows = read_csv(out.with_suffix(".csv"))
    assert [r["task"] for r in rows] == few
    for i, r in enumerate(rows):
        assert [float(r[f"cosine:{t}"]) for t in few] == pytest.approx(sim[i], abs=1e-6)

    from tdmpc2_data.tasks import get_task

    many = [t for t in published_tasks() if get_task(t).domain in ("dmcontrol", "metaworld")]
    assert len(many) >= 80
    many = many[:80]
    torch.manual_seed(0)
    TDMPC2(TDMPC2Config(size="1M", tasks=many)).save_pretrained(tmp_path / "many")
    out = tmp_path / "many.png"
    assert plot_main(["embeddings", "--checkpoint", str(tmp_path / "many"), "--out", str(out)]) == 0
    fig = figures[1]
    ax = fig.axes[0]
    assert not ax.images and ax.get_title().startswith("task embeddings (t-SNE), 80 tasks")
    renderer = fig.test_renderer
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert len(boxes) >= 40  # most tasks labelled
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    frame = ax.get_window_extent(renderer)
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 for b in boxes)
    rows = read_csv(out.with_suffix(".csv"))
    assert [r["task"] for r in rows] == many
    assert all(np.isfinite(float(r["x"])) for r in rows)
