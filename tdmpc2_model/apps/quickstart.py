"""The whole loop on a CPU in a few minutes: ``python -m tdmpc2_model.apps.quickstart``.

1. collect random episodes of a few tasks from real simulators into a shard dataset;
2. pretrain a 1M multitask model on it with Lightning;
3. finetune it online on a task of its table that the data left out;
4. evaluate the pretrained and the finetuned model on that task; print a summary table.

Settings come from the packaged recipe ``quickstart`` (``recipes/quickstart.yaml``) or
``--recipe``; the run lives in ``--out``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def run(recipe: dict[str, Any], out: str | Path, progress: bool = True) -> list[dict[str, Any]]:
    """Run the four stages into ``out``; returns one summary row per stage."""
    from tdmpc2_data import open_dataset
    from tdmpc2_data.collect import collect
    from tdmpc2_model.agent import TDMPC2
    from tdmpc2_model.evaluation.episodes import evaluate
    from tdmpc2_model.training.online import train
    from tdmpc2_model.training.pretrain import pretrain
    from tdmpc2_model.training.settings import FinetuneConfig, PretrainConfig
    from tdmpc2_model.training.threads import set_torch_threads

    set_torch_threads()  # the CLIs' default, for every stage
    out, seed = Path(out), int(recipe.get("seed", 0))
    c, p, f, e = (recipe[k] for k in ("collect", "pretrain", "finetune", "eval"))
    rows: list[dict[str, Any]] = []

    def stage(name: str, start: float, result: str) -> None:
        rows.append({"stage": name, "seconds": time.perf_counter() - start, "result": result})
        print(f"[{len(rows)}/5] {name}: {result} ({rows[-1]['seconds']:.0f} s)", flush=True)

    start = time.perf_counter()
    data = collect(out / "data", c["tasks"], c["episodes"], seed=seed, task_set=c.get("table"))
    ds = open_dataset(data)
    stage("collect", start, f"{ds.num_episodes} episodes, {ds.num_transitions} transitions "
          f"of {len(c['tasks'])} tasks (table: {len(ds.tasks)} tasks)")  # fmt: skip

    start = time.perf_counter()
    settings = PretrainConfig(**p, data=str(data), out=str(out / "pretrain"), seed=seed,
                              devices=1, num_workers=0)  # fmt: skip
    final = pretrain(settings, progress=progress)
    stage("pretrain", start, f"{p['size']} model, {p['max_steps']} updates -> {final}")

    task, config = f["task"], dict(f.get("config") or {}, batch_size=f["batch_size"])
    start = time.perf_counter()
    before = evaluate(TDMPC2.from_pretrained(final, **config), task, e["episodes"], seed=seed,
                      progress=progress)  # fmt: skip
    stage("eval pretrained", start, before.line())

    start = time.perf_counter()
    settings = FinetuneConfig(**f, out=str(out / "finetune"), seed=seed, eval_episodes=0)
    result = train(TDMPC2.from_pretrained(final, **config), settings, progress=progress,
                   training_data=f"quickstart: {data} + online on {task}")  # fmt: skip
    stage("finetune", start, f"{result.steps} steps on {task} -> {result.final}")

    start = time.perf_counter()
    after = evaluate(result.agent, task, e["episodes"], seed=seed, progress=progress)
    stage("eval finetuned", start, after.line())
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    width = max(len(r["stage"]) for r in rows)
    lines = [f"{'stage':<{width}}  {'time':>6}  result", "-" * (width + 40)]
    lines += [f"{r['stage']:<{width}}  {r['seconds']:>5.0f}s  {r['result']}" for r in rows]
    lines.append(f"{'total':<{width}}  {sum(r['seconds'] for r in rows):>5.0f}s")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from tdmpc2_data.versions import add_version_flag
    from tdmpc2_model.apps.cli import load_recipe

    parser = argparse.ArgumentParser(
        prog="python -m tdmpc2_model.apps.quickstart",
        description=__doc__.split("\n\n")[0],
        epilog="example:\n  python -m tdmpc2_model.apps.quickstart --out runs/quickstart --overwrite",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version_flag(parser)
    parser.add_argument("--recipe", default="quickstart", help="a file or a packaged recipe's name "
                        "(default: quickstart, i.e. recipes/quickstart.yaml)")  # fmt: skip
    parser.add_argument("--out", help="run directory (default: the recipe's `out`)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    try:
        recipe = load_recipe(args.recipe)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    out = Path(args.out or recipe.get("out", "runs/quickstart"))
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            parser.error(f"{out} exists; pass --overwrite to replace it, or another --out.")
        shutil.rmtree(out)
    rows = run(recipe, out)
    print("\n" + table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
