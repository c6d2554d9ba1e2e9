"""Feed-forward block: GELU MLP (Vaswani et al. 2017; 4x expansion) or a gated GLU variant (Shazeer 2020).

gelu:   y = W2 gelu(W1 x + b1) + b2,              inner = mult * hidden
swiglu: y = W2 (silu(W1 x) * (W3 x)),             inner = mult * hidden (LLaMA uses 8/3 to keep 2-matrix cost)
geglu:  y = W2 (gelu(W1 x) * (W3 x))              (Griffin's gated MLP block, De et al. 2024)
relu2:  y = W2 relu(W1 x + b1)^2 + b2             (squared ReLU, So et al. 2021 "Primer"; Nemotron-H's MLP)
geglu_tanh: geglu with the tanh approximation of GELU (RecurrentGemma's ``gelu_pytorch_tanh``)

``up`` holds W1 and W3 stacked (W1's rows first); ``bias`` puts biases on every projection.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hybriddsl.kernels.checks import needs_grad
from hybriddsl.layers.base import Mixer, options_from
from hybriddsl.specs.ffn import ACTS, GATED, SPEC  # noqa: F401 (the kind's spec, torch-free)


@options_from(SPEC)
class FFN(Mixer):
    """Position-wise MLP. x: [batch, seq, hidden] -> [batch, seq, hidden]."""

    def __init__(
        self,
        hidden_size: int,
        *,
        mult: float,
        act: str,
        bias: bool,
        inner: int | None,
    ):
        super().__init__()
        inner = inner or int(math.ceil(hidden_size * mult))
        self.act = act
        self.up = nn.Linear(hidden_size, inner * (2 if act in GATED else 1), bias=bias)
        self.down = nn.Linear(inner, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act not in GATED:
            h = self.up(x)
            return self.down(torch.square(F.relu(h)) if self.act == "relu2" else F.gelu(h))
        # gated variants: activation of one half times the other half
        approx = "tanh" if self.act == "geglu_tanh" else "none"
        if needs_grad(x, *self.up.parameters()):
            return self.down(_Gated.apply(self.up(x), self.act == "swiglu", approx))
        # No backward: two matmuls, one per half. Each half comes out contiguous, so the activation and the product
        # run in place on dense memory (no [.., inner] allocation; on a half of the fused output they would be
        # strided). The same FLOPs as the fused matmul, which measured equal to two at these sizes.
        inner = self.down.in_features
        w, bias = self.up.weight, self.up.bias
        a = F.linear(x, w[:inner], None if bias is None else bias[:inner])
        b = F.linear(x, w[inner:], None if bias is None else bias[inner:])
        a = F.silu(a, inplace=True) if self.act == "swiglu" else F.gelu(a, approximate=approx)
        return self.down(a.mul_(b))


class _Gated(torch.autograd.Function):
    """``act(a) * b`` for ``h = [a, b]`` [..., 2 inner] -> [..., inner], whose backward writes the gradients of
    both halves into one [..., 2 inner] tensor: autograd through ``chunk`` concatenates them (a copy of the
    widest activation of the model; ~5% of a SwiGLU FFN's forward + backward at T = 2048)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, silu: bool, approximate: str) -> torch.Tensor:
        a, b = h.chunk(2, dim=-1)
        s = F.silu(a) if silu else F.gelu(a, approximate=approximate)
        ctx.save_for_backward(h, s)
        ctx.silu, ctx.approximate = silu, approximate
        return s * b

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        h, s = ctx.saved_tensors
        a, b = h.chunk(2, dim=-1)
        gh = torch.empty_like(h)
        ga, gb = gh.chunk(2, dim=-1)
        torch.mul(g, s, out=gb)
        gs = g * b
        if ctx.silu:
            torch.ops.aten.silu_backward.grad_input(gs, a, grad_input=ga)
        else:
            torch.ops.aten.gelu_backward.grad_input(gs, a, approximate=ctx.approximate, grad_input=ga)
        return gh, None, None
