"""The CSV half of ``loggers.py``: Lightning's CSVLogger, made safe against a SIGKILL, and the
loggers of a run (its own module because importing Lightning takes seconds, which plots and
readers need not pay)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from tdmpc2_data.atomic import write_atomic
from tdmpc2_model.outputs.loggers import LOG_DIR, METRICS_FILE, csv_rows, tensorboard_logger


class _KillSafeWriter(ExperimentWriter):
    """Lightning's CSV writer, except where it would lose rows to a SIGKILL.

    Lightning writes ``metrics.csv`` whole on the first save and again, truncating it first,
    on every save that brings new columns (``_rewrite_with_new_header``: an online run's first
    losses, its first evaluation): killed between the truncation and the write, the run is left
    with an empty file. Here a whole-file write goes to a temporary sibling that is renamed over
    ``metrics.csv`` (``write_atomic``), so a kill leaves the old file or the new one; every other
    save appends its rows (one short write), so a killed run keeps every row it saved, at worst
    with a torn last line, which `read_metrics` drops. Declaring a run's columns up front would
    also avoid the rewrite, but needs every loss name and evaluation field before the first row
    and breaks silently the day one is added; this works for any columns, pretraining's too."""

    NAME_METRICS_FILE = METRICS_FILE  # the file read_metrics reads (Lightning's name too)

    def save(self) -> None:
        if not self.metrics:
            return
        path = Path(self.metrics_file_path)
        new = set().union(*self.metrics) - set(self.metrics_keys)
        if new or not path.is_file():
            old = csv_rows(path) if path.is_file() else []
            self.metrics_keys = sorted({*self.metrics_keys, *new})  # Lightning's column order
            write_atomic(path, lambda tmp: self._write(tmp, "w", [*old, *self.metrics]))
        else:
            self._write(path, "a", self.metrics)
        self.metrics = []

    def _write(self, path: Path, mode: str, rows: list[dict[str, Any]]) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.metrics_keys)
        if mode == "w":
            writer.writeheader()
        writer.writerows(rows)
        with open(path, mode, newline="") as f:
            f.write(text.getvalue())


class RunCSVLogger(CSVLogger):
    """Lightning's CSVLogger with `_KillSafeWriter` (the Trainer's logger in pretraining, the
    online loop's record): the same files, columns and versions."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KillSafeWriter(log_dir=self.log_dir)
        return self._experiment


def lightning_loggers(names: Sequence[str], out: str | os.PathLike) -> list[Any]:
    """The loggers for ``names`` (CSV first: its version folder numbers the run). The CSV saves
    every row as it is logged (Lightning's default: every 100), so a killed pretraining run
    keeps its rows as an online run does."""
    csv_logger = RunCSVLogger(Path(out), name=LOG_DIR, flush_logs_every_n_steps=1)
    extra = [tensorboard_logger(out, csv_logger.version) for n in names if n == "tensorboard"]
    return [csv_logger, *extra]
