"""Where runs log their metrics: ``csv`` (always the run's own record: Lightning's CSV logs for
pretraining, ``metrics.jsonl`` for online runs) and ``tensorboard`` (Lightning's
TensorBoardLogger, in ``OUT/logs``, for both, so one ``tensorboard --logdir runs`` shows
pretraining and online runs side by side)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

LOGGERS = ("csv", "tensorboard")
LOG_DIR = "logs"


def parse_loggers(spec: str | Sequence[str]) -> list[str]:
    """``"csv"``, ``"tensorboard"``, ``"csv,tensorboard"`` (or a list) -> checked names; csv is
    always kept: it is the run's record, which the plots read."""
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise ValueError(f"--logger {','.join(unknown)}: unknown; use {' or '.join(LOGGERS)}.")
    return ["csv", *(n for n in dict.fromkeys(names) if n != "csv")]


def tensorboard_logger(out: str | os.PathLike, version: int | str | None = None) -> Any:
    """Lightning's TensorBoardLogger writing under ``out/logs``, or a one-line install hint."""
    from lightning.pytorch.loggers import TensorBoardLogger

    try:
        return TensorBoardLogger(Path(out), name=LOG_DIR, version=version, default_hp_metric=False)
    except ModuleNotFoundError:
        raise ValueError(
            "--logger tensorboard needs tensorboard: pip install 'tdmpc2-toolkit[tensorboard]'."
        ) from None


def lightning_loggers(names: Sequence[str], out: str | os.PathLike) -> list[Any]:
    """The Trainer's loggers for ``names`` (CSV first: its version folder numbers the run)."""
    from lightning.pytorch.loggers import CSVLogger

    csv_logger = CSVLogger(Path(out), name=LOG_DIR)
    extra = [tensorboard_logger(out, csv_logger.version) for n in names if n == "tensorboard"]
    return [csv_logger, *extra]


def numeric(row: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """The numeric fields of a metrics row as ``prefix/name`` scalars (booleans as 0/1)."""
    return {f"{prefix}/{k}": float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and k != "step"}  # fmt: skip
