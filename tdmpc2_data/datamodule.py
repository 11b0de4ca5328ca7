"""`WindowDataModule`: the `WindowSampler` as a Lightning data module (pretraining plugs in here).

The sampler is built at construction (opening datasets reads metadata only), so the model
can be sized from ``tasks``/``obs_dim``/``action_dim`` before ``Trainer.fit``. ``setup``
gives it this process's rank from the trainer, so under DDP every rank samples its own
disjoint shards. Lightning treats the sampler as any iterable: it moves each `Batch`
(`tdmpc2_data.batch`) to the device and calls ``sampler.set_epoch`` at each epoch start.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L

from tdmpc2_data.loader import DataSpec, WindowSampler


class WindowDataModule(L.LightningDataModule):
    """Training batches of TD-MPC2 windows of datasets or `DatasetView`s (``ds.select(...)``);
    ``sampler_kwargs`` go to `WindowSampler` (batch_size, horizon, cache_bytes, seed,
    task_weights, num_workers, ...)."""

    def __init__(
        self,
        datasets: DataSpec | Sequence[DataSpec],
        **sampler_kwargs: Any,
    ) -> None:
        super().__init__()
        self.sampler = WindowSampler(datasets, **sampler_kwargs)

    @property
    def tasks(self) -> list[str]:
        return self.sampler.tasks

    @property
    def obs_dim(self) -> int:
        return self.sampler.obs_dim

    @property
    def action_dim(self) -> int:
        return self.sampler.action_dim

    def setup(self, stage: str) -> None:
        trainer = self.trainer
        if trainer is not None:
            self.sampler.set_rank(trainer.global_rank, trainer.world_size)
            if trainer.strategy.root_device.type == "cuda":
                self.sampler.pin_memory = True  # Lightning's device copy is then asynchronous

    def train_dataloader(self) -> WindowSampler:
        """The sampler; in a run resumed at update N, its stream continues after the N
        batches the first run consumed (one per update), as an uninterrupted run's does."""
        if self.trainer is not None and self.trainer.global_step:
            self.sampler.resume_at(self.trainer.global_step)
        return self.sampler

    def teardown(self, stage: str) -> None:
        self.sampler.close()
