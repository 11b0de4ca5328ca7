"""ONE reader for every checkpoint a model loads from: a ``save_pretrained`` directory, a
pretraining Lightning ``.ckpt`` or a legacy ``.pt`` file of the original code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tdmpc2_data.tasks import UnknownTaskError
from tdmpc2_model.core.config import TDMPC2Config
from tdmpc2_model.formats.legacy import load_legacy
from tdmpc2_model.formats.lightning_ckpt import read_lightning_checkpoint
from tdmpc2_model.formats.pretrained import CONFIG, WEIGHTS, load_pretrained_dir


def _check_tasks(cfg: TDMPC2Config, task: str | list[str] | None, source: str) -> None:
    """A saved model knows its tasks; a ``task=`` given anyway must be one of them."""
    for name in [task] if isinstance(task, str) else task or []:
        try:
            cfg.task_id(name)
        except (ValueError, UnknownTaskError) as exc:
            raise ValueError(f"{source}: {exc}") from None


def read_model(
    path: Path, task: Any, source: str
) -> tuple[TDMPC2Config, dict, dict[str, Any] | None]:
    """(config, tensors, provenance) of the checkpoint at ``path``; the provenance is None
    for a legacy file (it records none)."""
    if path.is_dir():
        cfg, tensors, provenance = load_pretrained_dir(path)
        _check_tasks(cfg, task, source)
        return cfg, tensors, provenance
    if path.suffix == ".safetensors" or path.name == CONFIG:
        raise ValueError(f"{path}: pass the directory holding {CONFIG} and {WEIGHTS}.")
    if path.suffix == ".ckpt":  # tdmpc2-pretrain's Lightning checkpoints
        cfg, tensors, training = read_lightning_checkpoint(path)
        _check_tasks(cfg, task, source)
        return cfg, tensors, {"source": source, "training_data": training}
    cfg, state = load_legacy(path, task)
    return cfg, state, None
