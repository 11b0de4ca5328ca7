"""`tdmpc2-plot`: the pictures of ``tdmpc2_model.apps.plots`` from the command line. Each
subcommand writes ``--out PATH.png`` (``PATH.svg`` with ``--svg``) and ``PATH.csv`` beside it
with the plotted numbers."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from tdmpc2_data.versions import add_version_flag
from tdmpc2_model.apps.cli import _run
from tdmpc2_model.apps.published import METHODS

EXAMPLES = """examples:
  tdmpc2-plot curves runs/reach-s0 runs/reach-s1 --compare tdmpc2,sac --out plots/reach.png
  tdmpc2-plot scores runs/eval-1M runs/eval-5M runs/eval-19M --out plots/scores.png
  tdmpc2-plot embeddings --checkpoint runs/pt/final --out plots/embeddings.png
  tdmpc2-plot losses runs/pt --out plots/losses.svg --svg
"""


def plot_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tdmpc2-plot",
        description="Draw learning curves (with the paper's published ones), normalized scores, "
        "the task-embedding map or loss curves. Each writes an image and a CSV of the plotted "
        "numbers beside it (PATH.csv).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version_flag(p)
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.add_argument("--out", required=True, help="image path (PATH.png; PATH.csv beside it)")
        c.add_argument("--svg", action="store_true", help="write PATH.svg instead of PATH.png")
        return c

    c = command("curves", "Evaluation return (DMControl) or success rate (the other domains) vs "
                "environment steps of online runs (several: mean and 95%% CI over them), with "
                "the published curves of the same task.")  # fmt: skip
    c.add_argument("runs", nargs="+", metavar="RUN_DIR", help="tdmpc2-train/finetune --out dirs")
    c.add_argument("--task", help="the runs' task (default: from their run.json)")
    c.add_argument("--compare", default="tdmpc2",
                   help=f"comma list of published methods to overlay ({', '.join(METHODS)}; "
                        "'' for none; default tdmpc2)")  # fmt: skip
    c.add_argument("--max-step", type=float,
                   help="x-axis limit (default: the runs' last step plus 5%%; published points "
                        "past it are left out, the next one named in the legend)")  # fmt: skip
    c = command("scores", "Normalized score per task (bars grouped by domain) of task-set "
                "evaluations and, for several, mean score vs parameter count (log axis).")  # fmt: skip
    c.add_argument(
        "evals", nargs="+", metavar="EVAL_DIR", help="tdmpc2-eval --tasks ... --out dirs"
    )
    c = command("embeddings", "The task embeddings of a multitask checkpoint: their cosine "
                "similarity matrix (under 20 tasks) or a t-SNE map coloured by domain; prints "
                "each task's nearest neighbours (cosine).")  # fmt: skip
    c.add_argument("--checkpoint", required=True, help="a checkpoint tdmpc2-eval accepts")
    c.add_argument("--revision", help="Hub revision of the checkpoint")
    c = command("losses", "Loss terms over time of a pretraining run (vs updates) or an online "
                "run (vs environment steps).")  # fmt: skip
    c.add_argument("run", metavar="RUN_DIR", help="tdmpc2-pretrain/train/finetune --out dir")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = plot_parser().parse_args(argv)

    def body() -> None:
        from tdmpc2_model.apps import plots

        if args.command == "curves":
            compare = [m for m in args.compare.split(",") if m]
            image = plots.plot_curves(args.runs, args.out, args.task, compare, args.max_step,
                                      args.svg)  # fmt: skip
        elif args.command == "scores":
            image = plots.plot_scores(args.evals, args.out, args.svg)
        elif args.command == "embeddings":
            image, table = plots.plot_embeddings(args.checkpoint, args.out, args.svg,
                                                 args.revision)  # fmt: skip
            print(table)
        else:
            image = plots.plot_losses(args.run, args.out, args.svg)
        print(f"wrote {image} and {image.with_suffix('.csv')}")

    return _run("tdmpc2-plot", body, args)


if __name__ == "__main__":
    raise SystemExit(main())
