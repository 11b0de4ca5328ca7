"""oneDNN GEMMs (``tdmpc2_model.core.gemm``): the same values and gradients as ``F.linear`` /
``baddbmm`` inside ``fast_kernels``, and exactly aten's path everywhere else."""

import pytest
import torch
import torch.nn.functional as F

from tdmpc2_model.core import gemm
from tdmpc2_model.core.functional import fast_kernels

pytestmark = pytest.mark.skipif(not gemm._ONEDNN, reason="this torch build has no oneDNN")


def grads(fn, *tensors):
    leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in tensors]
    out = fn(*leaves)
    out.backward(torch.linspace(-1, 1, out.numel()).view(out.shape))
    return out.detach(), [t.grad for t in leaves if t.requires_grad]


@pytest.mark.parametrize("lead", [(600,), (3, 200)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_aten_forward_and_backward(lead, bias):
    torch.manual_seed(0)
    x = torch.randn(*lead, 70, requires_grad=True)
    w = torch.randn(45, 70, requires_grad=True)
    b = torch.randn(45, requires_grad=True) if bias else None
    args = (x, w) if b is None else (x, w, b)
    want, want_grads = grads(F.linear, *args)
    with fast_kernels():
        got, got_grads = grads(gemm.linear, *args)
        assert "tdmpc2" in type(gemm.linear(x, w, b).grad_fn).__name__.lower()  # oneDNN
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, h in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, h, rtol=1e-5, atol=1e-4)


def test_linear_accepts_strided_inputs_and_frozen_weights():
    x = torch.randn(512, 300).t()  # [300, 512], non-contiguous
    w = torch.randn(512, 256).t()  # [256, 512], non-contiguous
    with fast_kernels():
        out = gemm.linear(x, w.detach())
    torch.testing.assert_close(out, x @ w.t(), rtol=1e-5, atol=1e-4)  # sums of 512 terms


def test_stacked_linear_matches_baddbmm():
    torch.manual_seed(1)
    h = torch.randn(3, 500, 40, requires_grad=True)
    w = torch.randn(3, 60, 40, requires_grad=True)
    b = torch.randn(3, 60, requires_grad=True)
    want, want_grads = grads(
        lambda h, w, b: torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2)), h, w, b
    )
    with fast_kernels():
        got, got_grads = grads(gemm.stacked_linear, h, w, b)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, e in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-4)


def test_aten_path_outside_fast_kernels_and_under_autocast():
    x, w, b = torch.randn(600, 64), torch.randn(32, 64), torch.randn(32)
    assert torch.equal(gemm.linear(x, w, b), F.linear(x, w, b))  # bit-identical outside
    with fast_kernels():  # too small for oneDNN's call overhead to pay off
        assert torch.equal(gemm.linear(x[:8], w, b), F.linear(x[:8], w, b))
    with fast_kernels(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert gemm.linear(x, w, b).dtype == torch.bfloat16  # autocast's bf16 matmul
    with fast_kernels():
        assert gemm.linear(x.double(), w.double()).dtype == torch.float64  # aten for fp64
    layer = gemm.Linear(64, 4)
    assert set(layer.state_dict()) == {"weight", "bias"}
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))


def test_flop_counter_counts_onednn_gemms_like_aten():
    from torch.utils.flop_counter import FlopCounterMode

    x, w = torch.randn(3, 100, 80, requires_grad=True), torch.randn(64, 80, requires_grad=True)
    counts = []
    for ctx in (torch.enable_grad, fast_kernels):
        with FlopCounterMode(display=False) as counter, ctx():
            gemm.linear(x, w).sum().backward()
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] == 3 * 2 * 300 * 80 * 64  # forward, grad x, grad w
