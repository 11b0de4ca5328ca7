"""`tdmpc2-data`: list tasks, collect, convert, export, verify, inspect, download and push datasets.

Every subcommand is a thin wrapper over a library function, so everything here is also
callable (and tested) from Python. The failures a user can cause (bad files, flags, tasks,
paths, Hub answers, Ctrl-C) are mapped in one table (``errors.expected_errors``, with what an
interrupted command kept in front) to one line on stderr and an exit code; no command catches
them itself.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tdmpc2_data.errors import CLIError, expected_errors, one_line_error, sigterm_as_interrupt
from tdmpc2_data.flags import seed, task_list
from tdmpc2_data.progress import match_hub_bars
from tdmpc2_data.tasks import TASK_SETS, TASKS, resolve_tasks
from tdmpc2_data.versions import add_version_flag

EPILOG = """examples:
  tdmpc2-data list
  tdmpc2-data collect --tasks walker-walk,cartpole-balance --episodes 20 data/small
  tdmpc2-data convert mt80/chunk_0.pt data/mt80 --from legacy-pt --task-set mt80
  tdmpc2-data export data/mt80 out/walker-lerobot --to lerobot --tasks walker-walk
  tdmpc2-data convert out/walker-lerobot data/walker --from lerobot
  tdmpc2-data verify data/mt80
  tdmpc2-data info data/mt80
  tdmpc2-data stats data/mt80 --select "tasks=mt30,top_fraction=0.5" --plot plots/
  tdmpc2-data merge data/a data/b data/both
  tdmpc2-data download mt80 --tasks mw-door-open,walker-walk --dir data/mt80-small
  tdmpc2-data push data/my-set me/my-set --private --tag v1
"""


# ---------------------------------------------------------------- list
def cmd_list(args: argparse.Namespace) -> int:
    names = TASK_SETS[args.set] if args.set else list(TASKS)
    ids = {n: i for i, n in enumerate(TASK_SETS["mt80"])}
    print(f"{'task':<30} {'domain':<10} {'obs':>4} {'act':>4} {'T':>4}  mt80 id")
    for name in names:
        t = TASKS[name]
        tid = ids.get(name, "")
        print(
            f"{name:<30} {t.domain:<10} {t.obs_dim:>4} {t.action_dim:>4} "
            f"{t.episode_length:>4}  {tid}"
        )
    print(
        f"\n{len(names)} tasks. Task sets: "
        + ", ".join(f"{k} ({len(v)})" for k, v in TASK_SETS.items())
    )
    from tdmpc2_data.hub_api import published_data_repo

    print("Datasets (tdmpc2-data download NAME):")
    for name, size in (("mt80", "545M transitions, 80 tasks"), ("mt30", "345M, 30 tasks")):
        print(f"  {name}  {size}; from {published_data_repo(name)}")
    return 0


# ---------------------------------------------------------------- collect
def cmd_collect(args: argparse.Namespace) -> int:
    from tdmpc2_data.collect import collect

    tasks = [
        name for spec in (args.task or []) + (args.tasks or []) for name in resolve_tasks(spec)
    ]
    if not tasks:
        raise CLIError("--tasks: give the tasks to collect (walker-walk,cartpole-balance or mt30).")
    collect(args.dir, tasks, args.episodes, args.policy, args.seed, args.task_set)
    return cmd_info(argparse.Namespace(dataset=args.dir, revision=None))


# ---------------------------------------------------------------- convert
def cmd_convert(args: argparse.Namespace) -> int:
    from tdmpc2_data.convert import convert, guess_format
    from tdmpc2_data.reader import open_dataset

    if len(args.paths) < 2:
        raise CLIError("SRC... DST: give one or more sources, then the destination directory")
    *sources, dst = args.paths
    options = {"index_convention": args.index_convention} if args.index_convention else {}
    if args.drop_other_tasks:
        if (args.source_format or guess_format(sources[0])) != "legacy-pt":
            raise CLIError("--drop-other-tasks applies to --from legacy-pt chunks only")
        options["drop_other_tasks"] = True
    results = convert(
        sources,
        dst,
        args.source_format,
        tasks=args.tasks,
        task_set=args.task_set,
        progress=True,
        **options,
    )
    for result in results or ():
        print(result)
    print(open_dataset(dst).summary())
    return 0


# ---------------------------------------------------------------- export
#: Options of each export format (flag dest -> the exporter's keyword).
EXPORT_OPTIONS = {"lerobot": {"repo_id": "repo_id", "fps": "fps"}, "minari": {"name": "name"}}


def cmd_export(args: argparse.Namespace) -> int:
    from tdmpc2_data.export import export

    options = {}
    for fmt, names in EXPORT_OPTIONS.items():
        for dest, keyword in names.items():
            value = getattr(args, dest)
            if value is None:
                continue
            if fmt != args.to:
                raise CLIError(f"--{dest.replace('_', '-')}: only for --to {fmt}")
            options[keyword] = value
    result = export(
        opened(args.data, args.select),
        args.out,
        args.to,
        tasks=args.tasks,
        overwrite=args.overwrite,
        progress=True,
        **options,
    )
    print(result)
    for name in result.written:
        print(f"  {name}")
    return 0


# ---------------------------------------------------------------- verify
def cmd_verify(args: argparse.Namespace) -> int:
    from tdmpc2_data.format import verify_dataset

    report = verify_dataset(args.dir, progress=True)
    print(report.summary())
    return 0 if report.ok else 1


# ---------------------------------------------------------------- info
def cmd_info(args: argparse.Namespace) -> int:
    from tdmpc2_data.hub import info
    from tdmpc2_data.hub_api import is_repo_id, looked_up_locally_first, refuse_mistyped_path
    from tdmpc2_data.reader import open_dataset

    refuse_mistyped_path(args.dataset, "dataset")
    if not Path(args.dataset).exists() and is_repo_id(args.dataset):  # metadata only
        with looked_up_locally_first(args.dataset):
            print(info(args.dataset, args.revision).summary())
        return 0
    print(open_dataset(args.dataset).summary())
    return 0


# ---------------------------------------------------------------- stats
def cmd_stats(args: argparse.Namespace) -> int:
    import json

    from tdmpc2_data.curate import format_stats, plot_returns, stats

    data = opened(args.dataset, args.select)
    result = stats(data)
    print(json.dumps(result, indent=1) if args.json else format_stats(result))
    if args.plot:
        try:
            path = plot_returns(data, args.plot)
        except ImportError as exc:  # the plot extra is not installed
            raise CLIError(str(exc)) from None
        print(f"return histograms in {path}", file=sys.stderr if args.json else sys.stdout)
    return 0


# ---------------------------------------------------------------- merge
def cmd_merge(args: argparse.Namespace) -> int:
    if len(args.paths) < 2:
        raise CLIError("A B ... OUT: give one or more shard datasets, then the destination")
    args.source_format, args.index_convention, args.drop_other_tasks = "shards", None, False
    return cmd_convert(args)


# ---------------------------------------------------------------- download
def cmd_download(args: argparse.Namespace) -> int:
    from tdmpc2_data.hub import download

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    print(download(args.name, tasks, args.dir, args.revision, repo=args.repo))
    return 0


# ---------------------------------------------------------------- push
def cmd_push(args: argparse.Namespace) -> int:
    from tdmpc2_data.hub import push

    commit = push(args.dir, args.repo_id, args.card, args.private, args.revision, args.tag)
    print(f"pushed {args.dir} to {args.repo_id} at commit {commit}")
    return 0


def _select_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--select",
        metavar="FILTERS",
        help="only these episodes: tasks=..,sources=..,last_fraction_of_source=..,"
        "min_return=..,top_fraction=.. (comma separated)",
    )


def opened(location: str, select: str | None) -> Any:
    """The dataset at ``location``, or its view chosen by ``--select``."""
    from tdmpc2_data.curate import parse_selection
    from tdmpc2_data.reader import open_dataset

    data = open_dataset(location)
    return data.select(**parse_selection(select)) if select else data


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tdmpc2-data",
        description="TD-MPC2 datasets: tasks, simulators, zarr shards, Hub.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int], help: str, example: str):
        p = sub.add_parser(
            name,
            help=help,
            description=help,
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(handler=handler)
        return p

    p = add("list", cmd_list, "Print the task registry as a table.", "tdmpc2-data list --set mt30")
    p.add_argument("--set", choices=sorted(TASK_SETS), help="only the tasks of this task set")

    p = add(
        "collect",
        cmd_collect,
        "Roll out a policy in a simulator and append the episodes to a shard dataset.",
        "tdmpc2-data collect --tasks walker-walk,cartpole-balance --episodes 20 data/small",
    )
    p.add_argument("dir", help="dataset directory (created, or continued: see --episodes)")
    p.add_argument(
        "--tasks", action="append", type=task_list, help="task names or task sets, comma separated"
    )
    p.add_argument("--task", action="append", help="one task name (repeatable; as --tasks)")
    p.add_argument(
        "--episodes",
        type=int,
        default=10,
        help="episodes per task that this collection (policy + seed) should hold (default "
        "10); a rerun continues an interrupted one and never repeats an episode",
    )
    p.add_argument("--policy", default="random", help="'random' or a checkpoint (default random)")
    p.add_argument("--seed", type=seed, default=0, help="collection seed (default 0)")
    p.add_argument("--task-set", help="task table of a new dataset (default: the given tasks)")

    p = add(
        "convert",
        cmd_convert,
        "Convert replay buffers, legacy chunks, npz or HDF5 files into a shard dataset, or "
        "merge shard datasets (--from shards).",
        "tdmpc2-data convert chunk_0.pt chunk_1.pt data/mt80 --from legacy-pt --task-set mt80",
    )
    p.add_argument("paths", nargs="+", metavar="SRC... DST", help="sources, then the destination")
    p.add_argument(
        "--from",
        dest="source_format",
        choices=["legacy-pt", "torchrl", "minari", "lerobot", "npz", "hdf5", "shards"],
        help="source format (default: guessed from the file)",
    )
    p.add_argument(
        "--tasks",
        type=task_list,
        help="legacy-pt/shards/lerobot: keep only these tasks (comma list); torchrl/minari/npz/"
        "hdf5 (and lerobot data whose task strings are not task names): the task of each "
        "source (one for all, or one per source in order; default: the source's metadata)",
    )
    p.add_argument(
        "--task-set", help="task table of the destination (e.g. mt80 keeps published ids)"
    )
    p.add_argument(
        "--drop-other-tasks",
        action="store_true",
        help="legacy-pt: leave out (and count) episodes of tasks outside --task-set instead "
        "of refusing the chunk",
    )
    p.add_argument(
        "--index-convention",
        choices=["shards", "legacy"],
        help="npz/hdf5/torchrl rows without next obs: 'shards' = action[t] taken at obs[t], "
        "'legacy' = row 0 is a filler and action[t] led to obs[t] (original TD-MPC2)",
    )

    p = add(
        "export",
        cmd_export,
        "Write a shard dataset (all of it, or some tasks) as a LeRobotDataset or as Minari "
        "datasets (one per task), at the tasks' real widths; convert --from lerobot/minari "
        "reads them back.",
        "tdmpc2-data export data/mt80 out/lerobot --to lerobot --tasks walker-walk,cheetah-run\n"
        "  tdmpc2-data export data/mt80 out/minari --to minari --tasks mt30 --name mt30\n"
        '  MINARI_DATASETS_PATH=out/minari python -c "import minari; '
        "minari.load_dataset('tdmpc2/walker-walk/mt30-v0')\"",
    )
    p.add_argument("data", help="shard dataset (directory or hf:// URL)")
    p.add_argument("out", help="output directory (must be empty or missing; see --overwrite)")
    p.add_argument("--to", required=True, choices=list(EXPORT_OPTIONS), help="target format")
    p.add_argument(
        "--tasks", type=task_list, help="only these tasks (names or task sets, comma list)"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace OUT if it is not empty (default: refuse)"
    )
    _select_flag(p)
    p.add_argument("--repo-id", help="lerobot: the dataset's repo id (default tdmpc2/DATASET_NAME)")
    p.add_argument(
        "--fps",
        type=int,
        help="lerobot: frame rate of the timestamps (default 30; the shards record none)",
    )
    p.add_argument(
        "--name", help="minari: dataset name in the ids tdmpc2/TASK/NAME-v0 (default: DATA's name)"
    )

    p = add(
        "verify", cmd_verify, "Check every shard; exit 1 on damage.", "tdmpc2-data verify data/mt80"
    )
    p.add_argument("dir")

    p = add(
        "info",
        cmd_info,
        "Print tasks, episodes, transitions and bytes of a dataset (local or on the Hub).",
        "tdmpc2-data info data/mt80",
    )
    p.add_argument("dataset", metavar="DIR|OWNER/NAME")
    p.add_argument("--revision")

    p = add(
        "stats",
        cmd_stats,
        "Per-task episodes, transitions, return quantiles, success rate and sources, and the "
        "dataset's size; reads only per-episode metadata (never observations).",
        'tdmpc2-data stats data/mt80 --select "tasks=mt30,top_fraction=0.5" --plot plots/',
    )
    p.add_argument("dataset", metavar="DIR|URL")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.add_argument("--plot", metavar="DIR", help="write DIR/returns.png, a histogram per task")
    _select_flag(p)

    p = add(
        "merge",
        cmd_merge,
        "Merge shard datasets into one (convert --from shards): every episode keeps its "
        "source, source_index, return and success; a rerun continues.",
        "tdmpc2-data merge data/a data/b data/both --task-set mt80",
    )
    p.add_argument("paths", nargs="+", metavar="A B ... OUT", help="datasets, then the destination")
    p.add_argument("--tasks", type=task_list, help="keep only these tasks (comma list or task set)")
    p.add_argument("--task-set", help="task table of the destination (e.g. mt80 keeps ids)")

    p = add(
        "download",
        cmd_download,
        "Download a dataset (shards, or the legacy mt80/mt30 chunks converted on the fly).",
        "tdmpc2-data download mt80 --tasks mw-door-open,walker-walk --dir data/mt80",
    )
    p.add_argument("name", metavar="mt80|mt30|OWNER/NAME")
    p.add_argument(
        "--tasks", type=task_list, help="only the shards/episodes of these tasks (comma list)"
    )
    p.add_argument(
        "--dir",
        help="target directory (default: the Hugging Face cache; legacy conversions and "
        "task-filtered views go to $TDMPC2_DATA_HOME, default ~/.cache/tdmpc2)",
    )
    p.add_argument("--revision", help="branch, tag or commit to pin")
    p.add_argument(
        "--repo",
        help="Hub dataset repo of mt80/mt30 (default: $TDMPC2_DATA_REPO_MT80 / _MT30, "
        "else the original release nicklashansen/tdmpc2)",
    )

    p = add(
        "push",
        cmd_push,
        "Upload a dataset directory to a Hub dataset repo, with a dataset card.",
        "tdmpc2-data push data/my-set me/my-set --private",
    )
    p.add_argument("dir")
    p.add_argument("repo_id", metavar="OWNER/NAME")
    p.add_argument("--card", help="dataset card (markdown) to use instead of the generated one")
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", help="branch to commit to (default main; created if missing)")
    p.add_argument("--tag", help="tag to create for the pushed commit (never moved)")
    return parser


# ---------------------------------------------------------------- expected errors
#: What an interrupted command leaves behind (a rerun of the same command continues).
KEPT_ON_INTERRUPT: dict[str, Callable[[argparse.Namespace], str]] = {
    "collect": lambda a: f"every finished episode is in {a.dir}",
    "merge": lambda a: (
        f"every dataset part merged completely is in {a.paths[-1]}; the partial "
        "shards of the interrupted one were removed"
    ),
    "convert": lambda a: (
        f"every source converted completely is in {a.paths[-1]}; the partial "
        "shards of the interrupted one were removed"
    ),
    "download": lambda a: "every file downloaded (and legacy chunk converted) completely is kept",
    "push": lambda a: f"the files uploaded so far are on {a.repo_id}, not yet in its index",
}


def _interrupted(exc: BaseException, args: argparse.Namespace) -> str:
    kept = KEPT_ON_INTERRUPT.get(args.command)
    if kept is None:
        return "interrupted; nothing was written."
    return f"interrupted; {kept(args)}. Rerun the same command to continue."


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    match_hub_bars()
    try:
        with sigterm_as_interrupt():
            return args.handler(args)
    except BaseException as exc:
        found = one_line_error(
            exc, args, [((KeyboardInterrupt,), 130, _interrupted), *expected_errors()]
        )
        if found is None:
            raise
        # After Ctrl-C or SIGTERM on a command line, threads still at work (a download's
        # files in flight; daemon ones too: the exit joins a pool's threads) would hold the
        # exit until they finish; what is kept is on disk (a download resumes from its
        # bytes), so the process ends at once, on a line of its own after their progress bar.
        lingering = argv is None and isinstance(exc, KeyboardInterrupt)
        lingering = lingering and threading.active_count() > 1
        newline = "\n" if lingering else ""
        print(f"{newline}tdmpc2-data {args.command}: {found[1]}", file=sys.stderr)
        if lingering:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(found[0])
        return found[0]


if __name__ == "__main__":
    sys.exit(main())
