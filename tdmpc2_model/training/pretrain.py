"""Offline multitask pretraining with Lightning (paper Sec. 4).

`TDMPC2Module` owns the Trainer's side (manual optimization, logging, sharding; each step is
``tdmpc2_model.core.update.update_step``); `pretrain` is what `tdmpc2-pretrain` runs;
`TaskSetEvaluation` evaluates during pretraining. Strategies, resuming and outputs:
docs/pretraining.md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy

from tdmpc2_data.batch import Batch
from tdmpc2_data.progress import bars_enabled
from tdmpc2_data.tasks import resolve_tasks
from tdmpc2_model.agent import TDMPC2, make_optimizers
from tdmpc2_model.core.config import TDMPC2Config
from tdmpc2_model.core.update import LOSS_TERMS, nonfinite_loss_error, update_step
from tdmpc2_model.formats.run_checkpoint import save_torch_atomically
from tdmpc2_model.training.lightning_output import UpdatesBar, quiet_lightning
from tdmpc2_model.training.settings import PretrainConfig

LIGHTNING_DIR, FINAL_DIR = "lightning", "final"
PRECISIONS = ("32-true", "bf16-mixed")
STRATEGIES = ("auto", "ddp", "fsdp")


class TDMPC2Module(L.LightningModule):
    """A `TDMPC2` agent trained by a Lightning Trainer with manual optimization: the agent's
    two optimizers (encoder lr x ``enc_lr_scale``, policy Adam eps ``pi_adam_eps``), gradient
    clipping at ``grad_clip_norm`` each, soft target update after every step.

    ``trainer.global_step`` counts updates (the policy optimizer steps outside Lightning's
    step counter, which would otherwise count two per update).

    Under FSDP the parameters are sharded DTensors: the target EMA gathers the online Q
    weights, the running Q scale follows rank 0 (as DDP's buffer broadcast does), and
    ``export_agent`` gathers a plain agent for ``save_pretrained``.
    """

    def __init__(
        self,
        cfg: TDMPC2Config | dict[str, Any],
        training_data: str | None = None,
        selection: dict[str, Any] | None = None,
    ):
        """``selection``: the episodes the data was filtered to (``tdmpc2_data.curate``
        filters and counts), kept in the hyperparameters of every checkpoint."""
        super().__init__()
        cfg = cfg if isinstance(cfg, TDMPC2Config) else TDMPC2Config.from_dict(cfg)
        self.save_hyperparameters(
            {"cfg": cfg.to_dict(), "training_data": training_data, "selection": selection}
        )
        self.training_data = training_data
        self.agent = TDMPC2(cfg)
        self.agent.model.train()  # the agent acts in eval mode; training needs the Q dropout
        self.automatic_optimization = False
        self.sharded = False
        # first update (1-based, -1: none yet) with a NaN/Inf loss and which terms, kept on
        # the device so that the check costs no sync per step (`NonFiniteLossCheck` reads it)
        self.register_buffer("_bad_update", torch.tensor(-1), persistent=False)
        self.register_buffer("_bad_terms", torch.zeros(len(LOSS_TERMS), dtype=torch.bool),
                             persistent=False)  # fmt: skip

    @classmethod
    def from_agent(cls, agent: TDMPC2, training_data: str | None = None) -> TDMPC2Module:
        """A module starting from ``agent``'s weights and running Q scale."""
        module = cls(agent.cfg, training_data)
        module.agent.load_state_dict(agent.state_dict())
        return module

    @property
    def cfg(self) -> TDMPC2Config:
        return self.agent.cfg

    def configure_model(self) -> None:
        """Under ModelParallelStrategy ("fsdp"), shard each network over the data-parallel
        ranks (FSDP2); the target Q ensemble stays a replicated buffer."""
        trainer = self._trainer  # None under load_from_checkpoint: nothing to shard
        if (
            self.sharded
            or trainer is None
            or not isinstance(trainer.strategy, ModelParallelStrategy)
        ):
            return
        from torch.distributed.fsdp import fully_shard

        mesh = self.trainer.strategy.device_mesh["data_parallel"]
        for network in self.agent.model.networks.values():
            fully_shard(network, mesh=mesh)
        self.sharded = True

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """The agent's two optimizers, made afresh on the parameters as the strategy placed them."""
        return list(make_optimizers(self.agent.model))

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """``update.update_step`` with Lightning's backward and the model optimizer as Lightning
        wraps it; the policy optimizer steps raw (one Lightning step per update)."""
        model_opt, pi_opt = self.optimizers()
        if self.sharded:
            torch.distributed.broadcast(self.agent.scale.value, src=0)
        update = self.global_step + 1  # the model optimizer's step counts it, inside update_step
        info = update_step(self.agent, batch, (model_opt, pi_opt.optimizer), self.manual_backward)
        bad = ~torch.isfinite(
            torch.stack([info[k].detach().float().reshape(()) for k in LOSS_TERMS])
        )
        new = bad.any() & (self._bad_update < 0)
        self._bad_update = torch.where(new, update, self._bad_update)
        self._bad_terms = torch.where(new, bad, self._bad_terms)
        self.log_dict({f"train/{k}": v.detach().float() for k, v in info.items()})
        total = info["total_loss"].detach()
        self.log("loss", total, prog_bar=True, logger=False)
        return total

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep what the next update starts from besides weights and optimizer states: the
        random state (the policy loss samples actions) and the task-embedding gradients the
        policy loss leaves for the next model step (``update_step``), so that a resumed run
        makes the updates an uninterrupted one makes. (Sharded gradients are not kept.)"""
        checkpoint["tdmpc2_resume"] = {
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "grads": {}
            if self.sharded
            else {
                n: p.grad.detach().cpu() for n, p in self.named_parameters() if p.grad is not None
            },
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resumed = checkpoint.get("tdmpc2_resume")  # applied when training starts

    def on_train_start(self) -> None:
        state, self._resumed = getattr(self, "_resumed", None), None
        if state is None:
            return
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and len(state["cuda_rng"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        params = dict(self.named_parameters())
        for name, grad in state["grads"].items():
            if name in params and params[name].shape == grad.shape:
                params[name].grad = grad.to(params[name].device, params[name].dtype)

    def check_losses(self) -> None:
        """Raise `NonFiniteLossError` naming the first update with a NaN/Inf loss, if any."""
        update = int(self._bad_update)
        if update > 0:
            terms = [k for k, b in zip(LOSS_TERMS, self._bad_terms.tolist(), strict=True) if b]
            raise nonfinite_loss_error(update, terms)

    def export_agent(self) -> TDMPC2 | None:
        """A plain `TDMPC2` with the trained weights (and running Q scale). Under FSDP this
        gathers the shards: call it on every rank; ranks other than 0 get None."""
        if not self.sharded:
            return self.agent
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(self.agent, options=options)
        if self.trainer.global_rank != 0:
            return None
        agent = TDMPC2(self.cfg)
        agent.load_state_dict(state)
        return agent


class NonFiniteLossCheck(Callback):
    """Stop pretraining on a NaN/Inf loss: checks every ``every`` updates (a divisor of the
    checkpoint interval, so no checkpoint is written after one; Lightning runs checkpoint
    callbacks last) and at the last update."""

    def __init__(self, every: int):
        self.every = every

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        if trainer.global_step % self.every == 0 or trainer.global_step >= trainer.max_steps:
            pl_module.check_losses()


class TaskSetEvaluation(Callback):
    """Every ``every`` updates, evaluate the model on ``tasks`` (``episodes`` each, in
    ``workers`` processes) with MPPI in eval mode and log, on rank 0, per task
    ``eval/<task>/return``, ``/success`` and ``/score`` and ``eval/mean_normalized_score``
    through the Trainer's logger (the run's metrics CSV), at the update's step."""

    def __init__(self, every: int, tasks: str | list[str], episodes: int = 10,
                 workers: int = 1, seed: int = 0):  # fmt: skip
        if every < 1 or episodes < 1:
            raise ValueError(f"Got eval every={every}, episodes={episodes}; both must be >= 1.")
        self.every, self.tasks, self.episodes = every, resolve_tasks(tasks), episodes
        self.workers, self.seed = workers, seed

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        if trainer.global_step % self.every or not trainer.is_global_zero:
            return
        from tdmpc2_model.evaluation.taskset import evaluate_tasks

        model = pl_module.agent.model
        model.eval()  # no Q dropout while acting
        try:
            result = evaluate_tasks(pl_module.agent, self.tasks, self.episodes, self.workers,
                                    self.seed, progress=False)  # fmt: skip
        finally:
            model.train()
        metrics = {"eval/mean_normalized_score": result.mean_normalized_score}
        for t in result.tasks:
            metrics[f"eval/{t.task}/return"] = t.mean_return
            metrics[f"eval/{t.task}/score"] = t.normalized_score
            if t.success_rate is not None:
                metrics[f"eval/{t.task}/success"] = t.success_rate
        if trainer.logger is not None:
            trainer.logger.log_metrics(metrics, step=trainer.global_step)


# ------------------------------------------------------------------------- pretraining
def _device_kind(trainer: L.Trainer) -> str:
    return type(trainer.accelerator).__name__.removesuffix("Accelerator").lower()


def resolve_data(spec: str) -> str:
    """A dataset location for ``open_dataset``: a local dir or ``hf://`` URL as given; ``mt80``
    / ``mt30`` / ``OWNER/NAME`` are downloaded first (cached, resumable; the legacy mt80/mt30
    chunks are converted on the way)."""
    if "://" in spec or Path(spec).exists():
        return spec
    from tdmpc2_data.hub import download
    from tdmpc2_data.hub_api import (
        PUBLISHED_DATASETS,
        is_repo_id,
        looked_up_locally_first,
        refuse_mistyped_path,
    )

    refuse_mistyped_path(spec, "--data")
    if spec in PUBLISHED_DATASETS:
        return str(download(spec))
    if is_repo_id(spec):
        with looked_up_locally_first(f"--data {spec}"):
            return str(download(spec))
    raise FileNotFoundError(
        f"--data {spec!r}: no such directory, and not hf://..., mt80, mt30 or OWNER/NAME."
    )


def hub_datasets(sources: Sequence[str]) -> list[str]:
    """The Hub dataset ids among ``--data`` sources (``hf://datasets/OWNER/NAME...``, or an
    ``OWNER/NAME`` that is not a local path): the model card's ``datasets`` metadata. The
    names ``mt80`` / ``mt30`` are left out: by default they are the legacy chunks of a model
    repo, not a Hub dataset."""
    from tdmpc2_data.hub_api import is_repo_id

    ids = []
    for spec in sources:
        if spec.startswith("hf://datasets/"):
            spec = "/".join(spec.removeprefix("hf://datasets/").split("/")[:2]).split("@")[0]
        elif Path(spec).exists():
            continue
        if is_repo_id(spec) and spec not in ids:
            ids.append(spec)
    return ids


def selected_data(
    locations: Sequence[str], select: str | dict[str, Any] | None
) -> tuple[list[Any], dict[str, Any] | None]:
    """The data to sample (the locations, or a view of each) and the record of the choice:
    the filters and, per dataset, the episodes and transitions kept of how many."""
    if not select:
        return list(locations), None
    from tdmpc2_data import open_dataset
    from tdmpc2_data.curate import parse_selection

    filters = parse_selection(select) if isinstance(select, str) else dict(select)
    views = [open_dataset(loc).select(**filters) for loc in locations]
    record = {
        "filters": views[0].filters,
        "datasets": [
            {
                "location": v.dataset.location,
                "episodes": v.num_episodes,
                "of_episodes": v.dataset.num_episodes,
                "transitions": v.num_transitions,
                "of_transitions": v.dataset.num_transitions,
            }
            for v in views
        ],  # fmt: skip
    }
    return views, record


def select_text(selection: dict[str, Any]) -> str:
    """``tasks=mt30,top_fraction=0.5 (1200 of 2400 episodes)``."""
    from tdmpc2_data.curate import format_selection

    kept = sum(d["episodes"] for d in selection["datasets"])
    total = sum(d["of_episodes"] for d in selection["datasets"])
    return f"{format_selection(selection['filters'])} ({kept} of {total} episodes)"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's local ``.ckpt`` save writes into the system temp dir and moves the file
    across: on a full disk that leaves a torn ``.ckpt``, the newest, which ``--resume``
    picks. This writes next to the target and renames (``save_torch_atomically``)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_torch_atomically(checkpoint, path)


def _strategy(strategy: str, devices: Any, num_nodes: int) -> Any:
    """``fsdp``: ModelParallelStrategy (FSDP2 over all ranks, checkpoints gathered into one
    file). Otherwise DDP with ``find_unused_parameters`` when there is more than one device:
    each of the two backward passes of an update leaves the other optimizer's parameters
    unused."""
    if strategy not in STRATEGIES:
        raise ValueError(f"Got strategy={strategy!r}; use one of {STRATEGIES}.")
    if isinstance(devices, (list, tuple)):
        count = len(devices)
    elif devices in ("auto", -1, "-1"):
        count = max(1, torch.cuda.device_count())
    else:
        count = int(devices)
    if strategy == "fsdp":
        return ModelParallelStrategy(data_parallel_size=num_nodes * count, tensor_parallel_size=1,
                                     save_distributed_checkpoint=False)  # fmt: skip
    if strategy == "ddp" or num_nodes > 1 or count > 1:
        return DDPStrategy(find_unused_parameters=True)
    return "auto"


#: sizes meant for GPUs: on a CPU an update of theirs at batch 1024 takes about a minute
GPU_SIZES = ("48M", "317M")


def check_cpu_run(
    size: str, devices: Any, batch_size: int, precision: str, config: dict[str, Any], say: bool
) -> None:
    """On a machine without a GPU (the accelerator resolving to CPU): refuse ``devices`` N
    beyond the cores (N CPU processes), and a run whose estimated peak memory
    (``memory.estimate_pretrain_bytes``, N processes) exceeds the available memory; when
    ``say``, announce the CPU processes and the estimate in one line each."""
    import psutil

    from tdmpc2_data.tasks import TASK_SETS
    from tdmpc2_model.core.memory import estimate_pretrain_bytes

    cores = len(os.sched_getaffinity(0))
    if isinstance(devices, (list, tuple)):
        ranks = len(devices)
    else:
        ranks = cores if devices in (-1, "-1") else 1 if devices == "auto" else int(devices)
    if ranks > cores:
        raise ValueError(
            f"--devices {devices}: no GPU here, so that would be {ranks} CPU processes on "
            f"{cores} cores; use --devices 1 (at most {cores}), or a machine with GPUs."
        )
    cfg = TDMPC2Config(size=size, tasks=TASK_SETS["mt80"], **config)  # the widest table
    need = ranks * estimate_pretrain_bytes(cfg, batch_size, cfg.horizon, precision)
    free = psutil.virtual_memory().available
    each = f"{ranks} processes" if ranks > 1 else "one process"
    what = f"--size {size} --batch-size {batch_size} on CPU ({each})"
    if need > free:
        raise ValueError(
            f"{what}: needs about {need / 1e9:.1f} GB (estimate) and {free / 1e9:.1f} GB is "
            "available; use a smaller --size or --batch-size, or a machine with a GPU."
        )
    if say:
        if ranks > 1:
            print(f"--devices {devices}: no GPU here: {ranks} CPU processes (DDP over gloo), "
                  "each with a copy of the model", flush=True)  # fmt: skip
        meant = f"; {size} is meant for GPUs" if size in GPU_SIZES else ""
        print(f"{what}: estimated peak memory {need / 1e9:.1f} GB of {free / 1e9:.1f} GB "
              f"available (plus the --cache-gb of decoded episodes){meant}", flush=True)  # fmt: skip


def pretrain(
    settings: PretrainConfig, *, progress: bool = True, record: dict[str, Any] | None = None
) -> Path | None:
    """Pretrain a ``settings.size`` model on shard datasets ``settings.data`` (dirs, ``hf://``
    URLs, ``mt80``, ``mt30``); the model's task table and widths are the data's. The settings
    are explained in `PretrainConfig`: ``config`` holds further `TDMPC2Config` fields;
    ``exclude_tasks`` are never sampled but kept in the task table, so that they can be
    finetuned later (the few-shot split); ``eval_every`` N > 0 evaluates every N updates
    (`TaskSetEvaluation`); ``select`` trains on a view of each dataset
    (``tdmpc2_data.curate.select`` filters, as a dict or ``"tasks=mt30,top_fraction=0.5"``),
    recorded in the run's hyperparameters (``selection``). ``record``: the command's entry for
    ``OUT/run_config.json`` (``run_record.py``). Returns ``OUT/final`` on rank 0 (which
    writes it), None on the other ranks."""
    from tdmpc2_data.datamodule import WindowDataModule
    from tdmpc2_model.formats.run_checkpoint import save_atomically
    from tdmpc2_model.outputs.loggers import parse_loggers
    from tdmpc2_model.outputs.metrics_csv import lightning_loggers
    from tdmpc2_model.outputs.run_record import append_record

    data, out, size, seed = settings.data, settings.out, settings.size, settings.seed
    max_steps, batch_size, resume = settings.max_steps, settings.batch_size, settings.resume
    devices = int(settings.devices) if str(settings.devices).isdigit() else settings.devices
    num_nodes, strategy = settings.num_nodes, settings.strategy
    precision, accelerator = settings.precision, settings.accelerator
    cache_bytes, num_workers = int(settings.cache_gb * (1 << 30)), settings.num_workers
    checkpoint_every, log_every = settings.checkpoint_every, settings.log_every
    config, loggers, select = settings.config, settings.logger, settings.select
    exclude_tasks = resolve_tasks(settings.exclude_tasks) if settings.exclude_tasks else []
    eval_every, eval_episodes = settings.eval_every, settings.eval_episodes
    eval_tasks = resolve_tasks(settings.eval_tasks) if settings.eval_tasks else None
    if precision not in PRECISIONS:
        raise ValueError(
            f"Got precision={precision!r}; use one of {PRECISIONS} (16-mixed would need a "
            "grad scaler before the per-optimizer clipping)."
        )
    if max_steps < 1:
        raise ValueError(f"Got max_steps={max_steps}; must be >= 1.")
    out, config, loggers = Path(out), dict(config or {}), parse_loggers(loggers)
    clash = sorted({"size", "tasks", "obs_dim", "action_dim", "batch_size"} & set(config))
    if clash:
        raise ValueError(
            f"--config {', '.join(clash)}: set by pretraining itself (--size, --batch-size; the "
            "task table and widths are the data's)."
        )
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"--accelerator {accelerator}: no CUDA GPU here (torch {torch.__version__}"
            f"{', a CPU-only build' if torch.version.cuda is None else ''}); use cpu or auto."
        )
    cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if cpu and os.environ.get("LOCAL_RANK", "0") == "0":  # the launching process, once
        check_cpu_run(size, devices, batch_size, precision, config, say=progress)
    L.seed_everything(seed, workers=True, verbose=False)
    sources = [os.fspath(d) for d in ([data] if isinstance(data, (str, os.PathLike)) else data)]
    locations = [resolve_data(s) for s in sources]
    data, selection = selected_data(locations, select)
    horizon = config.get("horizon", TDMPC2Config.horizon)  # the data is read before the model
    dm = WindowDataModule(data, batch_size=batch_size, horizon=horizon,
                          cache_bytes=cache_bytes, seed=seed, num_workers=num_workers,
                          exclude_tasks=list(exclude_tasks))  # fmt: skip
    cfg = TDMPC2Config(size=size, tasks=dm.tasks, obs_dim=dm.obs_dim, action_dim=dm.action_dim,
                       batch_size=batch_size, **config)  # fmt: skip
    chosen = f", episodes selected by {select_text(selection)}" if selection else ""
    training_data = f"offline pretraining on {', '.join(sources)}{chosen} ({max_steps} updates)"
    module = TDMPC2Module(cfg, training_data, selection)
    callbacks: list[Callback] = []
    if eval_every:
        from tdmpc2_model.evaluation.episodes import check_task

        if strategy == "fsdp":
            raise ValueError("--eval-every needs the whole model on rank 0; use ddp, not fsdp.")
        evaluation = TaskSetEvaluation(eval_every, list(eval_tasks or cfg.task_names),
                                       eval_episodes, seed=seed)  # fmt: skip
        for name in evaluation.tasks:
            check_task(module.agent, name)  # before training, not at the first evaluation
        callbacks.append(evaluation)
    checkpoints = out / LIGHTNING_DIR
    if resume is None and (checkpoints / "last.ckpt").exists():
        raise ValueError(
            f"{out} already holds a pretraining run; pass --resume to continue it, or "
            "choose another --out (nothing was changed)."
        )
    ckpt_path = resume
    if resume == "auto":
        ckpt_path = str(checkpoints / "last.ckpt") if (checkpoints / "last.ckpt").exists() else None
    elif resume is not None and not Path(resume).is_file():
        raise FileNotFoundError(f"--resume {resume}: no such Lightning checkpoint file.")
    if ckpt_path is not None:  # a hostile or foreign file: one line before the Trainer starts
        from tdmpc2_model.formats.lightning_ckpt import read_lightning_checkpoint
        from tdmpc2_model.formats.pretrained import check_finite

        _, tensors, _ = read_lightning_checkpoint(Path(ckpt_path), mmap=True)
        check_finite(tensors, ckpt_path)  # a NaN weight: refused here, not at the first update
    bars = progress and bars_enabled()  # not into a log file (``tdmpc2_data.progress``)
    if bars:
        callbacks.append(UpdatesBar())
    with quiet_lightning():
        trainer = L.Trainer(
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=_strategy(strategy, devices, num_nodes),
            precision=precision,
            max_steps=max_steps,
            max_epochs=-1,
            default_root_dir=out,
            logger=lightning_loggers(loggers, out),
            log_every_n_steps=log_every,
            callbacks=[
                NonFiniteLossCheck(math.gcd(log_every, checkpoint_every)),
                ModelCheckpoint(checkpoints, save_last=True, every_n_train_steps=checkpoint_every),
                *callbacks,
            ],  # fmt: skip
            plugins=[AtomicCheckpointIO()],
            enable_progress_bar=bars,
            enable_model_summary=False,  # one line instead (below)
            use_distributed_sampler=False,  # the sampler splits shards by rank itself
            num_sanity_val_steps=0,
        )
        if trainer.is_global_zero:
            append_record(out, record, device=f"{trainer.num_devices} {_device_kind(trainer)}")
        if progress and trainer.is_global_zero:
            print(f"pretraining a {cfg.size} model ({module.agent.model.total_params:,} params) "
                  f"on {len(cfg.task_names)} tasks for {max_steps} updates of {batch_size} "
                  f"windows on {trainer.num_devices} {_device_kind(trainer)} -> {out}", flush=True)  # fmt: skip
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        except SystemExit:  # Lightning ends a Ctrl-C (or SIGTERM, see the CLIs) with exit(1)
            if trainer.interrupted:
                raise KeyboardInterrupt from None  # the caller says what --resume continues
            raise
    trainer.save_checkpoint(checkpoints / "last.ckpt", weights_only=False)  # for --resume auto
    agent = module.export_agent()  # collective under FSDP
    if agent is None or not trainer.is_global_zero:
        return None
    if hub_datasets(sources):
        provenance = getattr(agent, "hub_provenance", None) or {}
        agent.hub_provenance = {**provenance, "datasets": hub_datasets(sources)}
    return save_atomically(agent, out / FINAL_DIR, training_data)
