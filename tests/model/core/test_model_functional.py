"""Math helpers: two-hot regression round trip, and the CPU fast kernels agree with aten."""

import pytest
import torch
import torch.nn.functional as F

from tdmpc2_model.core import functional as Fn


def test_symlog_symexp_are_inverse():
    x = torch.tensor([-1e4, -3.0, -0.5, 0.0, 0.5, 3.0, 1e4])
    torch.testing.assert_close(Fn.symexp(Fn.symlog(x)), x)


def test_two_hot_encodes_and_decodes_scalars():
    x = torch.tensor([-500.0, -2.5, 0.0, 0.3, 7.0, 1000.0])
    enc = Fn.two_hot(x, 101, -10, 10)
    assert enc.shape == (6, 101)
    torch.testing.assert_close(enc.sum(-1), torch.ones(6))
    assert ((enc > 0).sum(-1) <= 2).all()
    decoded = Fn.two_hot_inv(torch.log(enc.clamp_min(1e-30)), -10, 10).squeeze(-1)
    torch.testing.assert_close(decoded, x, rtol=1e-4, atol=1e-4)
    # soft cross entropy is smallest at the target's own encoding
    logits = torch.log(enc.clamp_min(1e-30))
    assert (Fn.soft_ce(logits, x, -10, 10) < Fn.soft_ce(logits.roll(1, 0), x, -10, 10)).all()


def test_fast_mish_matches_aten_with_gradient():
    x = (torch.randn(300, 64) * 5).requires_grad_()
    ref = x.detach().clone().requires_grad_()
    with Fn.fast_kernels():
        y = Fn.mish(x)
    F.mish(ref).backward(torch.ones_like(x))
    y.backward(torch.ones_like(x))
    torch.testing.assert_close(y, F.mish(ref), atol=2e-6, rtol=1e-6)
    torch.testing.assert_close(x.grad, ref.grad, atol=4e-6, rtol=1e-5)
    extreme = torch.tensor([-1e4, -100.0, 100.0, 1e4])
    with Fn.fast_kernels():
        assert torch.equal(Fn.mish(extreme), torch.tensor([-0.0, -0.0, 100.0, 1e4]))
    assert Fn.mish(extreme).grad_fn is None  # outside the block: aten's mish


def test_fast_simnorm_matches_softmax_groups():
    x = torch.randn(10, 3, 64) * 4
    with Fn.fast_kernels():
        fast = Fn.simnorm(x, 8)
    torch.testing.assert_close(fast, Fn.simnorm(x, 8))
    torch.testing.assert_close(fast.view(10, 3, 8, 8).sum(-1), torch.ones(10, 3, 8))


@pytest.mark.parametrize("p", [0.01, 0.05])
def test_fast_dropout_is_bernoulli_with_rescaling(p):
    torch.manual_seed(0)
    x = torch.ones(4, 500, 500)
    with Fn.fast_kernels():
        y = Fn.dropout(x, p, training=True)
    dropped = (y == 0).float()
    n = x.numel()
    assert abs(dropped.mean().item() - p) < 5 * (p * (1 - p) / n) ** 0.5
    kept = torch.full_like(x, 1 / (1 - p))
    assert torch.all((y == 0) | torch.isclose(y, kept))
    # positions are spread uniformly over the tensor, not clustered at its start
    halves = dropped.view(2, -1).mean(1)
    assert abs(halves[0] - halves[1]).item() < 10 * (p / n) ** 0.5
    assert Fn.dropout(x, p, training=False) is x
