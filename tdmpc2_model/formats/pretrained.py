"""The model directory ``save_pretrained`` writes (and a Hub model repo holds):

- ``model.safetensors``: every tensor of the world model (online and target Q ensemble,
  action masks, task embedding) plus the running Q scale; tensors that share memory are
  stored once (the others are listed in the file's metadata as aliases); the metadata also
  holds ``tensors_sha256``, checked on load (files without it, written before, still load);
  weights holding NaN/Inf are refused whatever their source;
- ``config.json``: ``TDMPC2Config.to_dict()`` plus ``format_version`` and provenance;
- ``README.md``: the model card (``hub/card.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tdmpc2_data.atomic import write_atomic
from tdmpc2_data.hub_api import HubError
from tdmpc2_data.jsonfile import read_json
from tdmpc2_model.core.config import TDMPC2Config
from tdmpc2_model.core.world_model import WorldModel

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


class ModelHubError(HubError):
    """A model could not be found, read or pushed; the message says which and what to do."""


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


def write_pretrained(
    root: Path,
    state: dict[str, torch.Tensor],
    defaults: TDMPC2Config,
    provenance: dict[str, Any],
    card: str,
) -> None:
    """Write ``state`` (deduplicated, with its sha256), ``defaults`` + ``provenance`` as
    ``config.json`` and the model ``card`` into ``root``, each file atomically."""
    tensors, aliases = _dedupe(state)
    metadata = {"format_version": str(FORMAT_VERSION), "aliases": json.dumps(aliases),
                SHA256_KEY: tensors_sha256(tensors)}  # fmt: skip
    config = {"format_version": FORMAT_VERSION, "library_name": "tdmpc2-toolkit",
              **defaults.to_dict(), "provenance": provenance}  # fmt: skip
    write_atomic(root / WEIGHTS, lambda p: save_file(tensors, p, metadata=metadata))
    write_atomic(root / CONFIG,
                  lambda p: Path(p).write_text(json.dumps(config, indent=2) + "\n"))  # fmt: skip
    write_atomic(root / CARD, lambda p: Path(p).write_text(card, encoding="utf-8"))


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


def apply_overrides(cfg: TDMPC2Config, overrides: dict[str, Any], source: str) -> TDMPC2Config:
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


def run_overrides(agent: Any) -> dict[str, Any]:
    """The settings this run changed from the loaded checkpoint's (``from_pretrained``
    overrides such as ``num_samples``); {} for a model made here or loaded as saved."""
    defaults = getattr(agent, "model_defaults", None)
    if defaults is None:
        return {}
    saved, now = defaults.to_dict(), agent.cfg.to_dict()
    return {k: v for k, v in now.items() if saved.get(k) != v}


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
