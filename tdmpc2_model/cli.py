"""Model CLIs: `tdmpc2-pretrain`, `tdmpc2-finetune`, `tdmpc2-train`, `tdmpc2-eval`.

Thin wrappers over library functions (``tdmpc2_model.lightning.pretrain``,
``tdmpc2_model.online.train`` / ``evaluate``); each parser documents itself with examples.
Every command takes ``--recipe FILE.yaml`` or a packaged recipe's name (keys = flag names, ``config:`` = TDMPC2Config
fields); flags given on the command line override the recipe.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from tdmpc2_data.flags import finite_float, seed, task_list
from tdmpc2_data.versions import add_version_flag
from tdmpc2_model.malloc import retain_freed_memory

SIZES = ["1M", "5M", "19M", "48M", "317M"]


def _size(value: str) -> str:
    """Accept `5M` and `5`."""
    size = value.upper() if value.upper().endswith("M") else f"{value}M"
    if size not in SIZES:
        raise argparse.ArgumentTypeError(f"size must be one of {', '.join(SIZES)}; got {value!r}")
    return size


class _Once(argparse.Action):
    """A flag that takes one value: given twice is an error (``eval --task a --task b`` used
    to evaluate b alone), pointing at the flag that takes several."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        if getattr(namespace, self.dest, None) != parser.get_default(
            self.dest
        ):  # a recipe's is not
            several = " (for several, use --tasks a,b)" if self.dest == "task" else ""
            parser.error(f"{option_string} given twice{several}")
        setattr(namespace, self.dest, values)


def _parser(prog: str, description: str, examples: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=f"examples:\n{examples}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version_flag(p)
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved settings (recipe + flags), versions and command "
                        "line as recorded in OUT/run_config.json, and exit")  # fmt: skip
    p.add_argument(
        "--recipe",
        help="YAML recipe: a file or a packaged recipe's name (e.g. quickstart, "
        "pretrain-mt80-317M); flags override it",
    )
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="TDMPC2Config field, repeatable (e.g. --config num_samples=256)",
    )
    return p


def _logger_flag(p: argparse.ArgumentParser) -> None:
    """Where a training run reports: its loggers and, at the end, the Hub."""
    p.add_argument("--logger", default="csv", metavar="csv|tensorboard",
                   help="csv (always written: the run's record) and/or tensorboard "
                        "(OUT/logs; needs the tensorboard extra), e.g. csv,tensorboard")  # fmt: skip
    p.add_argument("--push-to-hub", metavar="REPO",
                   help="upload OUT/final to this Hub model repo when the run ends, with a "
                        "model card holding the run's settings and final evaluation")  # fmt: skip


def _check_repo_id(args: argparse.Namespace) -> None:
    """A malformed --push-to-hub is refused before the run, not after hours of training."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if args.push_to_hub:
        try:
            validate_repo_id(args.push_to_hub)
        except HFValidationError as exc:
            raise ValueError(f"--push-to-hub {args.push_to_hub}: {exc}") from None


def _push(args: argparse.Namespace, final: Path, evaluation: dict[str, Any] | None) -> None:
    """Upload the run's final model with the run's settings (its run record: resolved flags,
    versions) and final evaluation in its card."""
    from tdmpc2_model.agent import TDMPC2

    agent = TDMPC2.from_pretrained(final)
    settings = {k: v for k, v in args.record["settings"].items()
                if k != "push_to_hub" and v is not None}  # fmt: skip
    agent.hub_provenance = {**(agent.hub_provenance or {}), "run": settings,
                            "versions": args.record["versions"], "evaluation": evaluation}  # fmt: skip
    commit = agent.push_to_hub(args.push_to_hub)
    print(f"pushed {final} to {args.push_to_hub} (commit {commit[:12]})")


def _steps_flag(p: argparse.ArgumentParser, default: int) -> None:
    p.add_argument("--steps", type=int, default=default,
                   help="environment steps to reach, counted from the start of the run (one "
                        "update per step after the seed phase)")  # fmt: skip


def _threads_flag(p: argparse.ArgumentParser) -> None:
    from tdmpc2_model.threads import THREADS_HELP

    p.add_argument("--threads", type=int, help=THREADS_HELP)


def _set_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads`` before any torch work of the command."""
    from tdmpc2_model.threads import set_torch_threads

    set_torch_threads(args.threads)


def _online_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by the online commands (train, finetune)."""
    _logger_flag(p)
    _threads_flag(p)
    p.add_argument("--seed-steps", type=int, help="random-action steps (default max(1000, 5 x T))")
    p.add_argument("--eval-every", type=int,
                   help="evaluate every N steps and at the end (0: only at the end; default: a "
                        "tenth of --steps, fewer for short runs; the plan is shown at the start)")  # fmt: skip
    p.add_argument("--eval-episodes", type=int,
                   help="episodes per evaluation (0: none; default: 1 to 10, as many as keep "
                        "evaluation within a tenth of the run)")  # fmt: skip
    p.add_argument("--eval-at-start", action=argparse.BooleanOptionalAction,
                   help="also evaluate before training (default: for runs of 100000 steps or "
                        "more)")  # fmt: skip
    p.add_argument("--checkpoint-every", type=int, default=50_000, help="checkpoint every N steps")
    p.add_argument("--keep-checkpoints", type=int, default=2, metavar="N",
                   help="keep the newest N checkpoints in OUT/checkpoints, delete older ones "
                        "(0: keep all; default 2)")  # fmt: skip
    p.add_argument("--batch-size", type=int, help="update batch size (default 256)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (from its newest checkpoint)")  # fmt: skip


def packaged_recipes() -> dict[str, Path]:
    """The recipes shipped in the package (``tdmpc2_model/recipes``), by name without ``.yaml``."""
    folder = Path(str(resources.files("tdmpc2_model") / "recipes"))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def resolve_recipe(spec: str | Path) -> Path:
    """A recipe file: ``spec`` itself if it exists, else the packaged recipe of that name
    (``quickstart``, ``pretrain-mt80-317M.yaml`` or ``recipes/pretrain-mt80-317M.yaml``), so
    the README's commands work from an installed wheel as from a checkout."""
    path = Path(spec)
    if path.is_file():
        return path
    recipes = packaged_recipes()
    if path.parent in (Path("."), Path("recipes")) and path.name.removesuffix(".yaml") in recipes:
        return recipes[path.name.removesuffix(".yaml")]
    raise FileNotFoundError(
        f"--recipe {spec}: no such file, and no packaged recipe of that name (packaged: "
        f"{', '.join(recipes)})."
    )


def load_recipe(spec: str | Path) -> dict[str, Any]:
    """A YAML recipe (a file or a packaged recipe's name, see ``resolve_recipe``) as a plain
    dict (OmegaConf: ``${...}`` interpolation is resolved)."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = resolve_recipe(spec)
    try:
        recipe = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (yaml.YAMLError, OmegaConfBaseException) as exc:  # unsafe tags are errors too
        raise ValueError(f"{path}: not a valid recipe ({' '.join(str(exc).split())}).") from None
    if not isinstance(recipe, dict):
        raise ValueError(f"{path}: a recipe is a mapping of flag names to values.")
    return {str(k).replace("-", "_"): v for k, v in recipe.items()}


#: the smallest value each numeric flag takes (where a command has it); the parser refuses
#: less before anything loads, instead of a default taking over (``--batch-size 0``) or a
#: traceback from deep inside (``--checkpoint-every -5``, ``--devices 0``)
FLAG_MINIMUMS = {
    "steps": 1, "max_steps": 1, "batch_size": 1, "checkpoint_every": 1, "log_every": 1,
    "num_nodes": 1, "episodes": 1, "workers": 1, "eval_every": 0, "eval_episodes": 0,
    "keep_checkpoints": 0, "seed_steps": 0, "num_workers": 0, "threads": 1,
}  # fmt: skip


def _check_minimums(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for dest, least in FLAG_MINIMUMS.items():
        value = getattr(args, dest, None)
        if value is not None and value < least:
            parser.error(f"--{dest.replace('_', '-')} {value}: must be >= {least}")
    devices = getattr(args, "devices", None)
    if (
        devices is not None
        and str(devices).lstrip("-").isdigit()
        and (int(devices) == 0 or int(devices) < -1)
    ):
        parser.error(f"--devices {devices}: must be >= 1, -1 (all) or auto")
    if getattr(args, "cache_gb", 1) <= 0:
        parser.error(f"--cache-gb {args.cache_gb}: must be > 0")


def _parse(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, required: Sequence[str] = ()
) -> argparse.Namespace:
    """Flags over the ``--recipe`` values; ``args.config`` becomes a dict of config fields."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe")
    known, _ = pre.parse_known_args(argv)
    config: dict[str, Any] = {}
    if known.recipe:
        try:
            recipe = load_recipe(known.recipe)
        except (OSError, ValueError) as exc:
            parser.error(str(exc))
        config = dict(recipe.pop("config", None) or {})
        dests = {a.dest for a in parser._actions} - {"help", "recipe", "config"}
        unknown = sorted(set(recipe) - dests)
        if unknown:
            parser.error(f"{known.recipe}: unknown key(s) {unknown}; known: {sorted(dests)}.")
        parser.set_defaults(**recipe)
    args = parser.parse_args(argv)
    for item in args.config:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--config {item!r}: expected KEY=VALUE.")
        import yaml

        try:
            config[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:  # an unsafe tag, an unclosed bracket ...
            parser.error(f"--config {item!r}: not a YAML value ({' '.join(str(exc).split())})")
    from tdmpc2_model.config import TDMPC2Config

    try:
        TDMPC2Config.check_fields(config)  # bogus=1, lr=abc: here, not deep inside training
    except ValueError as exc:
        parser.error(str(exc))
    args.config = config
    missing = [f"--{n.replace('_', '-')}" for n in required if getattr(args, n, None) is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    _check_minimums(parser, args)
    from tdmpc2_model.run_record import command_record, print_record

    args.record = command_record(parser.prog, argv, vars(args))
    if args.print_config:
        print_record(args.record)
        parser.exit(0)
    return args


def expected_errors() -> Any:
    """The data CLI's table of expected errors (``tdmpc2_data.cli.expected_errors``) with the
    model commands' own rows in front: Ctrl-C or SIGTERM (what was kept), a NaN/Inf loss, a
    file that is not a checkpoint (a refused pickle), Lightning's refusals of devices."""
    import pickle

    from tdmpc2_data.cli import expected_errors as data_errors
    from tdmpc2_data.cli import message_line
    from tdmpc2_model.update import NonFiniteLossError

    rows = [
        ((KeyboardInterrupt,), 130, _interrupted),
        ((NonFiniteLossError,), 2, message_line),  # which update, which loss
        ((pickle.UnpicklingError,), 2, _unpickling),  # the --resume / --checkpoint file
    ]
    lightning = sys.modules.get("lightning.fabric.utilities.exceptions")  # only if imported
    if lightning is not None:  # e.g. --devices 3 on a 1-GPU machine
        rows.append(((lightning.MisconfigurationException,), 2, message_line))
    return rows + data_errors()


def _interrupted(exc: BaseException, args: argparse.Namespace) -> str:
    """Ctrl-C or SIGTERM: what was kept and what continues the command (``tdmpc2-eval``
    has no ``--resume``; a task set's message, ``TaskSetInterrupted``, says what it kept)."""
    if str(exc):
        return str(exc)
    if hasattr(args, "resume"):
        return "interrupted; rerun with --resume to continue."
    return "interrupted; nothing was written."


def _unpickling(exc: BaseException, args: argparse.Namespace) -> str:
    path = next((v for k in ("resume", "checkpoint") if isinstance(v := getattr(args, k, None), str)),
                "the checkpoint")  # fmt: skip
    lines = str(exc).splitlines() or [type(exc).__name__]
    detail = next((x.strip() for x in lines if "Unsupported" in x), lines[0].strip())
    return f"error: {path}: not a checkpoint this command reads; refused to unpickle it ({detail})"


def _run(prog: str, body: Callable[[], None], args: argparse.Namespace) -> int:
    """Run a command; an expected error (``expected_errors``) ends with one line naming the
    file or flag and exit code 2 (130 for Ctrl-C); anything else keeps its traceback."""
    from tdmpc2_data.cli import one_line_error, sigterm_as_interrupt
    from tdmpc2_data.progress import match_hub_bars

    try:
        match_hub_bars()
        retain_freed_memory()  # faster CPU planning and updates (see malloc.py)
        with sigterm_as_interrupt():
            body()
    except BaseException as exc:
        found = one_line_error(exc, args, expected_errors())
        if found is None:
            raise
        print(f"{prog}: {found[1]}", file=sys.stderr)
        return found[0]
    return 0


def _device(name: str) -> str:
    """``--device``: auto (cuda when available), or a device this torch build can use."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r}: not a device name (cpu, cuda, cuda:1 ...).") from None
    if device.type == "cuda":
        build = "a CPU-only build" if torch.version.cuda is None else "no CUDA GPU visible"
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise ValueError(
                f"--device {name}: not available (torch {torch.__version__}: "
                f"{build if count == 0 else f'{count} GPU(s)'}); use --device cpu or auto."
            )
    return name


def pretrain_parser() -> argparse.ArgumentParser:
    p = _parser(
        "tdmpc2-pretrain",
        "Pretrain a multitask world model offline on a shard dataset (Lightning). The model's "
        "task table and padded widths are the dataset's. Writes OUT/final (save_pretrained), "
        "Lightning checkpoints in OUT/lightning and CSV logs in OUT/logs.",
        "  tdmpc2-pretrain --size 1M --data data/quickstart --max-steps 200 --out runs/pt\n"
        "  tdmpc2-pretrain --size 1M --data data/quickstart --max-steps 400 --out runs/pt "
        "--resume\n"
        "  tdmpc2-pretrain --recipe recipes/pretrain-mt80-317M.yaml --devices 8\n"
        "  tdmpc2-pretrain --size 317M --data mt80 --devices 8 --strategy ddp "
        "--precision bf16-mixed",
    )
    p.add_argument("--size", type=_size, default="5M", help="model size: 1M 5M 19M 48M 317M")
    p.add_argument(
        "--data", nargs="+", help="dataset dir(s), hf://datasets/OWNER/NAME, mt80 or mt30"
    )
    p.add_argument("--devices", default="auto", help="devices per node (int or auto)")
    p.add_argument("--num-nodes", type=int, default=1)
    p.add_argument("--strategy", default="auto", choices=["auto", "ddp", "fsdp"])
    p.add_argument("--precision", default="32-true", help="32-true or bf16-mixed")
    p.add_argument("--accelerator", default="auto", help="auto, cpu, gpu")
    p.add_argument("--max-steps", type=int, default=100_000,
                   help="updates to reach, counted from the start of the run (one batch each; "
                        "Lightning's max_steps)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=1024, help="windows per batch (paper: 1024)")
    p.add_argument("--resume", nargs="?", const="auto", metavar="CKPT",
                   help="continue the run in --out (alone, or 'auto'), or from a Lightning "
                        "checkpoint file")  # fmt: skip
    p.add_argument("--out", default="runs/pretrain")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--cache-gb", type=finite_float, default=4.0, help="RAM for decoded episodes")
    p.add_argument("--num-workers", type=int, default=1, help="loader threads")
    _threads_flag(p)
    p.add_argument("--checkpoint-every", type=int, default=1000, help="Lightning checkpoint period")
    p.add_argument("--log-every", type=int, default=50, help="log losses every N updates")
    _logger_flag(p)
    p.add_argument(
        "--exclude-tasks",
        type=task_list,
        help="tasks kept in the model's table but never sampled, for later finetuning: a "
        "task set (mt80-heldout) or a comma list",
    )
    p.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="evaluate every N updates into the run's logs (0: never)")  # fmt: skip
    p.add_argument(
        "--eval-tasks",
        type=task_list,
        help="task set or comma list to evaluate (default: the table)",
    )
    p.add_argument("--eval-episodes", type=int, default=10, help="episodes per task and evaluation")
    p.add_argument(
        "--select",
        metavar="FILTERS",
        help="train on these episodes only (recorded in the run): tasks=..,sources=..,"
        "last_fraction_of_source=..,min_return=..,top_fraction=.., e.g. "
        '"tasks=mt30,top_fraction=0.5" (see tdmpc2-data stats)',
    )
    return p


def finetune_parser() -> argparse.ArgumentParser:
    from tdmpc2_model.model_repo import FINETUNE_SIZE

    p = _parser(
        "tdmpc2-finetune",
        "Finetune a pretrained world model online on one task of its task table (a multitask "
        "model: any task of its table, including held-out tasks it has rows for; a single-task "
        "model: its own task). Writes the replay buffer as shards (OUT/buffer), checkpoints "
        "(OUT/checkpoints), OUT/final and CSV logs in OUT/logs.",
        "  tdmpc2-finetune --task door-open --steps 20000   # a published 5M model (below)\n"
        "  tdmpc2-finetune --task door-open --checkpoint runs/pretrain/final --steps 20000\n"
        "  tdmpc2-finetune --task walker-walk --checkpoint mt80-19M --out runs/ft --resume\n"
        "  tdmpc2-finetune --recipe recipes/finetune-door-open.yaml",
    )
    p.add_argument("--task", action=_Once, help="the task to finetune on (one)")
    p.add_argument(
        "--checkpoint",
        help=f"Hub repo, save_pretrained dir, legacy .pt or alias (mt80-19M, walker-walk-2). "
        f"Default: a published {FINETUNE_SIZE} multitask model (runs on a laptop CPU): "
        f"mt70-{FINETUNE_SIZE} if it holds the task out (the paper's few-shot set-up; the "
        f"task list stored in multitask/mt70-{FINETUNE_SIZE}.pt, downloaded once, says), "
        f"else mt80-{FINETUNE_SIZE}. An mt70 model gets a new task-embedding row for a task "
        "it holds out",
    )
    p.add_argument("--revision", help="branch, tag or commit of a Hub checkpoint (or of the "
                   "published repo, without --checkpoint)")  # fmt: skip
    _steps_flag(p, default=20_000)
    p.add_argument("--out", default="runs/finetune")
    p.add_argument("--seed", type=seed, default=0)
    _online_flags(p)
    return p


def train_parser() -> argparse.ArgumentParser:
    p = _parser(
        "tdmpc2-train",
        "Train a single-task agent online from scratch; its replay buffer is saved as shards "
        "(OUT/buffer), with checkpoints (OUT/checkpoints), OUT/final and CSV logs in OUT/logs.",
        "  tdmpc2-train --task walker-walk --steps 100000\n"
        "  tdmpc2-train --task mw-reach --size 1M --steps 500 --seed-steps 200 --out runs/reach\n"
        "  tdmpc2-train --task mw-reach --steps 1000 --out runs/reach --resume",
    )
    p.add_argument("--task", action=_Once, help="the task to train on (one)")
    _steps_flag(p, default=1_000_000)
    p.add_argument("--size", type=_size, default="5M")
    p.add_argument("--out", default="runs/train")
    p.add_argument("--seed", type=seed, default=0)
    _online_flags(p)
    return p


def eval_parser() -> argparse.ArgumentParser:
    p = _parser(
        "tdmpc2-eval",
        "Evaluate a checkpoint with MPPI planning (eval mode) on a task (per-episode returns, "
        "mean return and success rate) or on a task set (per task and the paper's mean "
        "normalized score, in OUT/eval.json and OUT/eval.csv; a rerun skips finished tasks).",
        "  tdmpc2-eval --checkpoint mt80-5M --task walker-walk --episodes 10\n"
        "  tdmpc2-eval --checkpoint mt80-5M --tasks mt80 --episodes 10 --out runs/eval-mt80\n"
        "  tdmpc2-eval --checkpoint mt80-5M --tasks walker-walk,mw-reach --workers 2 --out ev\n"
        "  tdmpc2-eval --checkpoint runs/train/final --task mw-reach --episodes 2 "
        "--video videos/\n"
        "  tdmpc2-eval --checkpoint runs/ft/final --task door-open --json eval.json",
    )
    p.add_argument("--checkpoint", help="Hub repo, save_pretrained dir, legacy .pt or alias")
    p.add_argument("--revision", help="branch, tag or commit of a Hub checkpoint")
    p.add_argument("--task", action=_Once, help="one task")
    p.add_argument(
        "--tasks", type=task_list, help="a task set (mt80, mt30, mt80-heldout) or a comma list"
    )
    p.add_argument("--out", help="result directory of --tasks (required with it)")
    p.add_argument("--workers", type=int, help="processes for --tasks (default: one per core)")
    _threads_flag(p)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--video", help="directory for episode videos (mp4); without a display, "
                   "MUJOCO_GL egl or else osmesa is used unless MUJOCO_GL is set")  # fmt: skip
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda ...")
    p.add_argument("--json", help="also write the results to this JSON file")
    return p


def _load(
    checkpoint: str, task: str | None, config: dict[str, Any], device: str, revision: str | None
):
    """A checkpoint as an agent; a legacy single-task .pt file needs the task for its dims."""
    from tdmpc2_model.agent import TDMPC2

    legacy = Path(checkpoint).suffix in (".pt", ".pth")
    task = task if legacy else None
    agent = TDMPC2.from_pretrained(checkpoint, revision=revision, task=task, **config)
    return agent.to(device)


def _online_config(args: argparse.Namespace) -> dict[str, Any]:
    """``--config`` fields with ``--batch-size`` (when given) over them."""
    return {**args.config, **({} if args.batch_size is None else {"batch_size": args.batch_size})}


def _online(args: argparse.Namespace, agent: Any, training_data: str) -> None:
    from tdmpc2_model.online import train

    _check_repo_id(args)
    result = train(
        agent,
        args.task,
        args.out,
        args.steps,
        seed=args.seed,
        seed_steps=args.seed_steps,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        eval_at_start=args.eval_at_start,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        resume=args.resume,
        training_data=training_data,
        loggers=args.logger,
        record=args.record,
    )
    print(f"{result.steps} steps, {result.episodes} episodes; model in {result.final}")
    if result.evaluation is not None:
        print(result.evaluation.table())
    if args.push_to_hub:
        evaluation = result.evaluation.summary() if result.evaluation is not None else None
        _push(args, result.final, evaluation)


def pretrain_main(argv: Sequence[str] | None = None) -> int:
    args = _parse(pretrain_parser(), argv, required=["data"])

    def body() -> None:
        from tdmpc2_data.tasks import resolve_tasks
        from tdmpc2_model.lightning import pretrain

        _check_repo_id(args)
        _set_threads(args)
        devices = int(args.devices) if str(args.devices).isdigit() else args.devices
        final = pretrain(
            args.data,
            args.out,
            size=args.size,
            max_steps=args.max_steps,
            batch_size=args.batch_size,
            devices=devices,
            num_nodes=args.num_nodes,
            strategy=args.strategy,
            precision=args.precision,
            accelerator=args.accelerator,
            resume=args.resume,
            seed=args.seed,
            cache_bytes=int(args.cache_gb * (1 << 30)),
            num_workers=args.num_workers,
            checkpoint_every=args.checkpoint_every,
            log_every=args.log_every,
            config=args.config,
            exclude_tasks=resolve_tasks(args.exclude_tasks) if args.exclude_tasks else (),
            eval_every=args.eval_every,
            eval_tasks=resolve_tasks(args.eval_tasks) if args.eval_tasks else None,
            eval_episodes=args.eval_episodes,
            select=args.select,
            loggers=args.logger,
            record=args.record,
        )
        if final is not None:  # rank 0
            print(f"model in {final}")
            if args.push_to_hub:
                _push(args, final, None)

    return _run("tdmpc2-pretrain", body, args)


def finetune_main(argv: Sequence[str] | None = None) -> int:
    args = _parse(finetune_parser(), argv, required=["task"])

    def body() -> None:
        from tdmpc2_data.tasks import resolve_task_name

        _set_threads(args)
        config = _online_config(args)
        checkpoint = args.checkpoint
        if checkpoint is None:
            from tdmpc2_model.model_repo import finetune_checkpoint

            checkpoint, why = finetune_checkpoint(args.task, args.revision)
            print(f"no --checkpoint: finetuning {checkpoint} ({why})")
        agent = _load(checkpoint, args.task, config, _device(args.device), args.revision)
        task = resolve_task_name(args.task)
        if checkpoint.lower().startswith("mt70-") and task not in agent.cfg.task_names:
            agent = agent.with_task(task)
            print(f"{task} added to {checkpoint}'s task table as task {agent.cfg.num_tasks - 1} "
                  "(a new task-embedding row)")  # fmt: skip
        data = f"{checkpoint}, finetuned online on {args.task} ({args.steps} steps)"
        _online(args, agent, data)

    return _run("tdmpc2-finetune", body, args)


def train_main(argv: Sequence[str] | None = None) -> int:
    args = _parse(train_parser(), argv, required=["task"])

    def body() -> None:
        _set_threads(args)
        import torch

        from tdmpc2_model.agent import TDMPC2
        from tdmpc2_model.config import TDMPC2Config

        config = _online_config(args)
        for key, flag in (("size", "--size"), ("tasks", "--task")):
            if key in config:
                raise ValueError(f"--config {key}=...: set it with {flag}.")
        torch.manual_seed(args.seed)
        agent = TDMPC2(TDMPC2Config(size=args.size, tasks=args.task, **config))
        _online(args, agent.to(_device(args.device)), f"online RL on {args.task} (tdmpc2-train)")

    return _run("tdmpc2-train", body, args)


def eval_main(argv: Sequence[str] | None = None) -> int:
    parser = eval_parser()
    args = _parse(parser, argv, required=["checkpoint"])
    if (args.task is None) == (args.tasks is None):
        parser.error("give --task (one task) or --tasks (a task set), not both or neither")
    if args.tasks is not None and args.out is None:
        parser.error("--tasks needs --out DIR for eval.json, eval.csv and per-task results")

    def body() -> None:
        _set_threads(args)
        import torch

        from tdmpc2_data.atomic import write_text_atomic
        from tdmpc2_model.evaluation import evaluate
        from tdmpc2_model.taskset_eval import check_dir_writable, check_file_writable

        if args.tasks is not None:
            return _eval_tasks(args)
        if args.json:  # before the download and the evaluation, not after them
            check_file_writable(Path(args.json), "--json")
        if args.video:
            from tdmpc2_data.envs.gl import prepare_rendering

            check_dir_writable(Path(args.video), "--video", "videos")
            prepare_rendering()  # before MuJoCo's import, and before loading the model
        torch.manual_seed(args.seed)
        agent = _load(args.checkpoint, args.task, args.config, _device(args.device), args.revision)
        result = evaluate(agent, args.task, args.episodes, video_dir=args.video, seed=args.seed)
        print(result.table())
        if args.json:
            summary = {**result.summary(), "checkpoint": args.checkpoint, "rows": result.episodes}
            write_text_atomic(Path(args.json), json.dumps(summary, indent=2) + "\n")

    return _run("tdmpc2-eval", body, args)


def _eval_tasks(args: argparse.Namespace) -> None:
    from tdmpc2_data.tasks import resolve_tasks
    from tdmpc2_model.taskset_eval import check_writable, evaluate_tasks

    names = resolve_tasks(args.tasks)
    check_writable(Path(args.out))  # before a download and hours of evaluation
    one = names[0] if len(names) == 1 else None  # a legacy single-task .pt needs its task
    agent = _load(args.checkpoint, one, args.config, _device(args.device), args.revision)
    result = evaluate_tasks(agent, names, args.episodes, workers=args.workers, seed=args.seed,
                            out=args.out, checkpoint=args.checkpoint)  # fmt: skip
    print(result.table())
    print(f"results in {args.out}/eval.json and eval.csv")
