"""Checkpoints of the original TD-MPC2 implementation (``agent.save()``: ``{"model": state_dict}``;
the published multitask files also hold the original's parsed config).

Loading never runs pickled code (``torch.load(weights_only=True)``, the config's classes as
inert stand-ins: ``omegaconf_pickle``) and memory-maps the tensors. The state dict is
translated to this package's layout (which keeps the original names), and the config is
inferred from tensor shapes, the task table from the stored config where there is one; see
shared/fixtures/legacy/README.md for both Q layouts.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from tdmpc2_data.tasks import TASK_SETS, TASKS, UnknownTaskError, resolve_tasks
from tdmpc2_model.core.config import SIZE_PRESETS, TDMPC2Config, preset
from tdmpc2_model.core.world_model import WorldModel, action_masks
from tdmpc2_model.formats.omegaconf_pickle import (
    SAFE_GLOBALS,
    ConfigPickleError,
    is_config,
    to_plain,
)

_FLAT_Q = re.compile(r"^(_Qs\.params|_target_Qs\.params)\.(\d+)$")
_FLAT_NAMES = ("weight", "bias", "ln.weight", "ln.bias")
_REQUIRED = ("_encoder.state.0.weight", "_dynamics.0.weight", "_reward.0.weight", "_pi.0.weight")
_TASK_SET_BY_SIZE = {len(TASK_SETS[k]): k for k in ("mt30", "mt80")}
#: a layer's own index under a Sequential (``_dynamics.0.0.weight``) or a LayerNorm of its own
#: (``_encoder.state.2.weight`` with no ``.ln.`` keys anywhere): the pre-release layout
_PRE_RELEASE = re.compile(r"^_(encoder\.state|dynamics|reward|pi)\.\d+(\.\d+)?\.weight$")


class LegacyCheckpointError(ValueError):
    """A file that is not a readable TD-MPC2 checkpoint."""


class PreReleaseLayoutError(LegacyCheckpointError):
    """A checkpoint in the pre-release key layout, which is refused (see ``read_checkpoint``)."""


def load_weights_only(
    path: Path, what: str, error: type[Exception] = ValueError, **kwargs: Any
) -> Any:
    """``torch.load(weights_only=True)`` of a file the user named: one that is no torch
    archive, or whose pickle is refused (code, foreign classes), raises ``error`` naming the
    file and the refusal (torch's own message is a paragraph about a default it changed)."""
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4": the error says enough
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            return torch.load(path, weights_only=True, **kwargs)
    except FileNotFoundError:
        raise
    except Exception as exc:
        lines = str(exc).splitlines() or [""]
        detail = next((x.strip() for x in lines if "Unsupported" in x), lines[0].strip())
        named = re.search(r"unsupported GLOBAL:? (?:GLOBAL )?(\S+)", str(exc), re.IGNORECASE)
        if named:  # torch's line goes on to suggest allowlisting it: never for such a file
            detail = f"its pickle names the global {named.group(1)}, which could run code"
        raise error(f"{path}: not {what}; torch.load(weights_only=True) refused it "
                    f"({type(exc).__name__}: {detail}).") from None  # fmt: skip


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(raw state dict, the stored config as plain data or None) of a legacy ``.pt`` file,
    loaded without running pickled code, its tensors memory-mapped (zip archives)."""
    path = Path(path)
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        obj = load_weights_only(path, "a TD-MPC2 checkpoint", LegacyCheckpointError,
                                map_location="cpu", mmap=zipfile.is_zipfile(path))  # fmt: skip
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise LegacyCheckpointError(
            f"{path}: not a TD-MPC2 checkpoint; expected a dict with a 'model' state dict, "
            f"got {type(obj).__name__}."
        )
    pre_release = [k for k in state if _PRE_RELEASE.match(k)]
    if pre_release and not any(".ln." in k for k in state):
        example = next((k for k in pre_release if k.startswith("_dynamics")), pre_release[0])
        raise PreReleaseLayoutError(
            f"{path}: pre-release TD-MPC2 key layout (Linear and LayerNorm as separate entries, "
            f"e.g. {example}), whose mapping to the release layout is unknown; load "
            "another seed of the task instead."
        )
    missing = [k for k in _REQUIRED if not isinstance(state.get(k), torch.Tensor)]
    if missing:
        found = ", ".join(list(state)[:5]) or "nothing"
        raise LegacyCheckpointError(
            f"{path}: not a TD-MPC2 checkpoint; missing {', '.join(missing)} (found: {found})."
        )
    configs = [v for k, v in obj.items() if k != "model" and is_config(v)]
    if len(configs) > 1:
        raise LegacyCheckpointError(f"{path}: holds {len(configs)} configs; expected one.")
    try:
        return state, to_plain(configs[0]) if configs else None
    except ConfigPickleError as exc:
        raise LegacyCheckpointError(f"{path}: {exc}") from None


def convert_state_dict(state: dict[str, object]) -> dict[str, torch.Tensor]:
    """Translate to this package's layout: drop tensordict metadata (``__batch_size``,
    ``__device``), the detached Q copy (a view of the online Q) and the ``log_std_*``
    buffers (they live in the config); rename the old flat Q layout."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.rsplit(".", 1)[-1].startswith("__") or key.startswith("_detach_Qs"):
            continue
        if key in ("log_std_min", "log_std_dif"):
            continue
        flat = _FLAT_Q.match(key)
        if flat:
            prefix = "_Qs.params" if flat.group(1) == "_Qs.params" else "_target_Qs_params"
            n = int(flat.group(2))
            key = f"{prefix}.{n // 4}.{_FLAT_NAMES[n % 4]}"
        out[key] = value
    return out


def _count_layers(state: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.weight$")
    return 1 + max(int(m.group(1)) for k in state if (m := pattern.match(k)))


def infer_config(
    state: dict[str, torch.Tensor],
    task: str | list[str] | None = None,
    source: str = "checkpoint",
    stored: dict[str, Any] | None = None,
) -> TDMPC2Config:
    """Config of a legacy state dict (either Q layout), from its tensor shapes.

    A multitask checkpoint's task table is its stored config's ``tasks`` (``stored``; then
    ``task``, if given, must be tasks of it); without one, 30 or 80 task embeddings are mt30 /
    mt80 and other task counts need ``task`` (the task list in id order). Single-task
    checkpoints take an optional task name (action dims and discount from the registry);
    without one, the episode length is taken from the registry tasks with the same dims when
    they agree.
    """
    multitask = "_task_emb.weight" in state
    num_tasks, task_dim = state["_task_emb.weight"].shape if multitask else (1, 0)
    enc_layers = _count_layers(state, "_encoder.state")
    latent_dim = state[f"_encoder.state.{enc_layers - 1}.weight"].shape[0]
    dyn0 = state["_dynamics.0.weight"]
    q0 = state.get("_Qs.params.0.weight", state.get("_Qs.params.0"))  # either Q layout
    if q0 is None:
        raise LegacyCheckpointError(
            f"{source}: not a TD-MPC2 checkpoint; no Q ensemble (_Qs.params)."
        )
    arch = dict(
        enc_dim=state["_encoder.state.0.weight"].shape[0],
        mlp_dim=dyn0.shape[0],
        latent_dim=latent_dim,
        num_enc_layers=max(enc_layers, 2),
        num_q=q0.shape[0],
        task_dim=task_dim,
    )
    obs_dim = state["_encoder.state.0.weight"].shape[1] - task_dim
    action_dim = dyn0.shape[1] - latent_dim - task_dim
    num_bins = state[f"_reward.{_count_layers(state, '_reward') - 1}.weight"].shape[0]
    log_std_min = float(state.get("log_std_min", torch.tensor(-10.0)))
    log_std_max = log_std_min + float(state.get("log_std_dif", torch.tensor(12.0)))

    tasks, extra = task, {}
    if multitask and stored is not None:
        tasks = _stored_tasks(stored, task, num_tasks, source)
    elif multitask:
        one = task if isinstance(task, str) and task not in TASK_SETS else None
        if tasks is None or one is not None:  # the task table follows from the embeddings
            if num_tasks not in _TASK_SET_BY_SIZE:
                raise LegacyCheckpointError(
                    f"{source}: multitask checkpoint with {num_tasks} task embeddings; only 30 "
                    "(mt30) and 80 (mt80) are known; pass task=[...] (the task list in id order)."
                )
            tasks = _TASK_SET_BY_SIZE[num_tasks]
            if one is not None and _resolved(one, source) not in TASK_SETS[tasks]:
                raise LegacyCheckpointError(
                    f"{source}: task={one!r} is not in the task table of this {tasks} checkpoint."
                )
    elif tasks is None:
        lengths = {
            t.episode_length
            for t in TASKS.values()
            if (t.obs_dim, t.action_dim) == (obs_dim, action_dim)
        }
        if len(lengths) != 1:
            raise LegacyCheckpointError(
                f"{source}: single-task checkpoint with obs_dim {obs_dim}, action_dim "
                f"{action_dim}; pass the task name (task='walker-walk') to set its discount."
            )
        extra["episode_length"] = lengths.pop()
    task_set = next((k for k in ("mt30", "mt80") if tasks in (k, TASK_SETS[k])), None)
    size = next((s for s in SIZE_PRESETS if _matches(preset(s, task_set), arch, multitask)), None)
    cfg = TDMPC2Config(
        size=size,
        tasks=tasks,
        multitask=multitask,
        obs_dim=obs_dim,
        action_dim=action_dim,
        num_bins=num_bins,
        log_std_min=log_std_min,
        log_std_max=log_std_max,
        **arch,
        **extra,
    )
    if cfg.num_tasks != num_tasks:
        raise LegacyCheckpointError(
            f"{source}: {num_tasks} task embeddings, but task={tasks!r} names {cfg.num_tasks}."
        )
    return cfg


def _resolved(task: str, source: str) -> str:
    try:
        return resolve_tasks(task)[0]
    except (UnknownTaskError, ValueError) as exc:
        raise LegacyCheckpointError(f"{source}: {exc}") from None


def _stored_tasks(
    stored: dict[str, Any], task: str | list[str] | None, num_tasks: int, source: str
) -> list[str]:
    """The stored config's task table, checked against the embeddings and ``task``."""
    tasks = stored.get("tasks")
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise LegacyCheckpointError(f"{source}: its stored config has no task list (tasks).")
    try:
        names, asked = resolve_tasks(tasks), resolve_tasks(task) if task is not None else []
    except (UnknownTaskError, ValueError) as exc:
        raise LegacyCheckpointError(f"{source}: {exc}") from None
    if len(names) != num_tasks:
        raise LegacyCheckpointError(f"{source}: its stored config lists {len(names)} tasks but "
                                    f"it has {num_tasks} task embeddings; refused.")  # fmt: skip
    if not set(asked) <= set(names):
        raise LegacyCheckpointError(
            f"{source}: task={task!r} is not in the task table of its stored config "
            f"({len(names)} tasks: {', '.join(names[:3])}, ...)."
        )
    return names


def _matches(arch: dict[str, int], found: dict[str, int], multitask: bool) -> bool:
    keys = [k for k in arch if k != "task_dim" or multitask]
    return all(arch[k] == found[k] for k in keys)


def load_legacy(
    path: str | Path, task: str | list[str] | None = None
) -> tuple[TDMPC2Config, dict[str, torch.Tensor]]:
    """(config, state dict in this package's layout) of a legacy ``.pt`` checkpoint; ``task``
    as for ``infer_config``. Old multitask checkpoints lack ``_action_masks``; they are
    rebuilt from the config. Keys and shapes are checked against the inferred model."""
    raw, stored = read_checkpoint(path)
    cfg = infer_config(raw, task, source=str(path), stored=stored)
    state = convert_state_dict(raw)
    if cfg.multitask:
        masks = action_masks(cfg)
        found = state.setdefault("_action_masks", masks)
        if not torch.equal(found, masks):
            raise LegacyCheckpointError(
                f"{path}: its _action_masks do not match the action dims of the tasks "
                f"{cfg.task_names[:3]}...; pass the checkpoint's task list as task=[...]."
            )
    with torch.device("meta"):  # shapes only
        expected = {k: v.shape for k, v in WorldModel(cfg).state_dict().items()}
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [
        f"{k} has shape {tuple(state[k].shape)}, expected {tuple(shape)}"
        for k, shape in expected.items()
        if k in state and state[k].shape != shape
    ]
    if problems:
        raise LegacyCheckpointError(
            f"{path}: not a consistent TD-MPC2 checkpoint: {'; '.join(problems[:5])}"
            + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        )
    return cfg, state
