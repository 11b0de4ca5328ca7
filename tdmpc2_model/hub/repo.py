"""The published model repo ``nicklashansen/tdmpc2`` (``$TDMPC2_MODEL_REPO`` overrides it):
how its files are named (aliases), fetching one, and which multitask model holds a task.

Its 324 files (uploaded 2023-10-23/24) are ``<folder>/<task>-<seed>.pt``, seeds 1-3, with
the original's task names: folders ``dmcontrol`` (117), ``metaworld`` (150, ``mw-door-open``),
``maniskill2`` (15) and ``myosuite`` (30, named ``myo-hand-reach``: the registry's
``myo-reach``), all 5M single-task models; and ``multitask/`` (12): ``mt30`` and ``mt80`` at
1M, 5M, 19M, 48M and 317M, and ``mt70`` at 5M and 19M, pretrained on 70 mt80 tasks with 10
held out (the paper's few-shot experiment; which 10, only their stored config says). Every
multitask file stores the original's config, whose task list is the model's task table.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import RemoteEntryNotFoundError

from tdmpc2_data.hub_api import ORIGINAL_REPO, hub_errors, hub_unreachable
from tdmpc2_data.tasks import (
    DMCONTROL,
    MANISKILL,
    METAWORLD,
    MYOSUITE,
    TASK_SETS,
    Task,
    UnknownTaskError,
    get_task,
    resolve_task_name,
)
from tdmpc2_model.core.config import SIZE_PRESETS, parse_size
from tdmpc2_model.formats.pretrained import ModelHubError

SEEDS = (1, 2, 3)
FOLDERS = {DMCONTROL: "dmcontrol", METAWORLD: "metaworld", MANISKILL: "maniskill2",
           MYOSUITE: "myosuite"}  # fmt: skip
#: multitask model -> its published sizes
MULTITASK = {"mt30": tuple(SIZE_PRESETS), "mt80": tuple(SIZE_PRESETS), "mt70": ("5M", "19M")}
#: size of the model ``tdmpc2-finetune`` picks without ``--checkpoint`` (mt80 and mt70 both
#: have it, and it plans and learns on a laptop CPU)
FINETUNE_SIZE = "5M"


MODEL_REPO_ENV = "TDMPC2_MODEL_REPO"


def published_model_repo() -> str:
    """Hub model repo of the published checkpoints (``$TDMPC2_MODEL_REPO`` overrides)."""
    return os.environ.get(MODEL_REPO_ENV) or ORIGINAL_REPO


def file_name(task: Task, seed: int) -> str:
    """The repo path of a single-task model: the paper's spelling (``myo-hand-reach``)."""
    name = task.name.replace("myo-", "myo-hand-", 1) if task.domain == MYOSUITE else task.name
    return f"{FOLDERS[task.domain]}/{name}-{seed}.pt"


def resolve_alias(alias: str) -> tuple[str, str, str | None, str] | None:
    """``(repo_id, filename, task, training data)`` of a published-checkpoint alias, or None;
    ``task`` is the single task's name, None for a multitask model (its stored config has the
    table). A multitask name at a size that is not published is a ``ValueError``.

    ``mt80-317M`` -> ``multitask/mt80-317M.pt``; ``walker-walk`` / ``walker-walk-2`` ->
    ``dmcontrol/walker-walk-1.pt`` / ``-2.pt``; short names and both MyoSuite spellings work
    (``door-open``, ``myo-reach`` and ``myo-hand-reach``).
    """
    multi = re.fullmatch(r"(mt30|mt70|mt80)-(\w+)", alias.strip(), re.IGNORECASE)
    if multi:
        name, sizes = multi.group(1).lower(), MULTITASK[multi.group(1).lower()]
        try:
            size = parse_size(multi.group(2))
        except ValueError:
            size = None
        if size not in sizes:
            raise ValueError(f"{alias}: {name} models are published at {', '.join(sizes)} only.")
        data = ("70 tasks of the published mt80 dataset" if name == "mt70"
                else f"the published {name} dataset")  # fmt: skip
        return (published_model_repo(), f"multitask/{name}-{size}.pt", None,
                f"{data} (offline, original implementation)")  # fmt: skip
    seed, name = 1, alias.strip()
    split = re.fullmatch(r"(.+)-(\d+)", name)
    if split and int(split.group(2)) in SEEDS:
        try:
            resolve_task_name(name)
        except UnknownTaskError:
            name, seed = split.group(1), int(split.group(2))
    try:
        t = get_task(name)
    except UnknownTaskError:
        return None
    return (published_model_repo(), file_name(t, seed), t.name,
            f"online RL on {t.name}, seed {seed} (original implementation)")  # fmt: skip


def other_seed(alias: str) -> str:
    """The alias of the next published seed of a single-task alias (``walker-walk`` -> ``-2``)."""
    _, filename, task, _ = resolve_alias(alias)
    seed = int(filename.rsplit("-", 1)[1].removesuffix(".pt"))
    return f"{task}-{SEEDS[seed % len(SEEDS)]}"


def fetch(
    filename: str,
    doing: str,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
) -> Path:
    """A file of the published repo, downloaded or from the cache (a dead endpoint: the cache
    at once, not ~24 s of retries); failures are one-line ``ModelHubError``s led by ``doing``."""
    repo_id = published_model_repo()
    with hub_errors(repo_id, revision, doing, "model", ModelHubError, local_files_only, cache_dir):
        try:
            return Path(hf_hub_download(
                repo_id, filename, revision=revision, token=token, cache_dir=cache_dir,
                force_download=force_download,
                local_files_only=local_files_only or hub_unreachable(),
            ))  # fmt: skip
        except RemoteEntryNotFoundError:
            raise ModelHubError(
                f"{doing}: {repo_id}/{filename}@{revision or 'main'} does not exist. Set "
                f"${MODEL_REPO_ENV} to a repo that mirrors the published checkpoints."
            ) from None


def finetune_checkpoint(task: str, revision: str | None = None) -> tuple[str, str]:
    """(alias, why) of the published model ``tdmpc2-finetune`` starts from without
    ``--checkpoint``: mt70 (``FINETUNE_SIZE``) for a task that it holds out, the paper's
    few-shot set-up, else mt80; reads mt70's stored task table (downloads that file once)."""
    from tdmpc2_model.formats.legacy import read_checkpoint

    name = resolve_task_name(task)
    mt80, mt70 = (f"{m}-{FINETUNE_SIZE}" for m in ("mt80", "mt70"))
    if name not in TASK_SETS["mt80"]:
        raise ValueError(
            f"--task {name}: no published multitask model has it in its task table (mt30, mt70 "
            "and mt80 hold DMControl and Meta-World tasks); pass --checkpoint (e.g. a model of "
            f"yours, or the published single-task model {name})."
        )
    filename = resolve_alias(mt70)[1]
    where = f"{published_model_repo()}/{filename}"
    doing = (f"--task {name} without --checkpoint needs {where} (its stored task list says "
             f"whether {mt70} holds {name} out; or pass a local model with --checkpoint PATH)")  # fmt: skip
    _, stored = read_checkpoint(fetch(filename, doing, revision))
    tasks = (stored or {}).get("tasks")
    if not isinstance(tasks, list):
        raise ModelHubError(f"{where}: no stored task list; pass --checkpoint {mt80} or {mt70}.")
    if name in tasks:
        return mt80, f"{name} is one of the 70 tasks {mt70} was pretrained on, so the mt80 model"
    return mt70, f"{mt70} holds {name} out (its stored task list): the paper's few-shot set-up"
