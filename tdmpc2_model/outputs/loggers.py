"""Where runs log their metrics, in one format for every run: Lightning's CSVLogger (always: the
run's record, which the plots read) and, with ``--logger tensorboard``, its TensorBoardLogger,
both in ``OUT/logs/version_N`` (one version per invocation: a ``--resume`` adds the next). The
columns are ``train/<field>`` and ``eval/<field>`` at ``step`` (updates in pretraining,
environment steps in online runs), so one ``tensorboard --logdir runs`` shows pretraining and
online runs side by side and `read_metrics` reads both kinds of run."""

from __future__ import annotations

import csv
import io
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

LOGGERS = ("csv", "tensorboard")
LOG_DIR, METRICS_FILE = "logs", "metrics.csv"  # Lightning's names: logs/version_N/metrics.csv


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


def numeric(row: Mapping[str, Any], prefix: str) -> dict[str, int | float]:
    """A metrics row's fields as ``prefix/name`` numbers, the same for every logger: booleans
    as 0/1; None (no value, e.g. a DMControl task's success rate) and text (the task, which
    ``run.json`` names) left out, as are ``kind`` and ``step`` (the row's prefix and x)."""
    scalars: dict[str, int | float] = {}
    for key, value in row.items():
        if key in ("kind", "step") or value is None or isinstance(value, str):
            continue
        if not isinstance(value, (numbers.Real, np.bool_)):
            raise TypeError(f"metrics field {key}={value!r}: not a number")
        integral = isinstance(value, (numbers.Integral, np.bool_))
        scalars[f"{prefix}/{key}"] = int(value) if integral else float(value)
    return scalars


# ----------------------------------------------------------------------------- reading
def read_metrics(run: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Every column a run logged -- pretraining or online: ``OUT/logs/version_*/metrics.csv``,
    the versions in order (each a later invocation: ``--resume``) -- as (step, value) points
    in step order, empty cells left out.

    A step logged twice under one prefix (``train``, ``eval``), as when a resumed run redoes
    steps the killed one had logged or repeats its final evaluation, keeps the later row: the
    one made from the weights the run continued with. A torn last line (a killed write) is
    dropped."""
    run = Path(run)
    if not run.is_dir():
        raise ValueError(f"{run}: no such run directory.")
    logs = sorted((p for p in run.glob(f"{LOG_DIR}/version_*/{METRICS_FILE}")
                   if p.parent.name[8:].isdigit()), key=lambda p: int(p.parent.name[8:]))  # fmt: skip
    if not logs:
        raise ValueError(
            f"{run}: no {LOG_DIR}/version_*/{METRICS_FILE} (the metrics every tdmpc2-pretrain, "
            "-train and -finetune run writes)."
        )
    rows: dict[tuple[str, int], dict[str, float]] = {}
    for log in logs:
        for line, row in enumerate(csv_rows(log), 2):
            try:
                step = int(row.pop("step"))
                values = {k: float(v) for k, v in row.items() if v not in ("", None)}
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{log}:{line}: not a row of numbers with a step.") from None
            for prefix in {k.split("/")[0] for k in values}:
                rows[prefix, step] = {k: v for k, v in values.items() if k.split("/")[0] == prefix}
    series: dict[str, list[tuple[int, float]]] = {}
    for (_, step), values in sorted(rows.items(), key=lambda item: item[0][1]):
        for key, value in values.items():
            series.setdefault(key, []).append((step, value))
    return series


def csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a metrics CSV, without a torn (unterminated) last line."""
    with open(path, newline="") as f:
        text = f.read()
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    return list(csv.DictReader(io.StringIO(text)))
