"""Small pure functions of TD-MPC2: symlog scale, two-hot regression, the policy's
squashed Gaussian. Numerically as the original implementation (parity to 1e-5)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

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
    idx = torch.nan_to_num(torch.floor(pos), nan=0.0)  # NaN stays in offset: a NaN loss
    offset = (pos - idx).unsqueeze(-1)
    idx = idx.long().unsqueeze(-1)
    out = torch.zeros(*x.shape, num_bins, device=x.device, dtype=x.dtype)
    out = out.scatter(-1, idx, 1 - offset)
    return out.scatter(-1, (idx + 1) % num_bins, offset)


def two_hot_inv(logits: torch.Tensor, vmin: float, vmax: float) -> torch.Tensor:
    """Scalar value of two-hot logits [..., num_bins]: symexp of the expected bin; [..., 1].
    Computed in float32 at least (bf16 bins and sums would round values to ~3 digits)."""
    logits = logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits
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


def gumbel_max_sample(probs: torch.Tensor) -> torch.Tensor:
    """One index drawn from the categorical ``probs`` [N] by the Gumbel-max trick
    (argmax of log p + Gumbel noise), as the original samples the executed elite."""
    gumbel = -torch.empty_like(probs).exponential_().log()
    return (probs.log() + gumbel).argmax()


def simnorm(x: torch.Tensor, group: int) -> torch.Tensor:
    """Simplicial normalisation: softmax over consecutive groups of ``group`` units.
    Under ``fast_kernels`` on CPU the softmax runs over a transposed layout (a softmax over
    8 innermost values is ~10x slower there than over a strided dim)."""
    shape = x.shape
    groups = x.view(*shape[:-1], -1, group)
    if not _fast(x):
        return F.softmax(groups, dim=-1).view(shape)
    return F.softmax(groups.transpose(-1, -2).contiguous(), dim=-2).transpose(-1, -2).reshape(shape)


class _Mish(torch.autograd.Function):
    """x * tanh(softplus(x)) through one sigmoid s: with a = s (2 - s),
    tanh(softplus(x)) = a / (2 - a). Gradient: t + x (1 - t^2) s for t = a / (2 - a)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(x)
        t = torch.rsub(s, 2).mul_(s)
        t.div_(torch.rsub(t, 2))
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(x, t, s)
            return x * t
        return t.mul_(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x, t, s = ctx.saved_tensors
        return t.mul(t).neg_().add_(1).mul_(x).mul_(s).add_(t).mul_(grad)


_FAST = contextvars.ContextVar("tdmpc2_fast_kernels", default=False)


@contextlib.contextmanager
def fast_kernels() -> Iterator[None]:
    """CPU fast paths for Mish and dropout inside this block (the agent's update and
    planner use it). Results differ from aten's in the last float bits and the dropout
    masks come from a different random stream, so outside the block every model method
    reproduces the original implementation bit for bit."""
    token = _FAST.set(True)
    try:
        yield
    finally:
        _FAST.reset(token)


def _fast(x: torch.Tensor) -> bool:
    return not torch.compiler.is_compiling() and x.device.type == "cpu" and _FAST.get()


def mish(x: torch.Tensor) -> torch.Tensor:
    """Mish, x tanh(softplus(x)). Under ``fast_kernels`` on CPU: a sigmoid-based form,
    several times faster than aten's (whose tanh is slow there), equal within 2e-6. Under
    ``torch.compile``: tanh(softplus(x)) = e (e + 2) / (e (e + 2) + 2) with e = exp(x),
    which Inductor fuses into one cheap loop (its lowering of aten's mish is ~8x slower)."""
    if torch.compiler.is_compiling():
        e = torch.exp(torch.clamp(x, max=20.0))  # mish(x) = x to float precision above 20
        p = e * (e + 2)
        return x * p / (p + 2)
    return _Mish.apply(x) if _fast(x) else F.mish(x)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout``. Under ``fast_kernels`` on CPU with small ``p``, the dropped positions
    are drawn as geometric gaps: the same iid Bernoulli(p) mask from ~p*n random numbers
    instead of n."""
    if not training or p == 0:
        return x
    if p > 0.1 or not _fast(x):
        return F.dropout(x, p, training=True)
    n = x.numel()
    chunk = int(n * p + 6 * (n * p) ** 0.5 + 16)
    positions = torch.empty(0, dtype=torch.float64)
    end = -1.0
    while end < n - 1:
        gaps = torch.empty(chunk, dtype=torch.float64).geometric_(p)
        positions = torch.cat([positions, gaps.cumsum(0) + end])
        end = positions[-1].item()
    mask = torch.full((n,), 1 / (1 - p), dtype=x.dtype)
    mask[positions[positions < n].long()] = 0
    return x * mask.view(x.shape)
