"""Hub IO of TD-MPC2 agents: ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``.

A saved model is a directory (or Hub model repo) with

- ``model.safetensors``: every tensor of the world model (online and target Q ensemble,
  action masks, task embedding) plus the running Q scale; tensors that share memory are
  stored once (the others are listed in the file's metadata as aliases); the metadata also
  holds ``tensors_sha256``, checked on load (files without it, written before, still load);
  weights holding NaN/Inf are refused whatever their source;
- ``config.json``: ``TDMPC2Config.to_dict()`` plus ``format_version`` and provenance;
- ``README.md``: the model card, ``huggingface_hub.ModelCard.from_template`` of the packaged
  ``model_card.md`` (size, parameters, tasks, training data, a run's final evaluation and
  settings, usage, citation) with ``ModelCardData`` front matter (``card_data``).

``from_pretrained`` also reads checkpoints of the original implementation (through
``legacy.py``), local or published: an alias such as ``mt80-317M``, ``mt70-5M``,
``walker-walk`` or ``myo-hand-reach-2`` names a file of the published model repo
(``model_repo.py``: its layout and aliases).

The agent class gets these as methods from ``HubMixin`` (``TDMPC2`` inherits it), so this
module never imports the agent. All Hub access goes through ``huggingface_hub``
(``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, cache, tokens); repo ids, the published repo, what
``revision`` means (reading: branch, tag or commit; pushing: the branch to commit to) and
the error messages come from ``tdmpc2_data.hub_api``, shared with the dataset Hub IO.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, Self

import torch
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, snapshot_download
from safetensors import safe_open
from safetensors.torch import save_file

from tdmpc2_data.atomic import write_atomic
from tdmpc2_data.cards import render_template
from tdmpc2_data.hub_api import (
    at,
    hub_errors,
    hub_unreachable,
    is_repo_id,
    open_branch,
    refuse_mistyped_path,
    tag_commit,
)
from tdmpc2_data.jsonfile import read_json
from tdmpc2_data.tasks import TASK_SETS, UnknownTaskError
from tdmpc2_model.config import TDMPC2Config
from tdmpc2_model.legacy import PreReleaseLayoutError, load_legacy
from tdmpc2_model.model_repo import ModelHubError, fetch, other_seed, resolve_alias
from tdmpc2_model.world_model import WorldModel

__all__ = [
    "HubMixin",
    "ModelHubError",
    "card_data",
    "load_pretrained_dir",
    "model_card",
    "resolve_alias",
]

FORMAT_VERSION = 1
WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "README.md"
CONFIG_BYTES = 1 << 24  # a config.json holds a few KB (a run's settings and evaluation)
SHA256_KEY = "tensors_sha256"  # safetensors metadata: ``tensors_sha256`` of the stored tensors
SCALE_KEY = "running_scale"  # the agent's RunningScale value, next to the world model
#: fields that change tensor shapes: a checkpoint fixes them, ``**overrides`` may not
SHAPE_FIELDS = frozenset(
    "size tasks multitask obs_dim action_dim enc_dim mlp_dim latent_dim num_enc_layers num_q "
    "task_dim num_bins simnorm_dim".split()
)
_META = ("format_version", "library_name", "provenance")
CARD_TEMPLATE = "model_card.md"  # package data: the model card's Jinja template
TAGS = ["reinforcement-learning", "model-based-rl", "world-model", "tdmpc2", "continuous-control"]


# --------------------------------------------------------------------------- saving
def _dedupe(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Store tensors that are the same view of the same memory once (under the first name in
    sorted order); return the aliases. Other tensors are copied out of shared memory
    (safetensors refuses shared storage)."""
    kept: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    storages: set[int] = set()
    for name, t in sorted(tensors.items()):
        t = t.detach()
        view = (
            t.untyped_storage().data_ptr(),
            t.storage_offset(),
            tuple(t.shape),
            t.stride(),
            t.dtype,
        )
        if view in seen:
            aliases[name] = seen[view]
            continue
        seen[view] = name
        ptr = t.untyped_storage().data_ptr()
        shared = ptr in storages or t.untyped_storage().nbytes() != t.numel() * t.element_size()
        storages.add(ptr)
        kept[name] = t.clone() if shared or not t.is_contiguous() else t
    return kept, aliases


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of tensors in name order (each name, dtype, shape and bytes): recorded by
    ``save_pretrained`` in the safetensors metadata and checked on load, so flipped bytes in
    a weights file are an error instead of a model that acts differently."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())  # the buffer, not a copy
    return digest.hexdigest()


def check_finite(tensors: dict[str, torch.Tensor], source: str) -> None:
    """Refuse NaN/Inf weights (a diverged or damaged checkpoint) naming the tensor."""
    for name, t in sorted(tensors.items()):
        if not t.is_floating_point() or bool(torch.isfinite(t.sum())):
            continue  # a finite sum has no NaN/Inf term (both propagate): one cheap pass
        if not bool(torch.isfinite(t).all()):  # not just a sum too large for the dtype
            bad = int((~torch.isfinite(t)).sum())
            raise ModelHubError(
                f"{source}: tensor {name!r} holds {bad} non-finite value(s) (NaN/Inf); the "
                "checkpoint is damaged or its training diverged."
            )


def _state(agent: HubMixin) -> dict[str, torch.Tensor]:
    return {**agent.model.state_dict(), SCALE_KEY: agent.scale.value}


def card_data(agent: HubMixin, provenance: dict[str, Any] | None = None) -> ModelCardData:
    """The card's Hub metadata: library, license, pipeline tag, tags (plus the task set, or
    up to 5 task names), the Hub datasets it was trained on when recorded, and the final
    evaluation of a run as ``model-index`` results (mean return and success rate on the
    evaluated task; the task is the "dataset", as RL model cards on the Hub name the env)."""
    cfg, provenance = agent.cfg, provenance or {}
    names = cfg.task_names
    task_set = next((k for k, v in TASK_SETS.items() if v == names), None)
    tags = [*TAGS, *([task_set] if task_set else names if len(names) <= 5 else [])]
    evaluation = provenance.get("evaluation")
    results = None
    if evaluation:
        task = evaluation["task"]
        scores = [("mean_reward", "mean return", evaluation["mean_return"]),
                  ("success_rate", "success rate", evaluation.get("success_rate"))]  # fmt: skip
        results = [
            EvalResult(
                task_type="reinforcement-learning",
                task_name="Reinforcement Learning",
                dataset_type=task,
                dataset_name=task,
                metric_type=kind,
                metric_name=label,
                metric_value=float(value),
            )
            for kind, label, value in scores
            if value is not None
        ]
    return ModelCardData(
        library_name="tdmpc2-toolkit",
        license="mit",
        pipeline_tag="reinforcement-learning",
        tags=tags,
        datasets=provenance.get("datasets") or None,
        model_name=_title(cfg) if results else None,
        eval_results=results,
    )


def _title(cfg: TDMPC2Config) -> str:
    kind = f"multitask ({cfg.num_tasks} tasks)" if cfg.multitask else "single-task"
    return f"TD-MPC2 {cfg.size or 'custom'} {kind} world model"


def model_card(agent: HubMixin, provenance: dict[str, Any] | None = None) -> ModelCard:
    """The model card (``README.md``): ``card_data`` as front matter and the packaged template
    ``model_card.md`` (size, parameters, tasks, training data, a run's final evaluation and
    settings, usage, citation) rendered by ``huggingface_hub.ModelCard.from_template``."""
    cfg, provenance = agent.cfg, provenance or {}
    names = cfg.task_names
    task_set = next((k for k, v in TASK_SETS.items() if v == names), None)
    evaluation = provenance.get("evaluation")
    if evaluation:
        rate = evaluation.get("success_rate")
        evaluation = {**evaluation, "mean_return": f"{evaluation['mean_return']:.2f}",
                      "success_rate": "-" if rate is None else f"{rate:.2f}"}  # fmt: skip
    run = provenance.get("run")
    if run:  # the command's settings and the package versions, as the run record has them
        run = json.dumps({"settings": run, "versions": provenance.get("versions")}, indent=2)
    values = {
        "title": _title(cfg),
        "size": cfg.size or "custom",
        "parameters": f"{agent.model.total_params:,}",
        "tasks": task_set or (", ".join(names) if names else "a custom task"),
        "cfg": cfg,
        "training_data": provenance.get("training_data") or "not recorded",
        "source": provenance.get("source"),
        "task_ids": ", ".join(names) if task_set is None and len(names) > 1 else None,
        "evaluation": evaluation,
        "run": run,
        "act_task": f", task={names[0]!r}" if cfg.multitask and names else "",
    }
    template = Path(str(resources.files("tdmpc2_model") / CARD_TEMPLATE))
    return render_template(ModelCard, card_data(agent, provenance), template, values)


# -------------------------------------------------------------------------- loading
def load_pretrained_dir(path: str | os.PathLike) -> tuple[TDMPC2Config, dict, dict[str, Any]]:
    """(config, tensors, provenance) of a ``save_pretrained`` directory."""
    root = Path(path)
    config_path, weights_path = root / CONFIG, root / WEIGHTS
    if not config_path.is_file():
        found = ", ".join(sorted(p.name for p in root.iterdir())[:8]) or "nothing"
        raise ModelHubError(
            f"{root}: no {CONFIG}; a TD-MPC2 model directory (written by save_pretrained) holds "
            f"{CONFIG} and {WEIGHTS} (found: {found}). For a legacy checkpoint pass the .pt file."
        )
    raw = read_json(config_path, CONFIG_BYTES, ModelHubError, f"model {CONFIG}")
    if not isinstance(raw, dict) or "format_version" not in raw:
        raise ModelHubError(
            f"{config_path}: not a TD-MPC2 model config (no 'format_version'; this file may "
            "belong to another library)."
        )
    if raw["format_version"] > FORMAT_VERSION:
        raise ModelHubError(
            f"{config_path}: format_version {raw['format_version']} is newer than this "
            f"library reads ({FORMAT_VERSION}); upgrade tdmpc2-toolkit."
        )
    provenance = raw.get("provenance") or {}
    try:
        cfg = TDMPC2Config.from_dict({k: v for k, v in raw.items() if k not in _META})
    except (ValueError, TypeError) as exc:
        raise ModelHubError(f"{config_path}: {exc}") from None
    if not weights_path.is_file():
        raise ModelHubError(f"{root}: {CONFIG} is there but {WEIGHTS} is missing.")
    try:
        with safe_open(weights_path, framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
            metadata = f.metadata() or {}
            aliases = json.loads(metadata.get("aliases", "{}"))
    except Exception as exc:  # safetensors raises its own error types
        raise ModelHubError(f"{weights_path}: not a readable safetensors file ({exc}).") from None
    expected = metadata.get(SHA256_KEY)  # absent in files written before it was recorded
    if expected is not None and tensors_sha256(tensors) != expected:
        raise ModelHubError(
            f"{weights_path}: the weights do not match the sha256 recorded when they were "
            "saved; the file is damaged (download or copy it again)."
        )
    for name, target in aliases.items():
        tensors[name] = tensors[target]
    return cfg, tensors, provenance


def _apply_overrides(cfg: TDMPC2Config, overrides: dict[str, Any], source: str) -> TDMPC2Config:
    if not overrides:
        return cfg
    fixed = sorted(SHAPE_FIELDS & set(overrides))
    if fixed:
        raise ValueError(
            f"Got {', '.join(f'{k}={overrides[k]!r}' for k in fixed)} for {source}; these "
            "fields are fixed by the checkpoint's tensors (only planning/training settings "
            "such as num_samples, iterations, horizon, lr may be overridden)."
        )
    return TDMPC2Config.from_dict({**cfg.to_dict(), **overrides})


def run_overrides(agent: HubMixin) -> dict[str, Any]:
    """The settings this run changed from the loaded checkpoint's (``from_pretrained``
    overrides such as ``num_samples``); {} for a model made here or loaded as saved."""
    defaults = getattr(agent, "model_defaults", None)
    if defaults is None:
        return {}
    saved, now = defaults.to_dict(), agent.cfg.to_dict()
    return {k: v for k, v in now.items() if saved.get(k) != v}


def _build(
    cls: type[HubMixin], cfg: TDMPC2Config, tensors: dict, source: str, overrides: dict[str, Any]
) -> HubMixin:
    """The agent of ``cfg`` with ``overrides`` applied for this run; the checkpoint's own
    ``cfg`` stays its ``model_defaults``, what `save_pretrained` writes (a finetuning run's
    planner settings are the run's, not the finetuned model's)."""
    check_finite(tensors, source)
    run_cfg = _apply_overrides(cfg, overrides, source)
    scale = tensors.pop(SCALE_KEY, None)
    agent = cls(run_cfg, model=world_model_of(run_cfg, tensors, source))
    agent.model_defaults = cfg if overrides else None
    if scale is not None:
        agent.scale.value.copy_(scale)
    return agent


def world_model_of(cfg: TDMPC2Config, tensors: dict, source: str) -> WorldModel:
    """The model of ``cfg`` made of ``tensors`` themselves, not copies (built on the meta
    device, then ``load_state_dict(assign=True)``): a memory-mapped checkpoint is read once
    into its pages, so a 317M model loads in about its own bytes (bench/load.py). Copied
    anyway: a tensor of another dtype (cast), one under a second name (they would share), and
    one not 64-byte aligned (safetensors' are not, and float32 matmuls round differently at
    another alignment: a saved model acts bit-identically after loading)."""
    with torch.device("meta"):
        model = WorldModel(cfg)
    expected, held, seen = model.state_dict(), {}, set()
    for name, t in tensors.items():
        t = t.to(expected[name].dtype) if name in expected else t
        held[name] = t.clone() if t.data_ptr() in seen or t.data_ptr() % 64 else t
        seen.add(held[name].data_ptr())
    try:
        model.load_state_dict(held, assign=True)
    except RuntimeError as exc:
        raise ModelHubError(f"{source}: its tensors do not fit its config: {exc}") from None
    return model


def _check_tasks(cfg: TDMPC2Config, task: str | list[str] | None, source: str) -> None:
    """A saved model knows its tasks; a ``task=`` given anyway must be one of them."""
    for name in [task] if isinstance(task, str) else task or []:
        try:
            cfg.task_id(name)
        except (ValueError, UnknownTaskError) as exc:
            raise ValueError(f"{source}: {exc}") from None


def _load_local(
    cls: type[HubMixin], path: Path, task: Any, overrides: dict[str, Any], source: str
) -> HubMixin:
    if path.is_dir():
        cfg, tensors, provenance = load_pretrained_dir(path)
        _check_tasks(cfg, task, source)
        agent = _build(cls, cfg, tensors, source, overrides)
        agent.hub_provenance = provenance
        return agent
    if path.suffix == ".safetensors" or path.name == CONFIG:
        raise ValueError(f"{path}: pass the directory holding {CONFIG} and {WEIGHTS}.")
    if path.suffix == ".ckpt":  # tdmpc2-pretrain's Lightning checkpoints
        from tdmpc2_model.checkpoint import read_lightning_checkpoint

        cfg, tensors, training = read_lightning_checkpoint(path)
        _check_tasks(cfg, task, source)
        agent = _build(cls, cfg, tensors, source, overrides)
        agent.hub_provenance = {"source": source, "training_data": training}
        return agent
    cfg, state = load_legacy(path, task)
    return _build(cls, cfg, state, source, overrides)


# ------------------------------------------------------------------ the agent's methods
class HubMixin:
    """``from_pretrained`` / ``save_pretrained`` / ``push_to_hub`` of the agent class.

    ``TDMPC2`` inherits this (it needs the agent's ``cfg``, ``model`` and ``scale``), so
    the agent imports this module and never the other way round.

    Why not ``huggingface_hub.ModelHubMixin`` / ``PyTorchModelHubMixin`` (hub_mixin.py,
    huggingface_hub 2.4): we would have to override all three of its public methods, and
    what is left (``__new__``, ``__init_subclass__``) works against us:

    - its ``from_pretrained`` takes anything that is not a directory for a Hub repo id and
      calls ``hf_hub_download(repo_id=..., filename="config.json")`` on it, so a legacy
      ``.pt`` file, a Lightning ``.ckpt`` and the aliases (``mt80-317M``: a file inside
      ``nicklashansen/tdmpc2``) cannot pass; it swallows an ``HfHubHTTPError`` on
      config.json (logged at info level) and builds the model without a config, so a missing
      repo, revision or token surfaces later as an unrelated error; and it fetches config.json
      and the weights in separate calls that each resolve ``revision``, so a push in between
      can pair one commit's config with another's weights (one ``snapshot_download`` here);
    - its ``__new__`` records the constructor's arguments as the config that
      ``save_pretrained`` writes: ``TDMPC2(cfg)`` built with ``from_pretrained`` overrides
      would save ``{"cfg": ...}`` holding the run's planner settings, the leak that
      ``model_defaults`` / ``run_overrides`` prevent; and it passes config.json's keys to
      ``__init__``, where ours also carries ``format_version`` (checked first) and provenance;
    - its ``save_pretrained`` deletes config.json before ``_save_pretrained`` runs and writes
      README.md only ``if not model_card_path.exists()``: saving over a model would keep the
      previous model's card, and a crash in between leaves weights without a config; every
      file here is written atomically and the card is replaced;
    - ``PyTorchModelHubMixin`` saves with ``safetensors.torch.save_model`` (no metadata: no
      ``tensors_sha256``, no record of shared views) and loads with ``load_model(...,
      strict=False)``, which ignores missing or unexpected tensors; nothing refuses NaN/Inf;
    - its ``push_to_hub`` uploads to ``branch`` without creating it (a new branch is an
      error), cannot tag, raises raw HTTP errors and returns a URL, not the commit id.

    What comes from huggingface_hub: the download, cache, revision, offline and token
    handling (``hf_hub_download``, ``snapshot_download``), the upload (``HfApi``:
    ``create_repo``, ``create_branch``, ``upload_folder``, ``create_tag``), the model card
    (``ModelCard.from_template``, ``ModelCardData``, ``EvalResult``), and the mixin's method
    and keyword names (``revision``, ``token``, ``cache_dir``, ``force_download``,
    ``local_files_only``, ``private``, ``commit_message``).
    """

    cfg: TDMPC2Config
    model: torch.nn.Module
    scale: Any

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        revision: str | None = None,
        task: str | list[str] | None = None,
        token: str | bool | None = None,
        *,
        cache_dir: str | os.PathLike | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        **overrides: Any,
    ) -> Self:
        """Load an agent (eval mode) from, in this order of lookup:

        - a local ``save_pretrained`` directory, or a legacy ``.pt`` file of the original code
          (config inferred from its tensors);
        - an alias of a published checkpoint (``mt80-317M``, ``mt70-5M``, ``walker-walk``,
          ``door-open-2``, ``myo-hand-reach``; see ``model_repo.resolve_alias``);
        - a Hub model repo ``OWNER/NAME`` written by ``push_to_hub``.

        ``revision``: branch, tag or commit of the Hub repo (aliases too). ``task``: the task
        of a single-task legacy checkpoint (sets action dims and discount) or the task list
        of a multitask one without a stored config that is neither mt30 nor mt80 (``tasks=``
        is accepted as a synonym). ``cache_dir``, ``force_download``, ``local_files_only``: as in
        ``huggingface_hub`` (and ``ModelHubMixin.from_pretrained``), for Hub repos and aliases.
        ``overrides``: config fields that do not change tensor shapes, e.g.
        ``num_samples=256``; the loaded ``model_defaults`` stay what ``save_pretrained`` writes.
        """

        if "tasks" in overrides:
            if task is not None:
                raise ValueError("Give task= or tasks=, not both.")
            task = overrides.pop("tasks")
        path = Path(name_or_path)
        text = str(name_or_path)
        if path.exists():
            if revision is not None:
                raise ValueError(f"Got revision={revision!r} for the local path {path}; "
                                 "revisions apply to Hub repos and aliases.")  # fmt: skip
            return _load_local(cls, path, task, overrides, source=str(path))
        if path.suffix in (".pt", ".pth", ".ckpt", ".safetensors", ".json"):
            raise FileNotFoundError(f"{path}: no such checkpoint file.")
        refuse_mistyped_path(text, "checkpoint")
        alias = resolve_alias(text) if "/" not in text else None
        if alias is not None:
            repo_id, filename, alias_task, training = alias
            where = f"{repo_id}/{filename}@{revision or 'main'}"
            local = fetch(filename, f"loading alias {text!r} ({where})", revision, token,
                          cache_dir, force_download, local_files_only)  # fmt: skip
            try:
                agent = _load_local(cls, local, task or alias_task, overrides, source=where)
            except PreReleaseLayoutError as exc:  # the bare alias is seed 1, one of them
                raise PreReleaseLayoutError(f"{str(exc)[:-1]}: {other_seed(text)}.") from None
            agent.hub_provenance = {"source": f"{where} (original implementation)",
                                    "training_data": training}  # fmt: skip
            return agent
        if not is_repo_id(text):
            raise ValueError(
                f"Got {text!r}: not a local path, not a Hub repo id OWNER/NAME, and not an "
                "alias of a published checkpoint (mt30-1M ... mt80-317M, mt70-5M, mt70-19M, or a "
                "task name such as walker-walk or walker-walk-2)."
            )
        where = at(text, revision)
        with hub_errors(text, revision, f"loading {text}", "model", ModelHubError,
                        local_files_only, cache_dir):  # fmt: skip
            # one snapshot: the revision is resolved once, so config and weights are one commit's
            local = snapshot_download(
                text,
                allow_patterns=[CONFIG, WEIGHTS, CARD],
                revision=revision,
                token=token,
                cache_dir=cache_dir,
                force_download=force_download,
                local_files_only=local_files_only or hub_unreachable(),  # the cache at once
            )
        if not (Path(local) / CONFIG).is_file() or not (Path(local) / WEIGHTS).is_file():
            raise ModelHubError(
                f"Hub repo {where} has no {CONFIG} + {WEIGHTS}, so it is not a TD-MPC2 model "
                "repo written by push_to_hub. For a legacy .pt file in a repo, download it "
                "with huggingface_hub.hf_hub_download and pass the path."
            )
        return _load_local(cls, Path(local), task, overrides, source=where)

    def save_pretrained(
        self, save_directory: str | os.PathLike, training_data: str | None = None
    ) -> Path:
        """Write ``model.safetensors``, ``config.json`` and ``README.md`` into
        ``save_directory`` (created if needed; other files in it are left alone).
        ``training_data`` is a line for the model card (default: what ``from_pretrained``
        recorded about the source, if known)."""
        root = Path(save_directory)
        root.mkdir(parents=True, exist_ok=True)
        provenance = dict(getattr(self, "hub_provenance", None) or {})
        if training_data is not None:
            provenance["training_data"] = training_data
        defaults = getattr(self, "model_defaults", None) or self.cfg
        provenance.pop("run_settings", None)  # a loaded model's, not this run's
        run_settings = run_overrides(self)
        if run_settings:  # recorded as what the run used, not as the model's defaults
            provenance["run_settings"] = run_settings
        tensors, aliases = _dedupe(_state(self))
        metadata = {"format_version": str(FORMAT_VERSION), "aliases": json.dumps(aliases),
                    SHA256_KEY: tensors_sha256(tensors)}  # fmt: skip
        config = {"format_version": FORMAT_VERSION, "library_name": "tdmpc2-toolkit",
                  **defaults.to_dict(), "provenance": provenance}  # fmt: skip
        write_atomic(root / WEIGHTS, lambda p: save_file(tensors, p, metadata=metadata))
        write_atomic(root / CONFIG,
                      lambda p: Path(p).write_text(json.dumps(config, indent=2) + "\n"))  # fmt: skip
        card = str(model_card(self, provenance))
        write_atomic(root / CARD, lambda p: Path(p).write_text(card, encoding="utf-8"))
        return root

    def push_to_hub(
        self,
        repo_id: str,
        private: bool = False,
        revision: str | None = None,
        tag: str | None = None,
        commit_message: str = "Upload TD-MPC2 model",
        token: str | bool | None = None,
        training_data: str | None = None,
    ) -> str:
        """Save the agent and upload it to the Hub model repo ``repo_id`` (created if
        missing) in one commit to the branch ``revision`` (default ``main``; created from
        ``main`` if missing); tags that commit as ``tag`` when given (a tag is never moved).
        Returns the commit id."""
        api = HfApi(token=token)
        with hub_errors(repo_id, revision, f"pushing to {repo_id}", "model", ModelHubError):
            branch = open_branch(api, repo_id, "model", revision, private)
            with tempfile.TemporaryDirectory(prefix="tdmpc2-push-") as tmp:
                self.save_pretrained(tmp, training_data=training_data)
                info = api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=branch,
                                         commit_message=commit_message)  # fmt: skip
            if tag is not None:
                tag_commit(api, repo_id, "model", tag, info.oid, ModelHubError)
        return info.oid
