"""Building blocks of the world model (paper Sec. 3.1 and Appendix): MLPs of NormedLinear
layers (Linear -> LayerNorm -> Mish), SimNorm, and a Q ensemble whose weights are
stacked along a leading ``num_q`` dim and evaluated in one batched op.

Module and parameter names follow the original implementation, so its state dicts load by
name: ``_encoder.state.0.ln.weight``, ``_Qs.params.1.weight`` [num_q, out, in], ...
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from tdmpc2_model.core.functional import dropout, mish, simnorm
from tdmpc2_model.core.gemm import Linear, linear, stacked_linear


class SimNorm(nn.Module):
    """Softmax over groups of ``dim`` units (the latent state's simplicial embedding)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return simnorm(x, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Mish(nn.Module):
    """Mish activation (``functional.mish``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mish(x)


class NormedLinear(Linear):
    """Linear -> LayerNorm -> activation (Mish unless given). The Q-functions' first-layer
    dropout lives in the stacked ensemble (``ensemble_forward``)."""

    def __init__(self, in_dim: int, out_dim: int, act: nn.Module | None = None):
        super().__init__(in_dim, out_dim)
        self.ln = nn.LayerNorm(out_dim)
        self.act = act if act is not None else Mish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.ln(super().forward(x)))


def mlp(
    in_dim: int, hidden: list[int], out_dim: int, act: nn.Module | None = None
) -> nn.Sequential:
    """NormedLinear hidden layers; the last layer is a NormedLinear with ``act`` when given
    (SimNorm), else a plain Linear."""
    dims = [in_dim, *hidden, out_dim]
    layers: list[nn.Module] = [NormedLinear(dims[i], dims[i + 1]) for i in range(len(dims) - 2)]
    layers.append(NormedLinear(dims[-2], dims[-1], act=act) if act else Linear(dims[-2], dims[-1]))
    return nn.Sequential(*layers)


def init_weights(module: nn.Module) -> None:
    """The original's initialisation: truncated normal (std 0.02) weights, zero biases,
    uniform(-0.02, 0.02) embeddings."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.uniform_(module.weight, -0.02, 0.02)


def _add_tensor(module: nn.Module, name: str, shape: tuple[int, ...], learnable: bool) -> None:
    if learnable:
        module.register_parameter(name, nn.Parameter(torch.zeros(shape)))
    else:
        module.register_buffer(name, torch.zeros(shape))


class StackedLayer(nn.Module):
    """One layer of the ensemble: weight [num_q, out, in], bias [num_q, out] and, unless it
    is the output layer, a LayerNorm ``ln`` with weight/bias [num_q, out]. Parameters for
    the online ensemble, buffers for the target copy (not learnable)."""

    def __init__(self, num: int, in_dim: int, out_dim: int, normed: bool, learnable: bool = True):
        super().__init__()
        _add_tensor(self, "weight", (num, out_dim, in_dim), learnable)
        _add_tensor(self, "bias", (num, out_dim), learnable)
        self.ln = None
        if normed:
            self.ln = nn.Module()
            _add_tensor(self.ln, "weight", (num, out_dim), learnable)
            _add_tensor(self.ln, "bias", (num, out_dim), learnable)

    def reset_parameters(self) -> None:
        """Per member as the original: trunc-normal weights, zero bias, unit LayerNorm."""
        with torch.no_grad():
            nn.init.trunc_normal_(self.weight, std=0.02)
            self.bias.zero_()
            if self.ln is not None:
                self.ln.weight.fill_(1.0)
                self.ln.bias.zero_()


def stacked_mlp(num: int, dims: list[int], learnable: bool = True) -> nn.ModuleList:
    """Layers of ``num`` stacked MLPs with widths ``dims``; the last layer has no LayerNorm."""
    return nn.ModuleList(
        StackedLayer(num, dims[i], dims[i + 1], normed=i < len(dims) - 2, learnable=learnable)
        for i in range(len(dims) - 1)
    )


def ensemble_forward(
    layers: nn.ModuleList,
    x: torch.Tensor,
    drop: float = 0.0,
    detach: bool = False,
    heads: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the members (all, or those indexed by ``heads``) on the same input ``x``
    [..., in]; returns [members, ..., out].

    The first layer is one matmul against the members' weights concatenated; later layers
    are one batched matmul (bmm) over the member dim. Dropout with rate ``drop`` follows
    the first layer (pass 0 in eval mode); ``detach`` evaluates without gradients to the
    weights.
    """
    lead = x.shape[:-1]
    h = x.reshape(-1, x.shape[-1])

    def pick(t: torch.Tensor) -> torch.Tensor:
        t = t.detach() if detach else t
        return t if heads is None else t.index_select(0, heads)

    for i, layer in enumerate(layers):
        w, b = pick(layer.weight), pick(layer.bias)
        if i == 0:  # shared input: [N, in] @ [in, num*out] -> [num, N, out]
            num = w.shape[0]
            h = linear(h, w.reshape(-1, w.shape[-1]), b.reshape(-1))
            h = dropout(h.view(h.shape[0], num, -1).transpose(0, 1), drop, training=True)
        else:
            h = stacked_linear(h, w, b)
        if layer.ln is not None:
            g, beta = pick(layer.ln.weight).unsqueeze(1), pick(layer.ln.bias).unsqueeze(1)
            h = mish(torch.addcmul(beta, F.layer_norm(h, h.shape[-1:]), g))
    return h.reshape(num, *lead, h.shape[-1])


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a sharded DTensor (an all-gather); other tensors as they are."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t
