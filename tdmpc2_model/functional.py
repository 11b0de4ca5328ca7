"""Small pure functions of TD-MPC2: symlog scale, two-hot regression, the policy's
squashed Gaussian. Numerically as the original implementation (parity to 1e-5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_HALF_LOG_2PI = 0.9189385175704956


def symlog(x: torch.Tensor) -> torch.Tensor:
    """sign(x) log(1 + |x|): compresses large rewards/values (DreamerV3)."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: torch.Tensor) -> torch.Tensor:
    """Inverse of symlog."""
    return torch.sign(x) * torch.expm1(torch.abs(x))


def two_hot(x: torch.Tensor, num_bins: int, vmin: float, vmax: float) -> torch.Tensor:
    """Soft two-hot encoding of scalars ``x`` [...] on ``num_bins`` bins of the symlog
    range [vmin, vmax]; returns [..., num_bins]."""
    bin_size = (vmax - vmin) / (num_bins - 1)
    pos = (torch.clamp(symlog(x), vmin, vmax) - vmin) / bin_size
    idx = torch.floor(pos)
    offset = (pos - idx).unsqueeze(-1)
    idx = idx.long().unsqueeze(-1)
    out = torch.zeros(*x.shape, num_bins, device=x.device, dtype=x.dtype)
    out = out.scatter(-1, idx, 1 - offset)
    return out.scatter(-1, (idx + 1) % num_bins, offset)


def two_hot_inv(logits: torch.Tensor, vmin: float, vmax: float) -> torch.Tensor:
    """Scalar value of two-hot logits [..., num_bins]: symexp of the expected bin; [..., 1]."""
    bins = torch.linspace(vmin, vmax, logits.shape[-1], device=logits.device, dtype=logits.dtype)
    x = torch.sum(F.softmax(logits, dim=-1) * bins, dim=-1, keepdim=True)
    return symexp(x)


def soft_ce(logits: torch.Tensor, target: torch.Tensor, vmin: float, vmax: float) -> torch.Tensor:
    """Cross entropy between logits [..., bins] and the two-hot encoding of scalar targets
    [...] (broadcast against the logits' leading dims); returns [...]."""
    target = two_hot(target, logits.shape[-1], vmin, vmax)
    return -(target * F.log_softmax(logits, dim=-1)).sum(-1)


def log_std(x: torch.Tensor, low: float, dif: float) -> torch.Tensor:
    """Map unbounded outputs to log std in [low, low + dif]."""
    return low + 0.5 * dif * (torch.tanh(x) + 1)


def gaussian_logprob(eps: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(eps; 0, 1) of a reparameterised sample with the given log std; [..., 1]."""
    return (-0.5 * eps.pow(2) - log_std - _HALF_LOG_2PI).sum(-1, keepdim=True)


def squash(
    mean: torch.Tensor, action: torch.Tensor, log_prob: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """tanh-squash mean and sample into [-1, 1] and correct the log probability."""
    mean, action = torch.tanh(mean), torch.tanh(action)
    log_prob = log_prob - torch.log(F.relu(1 - action.pow(2)) + 1e-6).sum(-1, keepdim=True)
    return mean, action, log_prob


def simnorm(x: torch.Tensor, group: int) -> torch.Tensor:
    """Simplicial normalisation: softmax over consecutive groups of ``group`` units."""
    shape = x.shape
    return F.softmax(x.view(*shape[:-1], -1, group), dim=-1).view(shape)
