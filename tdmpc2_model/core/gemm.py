"""fp32 matmuls of the world model through oneDNN on CPU.

PyTorch runs fp32 ``F.linear`` / ``baddbmm`` on CPU through MKL, which on some CPUs does not
take its best code path: on the AMD EPYC (Zen 5) of bench/RESULTS.md it reaches ~105
GFLOP/s on one core at the model's shapes, while oneDNN's fp32 GEMM (the kernel Inductor
uses for packed linears, ``torch.ops.mkldnn._linear_pointwise``) reaches ~240 GFLOP/s,
forward and backward, with the same fp32 accuracy. Inside ``functional.fast_kernels``
(planning and updates) and under ``torch.compile`` the linear layers use it; everywhere
else (other devices and dtypes, autocast, no oneDNN, outside the block) they call
``F.linear`` / ``baddbmm`` as before, so model methods stay bit-identical to aten there.
Results differ from MKL's in the last float bits (summation order).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import register_flop_formula

from tdmpc2_model.core.functional import _fast

_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
_MIN_MACS = 1 << 20  # below ~1M multiply-adds oneDNN's ~20 us call overhead outweighs its speed


@torch.library.custom_op("tdmpc2::linear", mutates_args=())
def _onednn_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """x @ w.T + b with oneDNN (any strides; x may have leading dims). A custom op, so that
    Inductor calls it as an opaque kernel (its own lowering of the oneDNN op needs frozen
    weights)."""
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")


@_onednn_linear.register_fake
def _(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], w.shape[0])


def _setup(ctx, inputs, output) -> None:
    x, w, b = inputs
    ctx.save_for_backward(x, w)
    ctx.has_bias = b is not None


def _backward(ctx, grad: torch.Tensor):
    x, w = ctx.saved_tensors
    gx = gw = gb = None
    flat = grad.reshape(-1, grad.shape[-1])
    if ctx.needs_input_grad[0]:
        gx = _onednn_linear(grad, w.t(), None)  # grad @ w
    if ctx.needs_input_grad[1]:
        gw = _onednn_linear(flat.t(), x.reshape(-1, x.shape[-1]).t(), None)  # grad.T @ x
    if ctx.has_bias and ctx.needs_input_grad[2]:
        gb = flat.sum(0)
    return gx, gw, gb


_onednn_linear.register_autograd(_backward, setup_context=_setup)


@register_flop_formula(torch.ops.tdmpc2.linear)
def _flops(x_shape, w_shape, *args, **kwargs) -> int:
    """So that ``FlopCounterMode`` counts these GEMMs like ``addmm``."""
    return 2 * math.prod(x_shape[:-1]) * w_shape[0] * w_shape[1]


def _use_onednn(x: torch.Tensor, w: torch.Tensor) -> bool:
    return (
        _ONEDNN
        and x.device.type == "cpu"
        and x.dtype == w.dtype == torch.float32
        and x.numel() * w.shape[-2] >= _MIN_MACS
        and not torch.is_autocast_enabled("cpu")
        and (torch.compiler.is_compiling() or _fast(x))
    )


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, w, b)``; on CPU in fp32 inside ``fast_kernels`` (or compiled) via oneDNN."""
    if _use_onednn(x, w):
        return _onednn_linear(x, w, b)
    return F.linear(x, w, b)


def stacked_linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-member linear of an ensemble: h [num, N, in], w [num, out, in], b [num, out] ->
    [num, N, out]. One ``baddbmm``, or one oneDNN GEMM per member where ``linear`` would
    use oneDNN (twice as fast as MKL's batched GEMM there, even with the final copy)."""
    if _use_onednn(h[0], w[0]):
        return torch.stack([_onednn_linear(h[i], w[i], b[i]) for i in range(h.shape[0])])
    return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))


class Linear(torch.nn.Linear):
    """``nn.Linear`` whose forward is ``gemm.linear`` (same parameters and state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
