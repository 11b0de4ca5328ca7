"""Model CLIs: `tdmpc2-pretrain`, `tdmpc2-finetune`, `tdmpc2-train`, `tdmpc2-eval`.

Thin wrappers over library functions (``tdmpc2_model.training.pretrain.pretrain``,
``tdmpc2_model.training.online.train`` / ``evaluate``); each parser is generated from its settings
dataclass (``training/settings.py``) and documents itself with examples. Every command takes
``--recipe FILE.yaml`` or a packaged recipe's name (keys = field names, ``config:`` =
TDMPC2Config fields); flags given on the command line override the recipe.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from importlib import resources
from pathlib import Path
from typing import Any

from tdmpc2_data.versions import add_version_flag
from tdmpc2_model.core.config import TDMPC2Config
from tdmpc2_model.evaluation.malloc import retain_freed_memory
from tdmpc2_model.training.settings import (
    EvalConfig,
    FinetuneConfig,
    OnlineConfig,
    PretrainConfig,
    TrainConfig,
    add_flags,
    errors,
    from_recipe,
)
from tdmpc2_model.training.threads import set_torch_threads


class SettingsParser(argparse.ArgumentParser):
    """The parser of one command: a flag per field of its ``settings`` dataclass
    (``training/settings.py``), ``--recipe``, ``--print-config`` and ``--version``."""

    def __init__(self, settings: type, prog: str, description: str, examples: str) -> None:
        super().__init__(
            prog=prog,
            description=description,
            epilog=f"examples:\n{examples}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        self.settings = settings
        add_version_flag(self)
        self.add_argument("--print-config", action="store_true",
                          help="print the resolved settings (recipe + flags), versions and "
                               "command line as recorded in OUT/run_config.json, and exit")  # fmt: skip
        self.add_argument(
            "--recipe",
            help="YAML recipe: a file or a packaged recipe's name (e.g. quickstart, "
            "pretrain-mt80-317M); flags override it",
        )
        add_flags(self, settings())


def _check_repo_id(settings: Any) -> None:
    """A malformed --push-to-hub is refused before the run, not after hours of training."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if settings.push_to_hub:
        try:
            validate_repo_id(settings.push_to_hub)
        except HFValidationError as exc:
            raise ValueError(f"--push-to-hub {settings.push_to_hub}: {exc}") from None


def _push(
    settings: Any, record: dict[str, Any], final: Path, evaluation: dict[str, Any] | None
) -> None:
    """Upload the run's final model with the run's settings (its run record: resolved flags,
    versions) and final evaluation in its card."""
    from tdmpc2_model.agent import TDMPC2

    agent = TDMPC2.from_pretrained(final)
    run = {k: v for k, v in record["settings"].items() if k != "push_to_hub" and v is not None}
    agent.hub_provenance = {**(agent.hub_provenance or {}), "run": run,
                            "versions": record["versions"], "evaluation": evaluation}  # fmt: skip
    commit = agent.push_to_hub(settings.push_to_hub)
    print(f"pushed {final} to {settings.push_to_hub} (commit {commit[:12]})")


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


def _check_values(parser: SettingsParser, settings: Any) -> None:
    """Missing and too small values (``training.settings.errors``) and the odd ones of pretraining,
    refused before anything loads, instead of a default taking over (``--batch-size 0``) or a
    traceback from deep inside (``--checkpoint-every -5``, ``--devices 0``)."""
    for line in errors(settings):
        parser.error(line)
    devices = getattr(settings, "devices", None)
    if (
        devices is not None
        and str(devices).lstrip("-").isdigit()
        and (int(devices) == 0 or int(devices) < -1)
    ):
        parser.error(f"--devices {devices}: must be >= 1, -1 (all) or auto")
    if getattr(settings, "cache_gb", 1) <= 0:
        parser.error(f"--cache-gb {settings.cache_gb}: must be > 0")


def _config_items(parser: SettingsParser, items: Sequence[str]) -> dict[str, Any]:
    """``--config KEY=VALUE`` flags as TDMPC2Config fields (values are YAML)."""
    import yaml

    config = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--config {item!r}: expected KEY=VALUE.")
        try:
            config[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:  # an unsafe tag, an unclosed bracket ...
            parser.error(f"--config {item!r}: not a YAML value ({' '.join(str(exc).split())})")
    return config


def _parse(parser: SettingsParser, argv: Sequence[str] | None) -> tuple[Any, dict[str, Any]]:
    """The command's settings (flags over the ``--recipe`` values over the defaults;
    ``--config`` items over the recipe's ``config``) and its record, the run's entry for
    ``OUT/run_config.json``; ``--print-config`` prints the record and exits."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe")
    known, _ = pre.parse_known_args(argv)
    defaults = parser.settings()
    if known.recipe:
        try:
            defaults = from_recipe(parser.settings, load_recipe(known.recipe), known.recipe)
        except (OSError, ValueError) as exc:
            parser.error(str(exc))
        parser.set_defaults(**{k: v for k, v in asdict(defaults).items() if k != "config"})
    args = parser.parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in fields(parser.settings)}
    values["config"] = {**(defaults.config or {}), **_config_items(parser, args.config)}
    settings = parser.settings(**values)
    try:
        TDMPC2Config.check_fields(settings.config)  # bogus=1, lr=abc: here, not deep inside
    except ValueError as exc:
        parser.error(str(exc))
    _check_values(parser, settings)
    from tdmpc2_model.outputs.run_record import command_record, print_record

    record = command_record(parser.prog, argv, asdict(settings))
    if args.print_config:
        print_record(record)
        parser.exit(0)
    return settings, record


def expected_errors() -> Any:
    """The shared table of expected errors (``tdmpc2_data.errors.expected_errors``) with the
    model commands' own rows in front: Ctrl-C or SIGTERM (what was kept), a NaN/Inf loss, a
    file that is not a checkpoint (a refused pickle), Lightning's refusals of devices."""
    import pickle

    from tdmpc2_data.errors import expected_errors as data_errors
    from tdmpc2_data.errors import message_line
    from tdmpc2_model.core.update import NonFiniteLossError

    rows = [
        ((KeyboardInterrupt,), 130, _interrupted),
        ((NonFiniteLossError,), 2, message_line),  # which update, which loss
        ((pickle.UnpicklingError,), 2, _unpickling),  # the --resume / --checkpoint file
    ]
    lightning = sys.modules.get("lightning.fabric.utilities.exceptions")  # only if imported
    if lightning is not None:  # e.g. --devices 3 on a 1-GPU machine
        rows.append(((lightning.MisconfigurationException,), 2, message_line))
    return rows + data_errors()


def _interrupted(exc: BaseException, settings: Any) -> str:
    """Ctrl-C or SIGTERM: what was kept and what continues the command (``tdmpc2-eval``
    has no ``--resume``; a task set's message, ``TaskSetInterrupted``, says what it kept)."""
    if str(exc):
        return str(exc)
    if hasattr(settings, "resume"):
        return "interrupted; rerun with --resume to continue."
    return "interrupted; nothing was written."


def _unpickling(exc: BaseException, settings: Any) -> str:
    path = next((v for k in ("resume", "checkpoint")
                 if isinstance(v := getattr(settings, k, None), str)), "the checkpoint")  # fmt: skip
    lines = str(exc).splitlines() or [type(exc).__name__]
    detail = next((x.strip() for x in lines if "Unsupported" in x), lines[0].strip())
    return f"error: {path}: not a checkpoint this command reads; refused to unpickle it ({detail})"


def _run(prog: str, body: Callable[[], None], settings: Any) -> int:
    """Run a command; an expected error (``expected_errors``) ends with one line naming the
    file or flag and exit code 2 (130 for Ctrl-C); anything else keeps its traceback."""
    from tdmpc2_data.errors import one_line_error, sigterm_as_interrupt
    from tdmpc2_data.progress import match_hub_bars

    try:
        match_hub_bars()
        retain_freed_memory()  # faster CPU planning and updates (see malloc.py)
        with sigterm_as_interrupt():
            body()
    except BaseException as exc:
        found = one_line_error(exc, settings, expected_errors())
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


def pretrain_parser() -> SettingsParser:
    return SettingsParser(
        PretrainConfig,
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


def finetune_parser() -> SettingsParser:
    return SettingsParser(
        FinetuneConfig,
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


def train_parser() -> SettingsParser:
    return SettingsParser(
        TrainConfig,
        "tdmpc2-train",
        "Train a single-task agent online from scratch; its replay buffer is saved as shards "
        "(OUT/buffer), with checkpoints (OUT/checkpoints), OUT/final and CSV logs in OUT/logs.",
        "  tdmpc2-train --task walker-walk --steps 100000\n"
        "  tdmpc2-train --task mw-reach --size 1M --steps 500 --seed-steps 200 --out runs/reach\n"
        "  tdmpc2-train --task mw-reach --steps 1000 --out runs/reach --resume",
    )


def eval_parser() -> SettingsParser:
    return SettingsParser(
        EvalConfig,
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


def _load(
    checkpoint: str, task: str | None, config: dict[str, Any], device: str, revision: str | None
):
    """A checkpoint as an agent; a legacy single-task .pt file needs the task for its dims."""
    from tdmpc2_model.agent import TDMPC2

    legacy = Path(checkpoint).suffix in (".pt", ".pth")
    task = task if legacy else None
    agent = TDMPC2.from_pretrained(checkpoint, revision=revision, task=task, **config)
    return agent.to(device)


def _online_config(settings: OnlineConfig) -> dict[str, Any]:
    """``--config`` fields with ``--batch-size`` (when given) over them."""
    batch = {} if settings.batch_size is None else {"batch_size": settings.batch_size}
    return {**settings.config, **batch}


def _online(settings: OnlineConfig, record: dict[str, Any], agent: Any, training_data: str) -> None:
    from tdmpc2_model.training.online import train

    _check_repo_id(settings)
    result = train(agent, settings, training_data=training_data, record=record)
    print(f"{result.steps} steps, {result.episodes} episodes; model in {result.final}")
    if result.evaluation is not None:
        print(result.evaluation.table())
    if settings.push_to_hub:
        evaluation = result.evaluation.summary() if result.evaluation is not None else None
        _push(settings, record, result.final, evaluation)


def pretrain_main(argv: Sequence[str] | None = None) -> int:
    settings, record = _parse(pretrain_parser(), argv)

    def body() -> None:
        from tdmpc2_model.training.pretrain import pretrain

        _check_repo_id(settings)
        set_torch_threads(settings.threads)
        final = pretrain(settings, record=record)
        if final is not None:  # rank 0
            print(f"model in {final}")
            if settings.push_to_hub:
                _push(settings, record, final, None)

    return _run("tdmpc2-pretrain", body, settings)


def finetune_main(argv: Sequence[str] | None = None) -> int:
    settings, record = _parse(finetune_parser(), argv)

    def body() -> None:
        from tdmpc2_data.tasks import resolve_task_name

        set_torch_threads(settings.threads)
        config = _online_config(settings)
        checkpoint = settings.checkpoint
        if checkpoint is None:
            from tdmpc2_model.hub.repo import finetune_checkpoint

            checkpoint, why = finetune_checkpoint(settings.task, settings.revision)
            print(f"no --checkpoint: finetuning {checkpoint} ({why})")
        device = _device(settings.device)
        agent = _load(checkpoint, settings.task, config, device, settings.revision)
        task = resolve_task_name(settings.task)
        if checkpoint.lower().startswith("mt70-") and task not in agent.cfg.task_names:
            agent = agent.with_task(task)
            print(f"{task} added to {checkpoint}'s task table as task {agent.cfg.num_tasks - 1} "
                  "(a new task-embedding row)")  # fmt: skip
        data = f"{checkpoint}, finetuned online on {settings.task} ({settings.steps} steps)"
        _online(settings, record, agent, data)

    return _run("tdmpc2-finetune", body, settings)


def train_main(argv: Sequence[str] | None = None) -> int:
    settings, record = _parse(train_parser(), argv)

    def body() -> None:
        set_torch_threads(settings.threads)
        import torch

        from tdmpc2_model.agent import TDMPC2

        config = _online_config(settings)
        for key, flag in (("size", "--size"), ("tasks", "--task")):
            if key in config:
                raise ValueError(f"--config {key}=...: set it with {flag}.")
        torch.manual_seed(settings.seed)
        agent = TDMPC2(TDMPC2Config(size=settings.size, tasks=settings.task, **config))
        data = f"online RL on {settings.task} (tdmpc2-train)"
        _online(settings, record, agent.to(_device(settings.device)), data)

    return _run("tdmpc2-train", body, settings)


def eval_main(argv: Sequence[str] | None = None) -> int:
    parser = eval_parser()
    settings, _ = _parse(parser, argv)
    if (settings.task is None) == (settings.tasks is None):
        parser.error("give --task (one task) or --tasks (a task set), not both or neither")
    if settings.tasks is not None and settings.out is None:
        parser.error("--tasks needs --out DIR for eval.json, eval.csv and per-task results")
    return _run("tdmpc2-eval", lambda: evaluate_checkpoint(settings), settings)


def evaluate_checkpoint(settings: EvalConfig) -> None:
    """``tdmpc2-eval``: evaluate ``settings.checkpoint`` on its task or task set and print
    (and write) the results."""
    set_torch_threads(settings.threads)
    import torch

    from tdmpc2_data.atomic import write_text_atomic
    from tdmpc2_model.evaluation.episodes import evaluate
    from tdmpc2_model.evaluation.taskset import check_dir_writable, check_file_writable

    if settings.tasks is not None:
        return _eval_tasks(settings)
    if settings.json:  # before the download and the evaluation, not after them
        check_file_writable(Path(settings.json), "--json")
    if settings.video:
        from tdmpc2_data.envs.gl import prepare_rendering

        check_dir_writable(Path(settings.video), "--video", "videos")
        prepare_rendering()  # before MuJoCo's import, and before loading the model
    torch.manual_seed(settings.seed)
    device = _device(settings.device)
    agent = _load(settings.checkpoint, settings.task, settings.config, device, settings.revision)
    result = evaluate(agent, settings.task, settings.episodes, video_dir=settings.video,
                      seed=settings.seed)  # fmt: skip
    print(result.table())
    if settings.json:
        summary = {**result.summary(), "checkpoint": settings.checkpoint, "rows": result.episodes}
        write_text_atomic(Path(settings.json), json.dumps(summary, indent=2) + "\n")


def _eval_tasks(settings: EvalConfig) -> None:
    from tdmpc2_data.tasks import resolve_tasks
    from tdmpc2_model.evaluation.taskset import check_writable, evaluate_tasks

    names = resolve_tasks(settings.tasks)
    check_writable(Path(settings.out))  # before a download and hours of evaluation
    one = names[0] if len(names) == 1 else None  # a legacy single-task .pt needs its task
    device = _device(settings.device)
    agent = _load(settings.checkpoint, one, settings.config, device, settings.revision)
    result = evaluate_tasks(agent, names, settings.episodes, workers=settings.workers,
                            seed=settings.seed, out=settings.out,
                            checkpoint=settings.checkpoint)  # fmt: skip
    print(result.table())
    print(f"results in {settings.out}/eval.json and eval.csv")
