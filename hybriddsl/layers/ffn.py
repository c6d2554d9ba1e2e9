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
        h = self.up(x)
        if self.act in GATED:  # gated variants: activation of one half times the other half
            a, b = h.chunk(2, dim=-1)
            if self.act == "swiglu":
                a = F.silu(a)
            else:
                a = F.gelu(a, approximate="tanh" if self.act == "geglu_tanh" else "none")
            # without autograd the activation's fresh output takes the product in place (one [.., inner] less)
            h = a * b if torch.is_grad_enabled() and a.requires_grad else a.mul_(b)
        elif self.act == "relu2":
            h = torch.square(F.relu(h))
        else:
            h = F.gelu(h)
        return self.down(h)
