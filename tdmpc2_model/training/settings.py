"""The settings of a run, one dataclass per model command: `PretrainConfig` (``tdmpc2-pretrain``,
`lightning.pretrain`), `TrainConfig` and `FinetuneConfig` (``tdmpc2-train``,
``tdmpc2-finetune``; both `OnlineConfig`, what `online.train` reads) and `EvalConfig`
(``tdmpc2-eval``). Each field's `setting` holds its default, its help line and how its flag
parses: the one place these are written. `add_flags` turns fields into argparse flags and
`from_recipe` a YAML recipe into a dataclass; the model's hyperparameters stay in
`TDMPC2Config` (the ``config`` field).

A small generator over argparse rather than tyro or draccus: the CLIs' flag names, type
checks (``tdmpc2_data.flags``) and one-line errors stay exactly as users and tests know them.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tdmpc2_data import flags
from tdmpc2_model.core.config import SIZE_PRESETS, TDMPC2Config, parse_size
from tdmpc2_model.hub.repo import FINETUNE_SIZE
from tdmpc2_model.training.threads import THREADS_HELP

Settings = TypeVar("Settings")


def setting(
    default: Any, help: str, *, required: bool = False, minimum: int | None = None, **flag: Any
) -> Any:
    """A settings field: its default, its help line, whether it must be given and its least
    value (both checked after parsing, so that a recipe can give the value: `errors`), and
    extras of its flag (``type``, ``nargs``, ``const``, ``choices``, ``metavar``, ``action``)."""
    metadata = {"help": help, "required": required, "minimum": minimum, "flag": flag}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=metadata)
    return field(default=default, metadata=metadata)


def preset_size(value: str) -> str:
    """A ``--size``: a preset of `SIZE_PRESETS` (``5M`` or ``5``)."""
    try:
        return parse_size(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class Once(argparse.Action):
    """A flag that takes one value: given twice is an error (``eval --task a --task b`` used
    to evaluate b alone), pointing at the flag that takes several."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        given = getattr(namespace, self.dest, None)
        if given != parser.get_default(self.dest):  # a recipe's value is the default
            several = " (for several, use --tasks a,b)" if self.dest == "task" else ""
            parser.error(f"{option_string} given twice{several}")
        setattr(namespace, self.dest, values)


LOGGER_HELP = (
    "csv (always written: the run's record) and/or tensorboard (OUT/logs; needs the "
    "tensorboard extra), e.g. csv,tensorboard"
)
PUSH_HELP = (
    "upload OUT/final to this Hub model repo when the run ends, with a model card "
    "holding the run's settings and final evaluation"
)
SIZE_HELP = f"model size: {' '.join(SIZE_PRESETS)}"
CONFIG_HELP = "TDMPC2Config field, repeatable (e.g. --config num_samples=256)"
CONFIG_FLAG = {"action": "append", "metavar": "KEY=VALUE"}
STEPS_HELP = (
    "environment steps to reach, counted from the start of the run (one update per "
    "step after the seed phase)"
)


@dataclass
class PretrainConfig:
    """``tdmpc2-pretrain``: offline multitask pretraining with Lightning."""

    data: list[str] | str | None = setting(
        None, "dataset dir(s), hf://datasets/OWNER/NAME, mt80 or mt30", required=True
    )
    size: str = setting("5M", SIZE_HELP, type=preset_size)
    devices: int | str = setting("auto", "devices per node (int or auto)")
    num_nodes: int = setting(1, "nodes of the run", minimum=1)
    strategy: str = setting("auto", "distribution strategy", choices=["auto", "ddp", "fsdp"])
    precision: str = setting("32-true", "32-true or bf16-mixed")
    accelerator: str = setting("auto", "auto, cpu, gpu")
    max_steps: int = setting(
        100_000,
        "updates to reach, counted from the start of the run (one batch each; Lightning's "
        "max_steps)",
        minimum=1,
    )
    batch_size: int = setting(1024, "windows per batch (paper: 1024)", minimum=1)
    resume: str | None = setting(
        None,
        "continue the run in --out (alone, or 'auto'), or from a Lightning checkpoint file",
        nargs="?",
        const="auto",
        metavar="CKPT",
    )
    out: str = setting("runs/pretrain", "run directory")
    seed: int = setting(0, "random seed", type=flags.seed)
    cache_gb: float = setting(4.0, "RAM for decoded episodes")
    num_workers: int = setting(1, "loader threads", minimum=0)
    threads: int | None = setting(None, THREADS_HELP, minimum=1)
    checkpoint_every: int = setting(1000, "Lightning checkpoint period", minimum=1)
    log_every: int = setting(50, "log losses every N updates", minimum=1)
    logger: str = setting("csv", LOGGER_HELP, metavar="csv|tensorboard")
    push_to_hub: str | None = setting(None, PUSH_HELP, metavar="REPO")
    exclude_tasks: str | None = setting(
        None,
        "tasks kept in the model's table but never sampled, for later finetuning: a task set "
        "(mt80-heldout) or a comma list",
        type=flags.task_list,
    )
    eval_every: int = setting(
        0, "evaluate every N updates into the run's logs (0: never)", metavar="N", minimum=0
    )
    eval_tasks: str | None = setting(
        None, "task set or comma list to evaluate (default: the table)", type=flags.task_list
    )
    eval_episodes: int = setting(10, "episodes per task and evaluation", minimum=0)
    select: str | dict[str, Any] | None = setting(
        None,
        "train on these episodes only (recorded in the run): tasks=..,sources=..,"
        'last_fraction_of_source=..,min_return=..,top_fraction=.., e.g. "tasks=mt30,'
        'top_fraction=0.5" (see tdmpc2-data stats)',
        metavar="FILTERS",
    )
    config: dict[str, Any] = setting({}, CONFIG_HELP, **CONFIG_FLAG)


@dataclass
class OnlineConfig:
    """Online RL on one task (`online.train`): what ``tdmpc2-train`` and ``tdmpc2-finetune``
    share."""

    task: str | None = setting(None, "the task to train on (one)", action=Once, required=True)
    steps: int = setting(1_000_000, STEPS_HELP, minimum=1)
    out: str = setting("runs/train", "run directory")
    seed: int = setting(0, "random seed", type=flags.seed)
    logger: str = setting("csv", LOGGER_HELP, metavar="csv|tensorboard")
    push_to_hub: str | None = setting(None, PUSH_HELP, metavar="REPO")
    threads: int | None = setting(None, THREADS_HELP, minimum=1)
    seed_steps: int | None = setting(
        None, "random-action steps (default max(1000, 5 x T))", minimum=0
    )
    eval_every: int | None = setting(
        None,
        "evaluate every N steps and at the end (0: only at the end; default: a tenth of "
        "--steps, fewer for short runs; the plan is shown at the start)",
        minimum=0,
    )
    eval_episodes: int | None = setting(
        None,
        "episodes per evaluation (0: none; default: 1 to 10, as many as keep evaluation "
        "within a tenth of the run)",
        minimum=0,
    )
    eval_at_start: bool | None = setting(
        None, "also evaluate before training (default: for runs of 100000 steps or more)"
    )
    checkpoint_every: int = setting(50_000, "checkpoint every N steps", minimum=1)
    keep_checkpoints: int = setting(
        2,
        "keep the newest N checkpoints in OUT/checkpoints, delete older ones (0: keep all)",
        metavar="N",
        minimum=0,
    )
    batch_size: int | None = setting(
        None, f"update batch size (default {TDMPC2Config.batch_size})", minimum=1
    )
    device: str = setting("auto", "auto, cpu, cuda, cuda:1 ...")
    resume: bool = setting(False, "continue the run in --out (from its newest checkpoint)")
    config: dict[str, Any] = setting({}, CONFIG_HELP, **CONFIG_FLAG)


@dataclass
class TrainConfig(OnlineConfig):
    """``tdmpc2-train``: a single-task agent trained online from scratch."""

    size: str = setting("5M", SIZE_HELP, type=preset_size)


@dataclass
class FinetuneConfig(OnlineConfig):
    """``tdmpc2-finetune``: a pretrained model finetuned online on one task of its table."""

    task: str | None = setting(None, "the task to finetune on (one)", action=Once, required=True)
    steps: int = setting(20_000, STEPS_HELP, minimum=1)
    out: str = setting("runs/finetune", "run directory")
    checkpoint: str | None = setting(
        None,
        "Hub repo, save_pretrained dir, legacy .pt or alias (mt80-19M, walker-walk-2). Default: "
        f"a published {FINETUNE_SIZE} multitask model (runs on a laptop CPU): mt70-"
        f"{FINETUNE_SIZE} if it holds the task out (the paper's few-shot set-up; the task list "
        f"stored in multitask/mt70-{FINETUNE_SIZE}.pt, downloaded once, says), else mt80-"
        f"{FINETUNE_SIZE}. An mt70 model gets a new task-embedding row for a task it holds out",
    )
    revision: str | None = setting(
        None,
        "branch, tag or commit of a Hub checkpoint (or of the published repo, without "
        "--checkpoint)",
    )


@dataclass
class EvalConfig:
    """``tdmpc2-eval``: a checkpoint evaluated with MPPI planning on a task or a task set."""

    checkpoint: str | None = setting(
        None, "Hub repo, save_pretrained dir, legacy .pt or alias", required=True
    )
    revision: str | None = setting(None, "branch, tag or commit of a Hub checkpoint")
    task: str | None = setting(None, "one task", action=Once)
    tasks: str | None = setting(
        None, "a task set (mt80, mt30, mt80-heldout) or a comma list", type=flags.task_list
    )
    out: str | None = setting(None, "result directory of --tasks (required with it)")
    workers: int | None = setting(None, "processes for --tasks (default: one per core)", minimum=1)
    threads: int | None = setting(None, THREADS_HELP, minimum=1)
    episodes: int = setting(10, "episodes per task", minimum=1)
    video: str | None = setting(
        None,
        "directory for episode videos (mp4); without a display, "
        "MUJOCO_GL egl or else osmesa is used unless MUJOCO_GL is set",
    )
    seed: int = setting(0, "random seed", type=flags.seed)
    device: str = setting("auto", "auto, cpu, cuda ...")
    json: str | None = setting(None, "also write the results to this JSON file")
    config: dict[str, Any] = setting({}, CONFIG_HELP, **CONFIG_FLAG)


def flag(name: str) -> str:
    """The command-line flag of a field: ``max_steps`` -> ``--max-steps``."""
    return f"--{name.replace('_', '-')}"


def _inferred(hint: Any) -> dict[str, Any]:
    """How a field's type parses when its `setting` does not say: numbers are checked (a
    float must be finite), bools are switches, lists take one or more values."""
    kinds = set(typing.get_args(hint)) - {types.NoneType} or {hint}
    if kinds == {bool}:
        return {"action": argparse.BooleanOptionalAction if hint is not bool else "store_true"}
    if kinds == {int}:
        return {"type": int}
    if kinds == {float}:
        return {"type": flags.finite_float}
    if any(typing.get_origin(kind) is list for kind in kinds):
        return {"nargs": "+"}
    return {}


def add_flags(parser: argparse.ArgumentParser, defaults: Any) -> None:
    """One flag per field of the settings dataclass instance ``defaults``, its value the
    default (a recipe's values are defaults that flags override)."""
    hints = typing.get_type_hints(type(defaults))
    for f in dataclasses.fields(defaults):
        options = {**_inferred(hints[f.name]), **f.metadata["flag"]}
        default = getattr(defaults, f.name)
        shown = default is not None and default is not False and not isinstance(default, dict)
        help_line = f"{f.metadata['help']} (default: {default})" if shown else f.metadata["help"]
        value = [] if options.get("action") == "append" else default
        parser.add_argument(flag(f.name), dest=f.name, default=value, help=help_line, **options)


def from_recipe(kind: type[Settings], recipe: dict[str, Any], source: str) -> Settings:
    """A recipe's values (field names as keys, as ``cli.load_recipe`` gives them) as a
    ``kind`` instance; a key that is no field is an error naming ``source`` and the key."""
    names = [f.name for f in dataclasses.fields(kind)]  # type: ignore[arg-type]
    unknown = sorted(set(recipe) - set(names))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; known: {sorted(names)}.")
    return kind(**recipe)


def errors(settings: Any) -> list[str]:
    """What is missing or too small in ``settings``, one line each in flag terms."""
    found = []
    for f in dataclasses.fields(settings):
        value, least = getattr(settings, f.name), f.metadata["minimum"]
        if f.metadata["required"] and value is None:
            found.append(f"the following arguments are required: {flag(f.name)}")
        elif value is not None and least is not None and value < least:
            found.append(f"{flag(f.name)} {value}: must be >= {least}")
    return found
