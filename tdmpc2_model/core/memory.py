"""Rough peak memory (RSS) of one pretraining process, from the model's parameter count and
the batch: the interpreter with torch and Lightning, weights + gradients + Adam's two moments
(16 bytes a parameter), the target Q ensemble (4 bytes a value), and the activations an
update keeps for its backward pass, per window of the batch.

Calibrated on a CPU with ``tdmpc2-pretrain --max-steps 3`` (32-true): 1M at batch 256 / 1024
peaked at 0.62 / 0.93 GB (estimates 0.63 / 0.94), 5M at 0.81 / 1.43 GB (0.81 / 1.44), 19M
at batch 512 at 1.71 GB (1.74); the 317M model on mt80 at batch 1024 in bf16-mixed peaked
at 12.3 GB (12.7). The one place that estimates memory: `tdmpc2_model.training.pretrain` announces and
refuses CPU runs with it, and every agent refuses a model or batch that cannot fit.
"""

from __future__ import annotations

import torch

from tdmpc2_model.core.config import ARCH_FIELDS, TDMPC2Config

#: the process before the model: Python, torch, Lightning, the loader (measured: 0.47-0.49 GB)
BASE_BYTES = 480 << 20
#: activation bytes kept per window = this x 4 bytes x (horizon + 1) x the widths of the
#: layers an update runs (fitted on 1M and 5M: 5.3 and 5.0)
ACTIVATION_FACTOR = 5.2
#: bf16-mixed keeps activations at this share of float32's (fitted on the 317M run), plus
#: a bf16 copy of the weights (2 bytes a parameter)
BF16_ACTIVATIONS = 0.6


def parameter_counts(cfg: TDMPC2Config) -> tuple[int, int]:
    """(parameters, buffer values) of ``cfg``'s world model, counted without allocating it."""
    from tdmpc2_model.core.world_model import WorldModel

    with torch.device("meta"):
        model = WorldModel(cfg)
    return (sum(p.numel() for p in model.parameters()),
            sum(b.numel() for b in model.buffers()))  # fmt: skip


def training_bytes(
    cfg: TDMPC2Config,
    batch_size: int,
    horizon: int,
    precision: str = "32-true",
    new_model: bool = True,
) -> tuple[int, int]:
    """(model, update) bytes of training ``cfg``: its weights with gradients and Adam's
    moments (0 when not ``new_model``: a loaded model's tensors exist already), and the
    activations an update of ``batch_size`` windows of ``horizon`` steps keeps."""
    c = cfg
    widths = (c.num_enc_layers * c.enc_dim + c.latent_dim
              + (3 + c.num_q) * 2 * c.mlp_dim + (1 + c.num_q) * c.num_bins)  # fmt: skip
    update = batch_size * ACTIVATION_FACTOR * 4 * (horizon + 1) * widths
    model = 0
    if new_model:
        params, buffers = parameter_counts(cfg)
        model = 16 * params + 4 * buffers
        if precision.startswith("bf16"):
            model += 2 * params
    if precision.startswith("bf16"):
        update *= BF16_ACTIVATIONS
    return model, int(update)


def estimate_pretrain_bytes(
    cfg: TDMPC2Config, batch_size: int, horizon: int, precision: str = "32-true"
) -> int:
    """Estimated peak RSS in bytes of one pretraining process of ``cfg`` at ``batch_size``
    windows of ``horizon`` steps (within 4% of the runs in the module docstring)."""
    return BASE_BYTES + sum(training_bytes(cfg, batch_size, horizon, precision))


def check_memory(cfg: TDMPC2Config, new_model: bool) -> None:
    """Refuse, naming the fields, a model or batch that cannot fit in this machine's
    available memory (``training_bytes``), before anything is allocated."""
    import psutil

    model, update = training_bytes(cfg, cfg.batch_size, cfg.horizon, new_model=new_model)
    available = psutil.virtual_memory().available
    if model + update <= available:
        return
    if update >= model:
        what = f"batch_size={cfg.batch_size}: an update (horizon {cfg.horizon})"
        fix = "a smaller batch size (--batch-size)"
    else:
        what = f"{', '.join(f'{k}={getattr(cfg, k)}' for k in ARCH_FIELDS)}: training this model"
        fix = "a smaller size"
    raise ValueError(
        f"Got {what} needs about {(model + update) / 1e9:,.1f} GB (model "
        f"{model / 1e9:,.1f} GB, update {update / 1e9:,.1f} GB); this machine has "
        f"{available / 1e9:,.1f} GB available. Use {fix}."
    )
