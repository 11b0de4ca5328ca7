"""Hub IO of TD-MPC2 agents: ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``.

A saved model is the directory of ``formats/pretrained.py`` with the model card of
``card.py``. ``from_pretrained`` also reads checkpoints of the original implementation
(through ``formats/legacy.py``), local or published: an alias such as ``mt80-317M``,
``mt70-5M``, ``walker-walk`` or ``myo-hand-reach-2`` names a file of the published model repo
(``repo.py``: its layout and aliases).

The agent class gets these as methods from ``HubMixin`` (``TDMPC2`` inherits it), so this
module never imports the agent. All Hub access goes through ``huggingface_hub``
(``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, cache, tokens); repo ids, the published repo, what
``revision`` means (reading: branch, tag or commit; pushing: the branch to commit to) and
the error messages come from ``tdmpc2_data.hub_api``, shared with the dataset Hub IO.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Self

import torch
from huggingface_hub import HfApi, snapshot_download

from tdmpc2_data.hub_api import (
    at,
    hub_errors,
    hub_unreachable,
    is_repo_id,
    open_branch,
    refuse_mistyped_path,
    tag_commit,
)
from tdmpc2_model.core.config import TDMPC2Config
from tdmpc2_model.formats.legacy import PreReleaseLayoutError
from tdmpc2_model.formats.pretrained import (
    CARD,
    CONFIG,
    SCALE_KEY,
    WEIGHTS,
    ModelHubError,
    apply_overrides,
    check_finite,
    run_overrides,
    world_model_of,
    write_pretrained,
)
from tdmpc2_model.formats.read import read_model
from tdmpc2_model.hub.card import model_card
from tdmpc2_model.hub.repo import fetch, other_seed, resolve_alias


def _state(agent: HubMixin) -> dict[str, torch.Tensor]:
    return {**agent.model.state_dict(), SCALE_KEY: agent.scale.value}


def _build(
    cls: type[HubMixin], cfg: TDMPC2Config, tensors: dict, source: str, overrides: dict[str, Any]
) -> HubMixin:
    """The agent of ``cfg`` with ``overrides`` applied for this run; the checkpoint's own
    ``cfg`` stays its ``model_defaults``, what `save_pretrained` writes (a finetuning run's
    planner settings are the run's, not the finetuned model's)."""
    check_finite(tensors, source)
    run_cfg = apply_overrides(cfg, overrides, source)
    scale = tensors.pop(SCALE_KEY, None)
    agent = cls(run_cfg, model=world_model_of(run_cfg, tensors, source))
    agent.model_defaults = cfg if overrides else None
    if scale is not None:
        agent.scale.value.copy_(scale)
    return agent


def _load_local(
    cls: type[HubMixin], path: Path, task: Any, overrides: dict[str, Any], source: str
) -> HubMixin:
    cfg, tensors, provenance = read_model(path, task, source)
    agent = _build(cls, cfg, tensors, source, overrides)
    if provenance is not None:
        agent.hub_provenance = provenance
    return agent


# ------------------------------------------------------------------ the agent's methods
class HubMixin:
    """``from_pretrained`` / ``save_pretrained`` / ``push_to_hub`` of the agent class.

    ``TDMPC2`` inherits this (it needs the agent's ``cfg``, ``model`` and ``scale``), so
    the agent imports this module and never the other way round.

    It does not use ``huggingface_hub.ModelHubMixin``, but keeps its method and keyword
    names; why: docs/design.md#why-not-modelhubmixin.
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
          ``door-open-2``, ``myo-hand-reach``; see ``repo.resolve_alias``);
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
        card = str(model_card(self, provenance))
        write_pretrained(root, _state(self), defaults, provenance, card)
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
