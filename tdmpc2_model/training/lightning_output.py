"""What a pretraining run shows the user: one bar of updates done / total with the loss and
the rate, instead of Lightning's per-epoch bar (``Epoch 0/-2 ... v_num`` for a step-counted
run, ``150/50`` after a resume); Lightning's start-up lines, tips and the warnings that are
not the user's to act on are kept out of the console (they stay in Lightning's logger at
DEBUG/INFO for whoever turns it up)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

# Warnings raised inside Lightning about its own internals or about what a resume is meant to
# do (continue into a non-empty checkpoint directory).
QUIET_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
    r"Checkpoint directory .* exists and is not empty",
    # checkpoints are meant to hold the state after the update: that is where a resume goes on
    r"Using ModelCheckpoint with manual optimization and every_n_train_steps",
)


class UpdatesBar(TQDMProgressBar):
    """``pretrain: 1200/5000 updates [..., 5.9 update/s, loss=0.81]``: the Trainer's
    ``global_step`` against ``max_steps``, also right after a resume."""

    def init_train_tqdm(self) -> Any:
        bar = super().init_train_tqdm()
        bar.set_description("pretrain")
        bar.unit = "update"
        return bar

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps)
        bar.initial = trainer.global_step  # the rate counts this run's updates only
        bar.n = trainer.global_step
        bar.set_description("pretrain")
        bar.refresh()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        n = trainer.global_step
        if self._should_update(n, trainer.max_steps):
            bar = self.train_progress_bar
            bar.n = n
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the CSV log's version number, not a metric
        return metrics


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Keep Lightning's info lines (accelerator banner, tips, "`Trainer.fit` stopped") and the
    warnings in ``QUIET_WARNINGS`` off the console for the duration of a run."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch.utilities.rank_zero",
                                              "lightning.fabric.utilities.rank_zero",
                                              "lightning.pytorch.trainer.connectors.signal_connector")]  # fmt: skip
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        for pattern in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)
