"""Pretraining's Lightning ``.ckpt`` files read back as models (so every command takes them),
without running code."""

from __future__ import annotations

from pathlib import Path

import torch

from tdmpc2_model.core.config import TDMPC2Config
from tdmpc2_model.formats.legacy import load_weights_only
from tdmpc2_model.formats.pretrained import SCALE_KEY

_AGENT_PREFIX = "agent."  # TDMPC2Module keeps the agent as ``self.agent``


def read_lightning_checkpoint(
    path: Path, mmap: bool = False
) -> tuple[TDMPC2Config, dict[str, torch.Tensor], str | None]:
    """(config, world-model tensors with the running Q scale under ``scale_key``, training-data
    line) of a pretraining ``.ckpt``, loaded without running code (``weights_only``);
    ``mmap``: tensors stay on disk (a cheap check of a ``--resume`` file)."""
    what = "a tdmpc2-pretrain Lightning checkpoint"
    ckpt = load_weights_only(path, what, map_location="cpu", mmap=mmap)
    try:
        hparams, state = ckpt["hyper_parameters"], ckpt["state_dict"]
        cfg = TDMPC2Config.from_dict(hparams["cfg"])
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise ValueError(
            f"{path}: not a tdmpc2-pretrain Lightning checkpoint (missing or bad {exc})."
        ) from None
    model = f"{_AGENT_PREFIX}model."
    tensors = {k[len(model) :]: v for k, v in state.items() if k.startswith(model)}
    tensors[SCALE_KEY] = state[f"{_AGENT_PREFIX}scale.value"]
    return cfg, tensors, hparams.get("training_data")
