"""Feed-forward block: GELU MLP (Vaswani et al. 2017; 4x expansion) or a gated GLU variant (Shazeer 2020).

gelu:   y = W2 gelu(W1 x + b1) + b2,              inner = mult * hidden
swiglu: y = W2 (silu(W1 x) * (W3 x)),             inner = mult * hidden (LLaMA uses 8/3 to keep 2-matrix cost)
geglu:  y = W2 (gelu(W1 x) * (W3 x))              (Griffin's gated MLP block, De et al. 2024)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hybriddsl.layers.base import Mixer
from hybriddsl.specs.ffn import SPEC  # noqa: F401 (the kind's spec, torch-free)


class FFN(Mixer):
    """Position-wise MLP. x: [batch, seq, hidden] -> [batch, seq, hidden]."""

    def __init__(
        self,
        hidden_size: int,
        mult: float = 4.0,
        act: str = "gelu",
        bias: bool = True,
        inner: int | None = None,
    ):
        super().__init__()
        inner = inner or int(math.ceil(hidden_size * mult))
        self.act = act
        self.up = nn.Linear(hidden_size, inner * (1 if act == "gelu" else 2), bias=bias)
        self.down = nn.Linear(inner, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        if self.act != "gelu":  # gated variants: activation of one half times the other half
            a, b = h.chunk(2, dim=-1)
            h = (F.silu(a) if self.act == "swiglu" else F.gelu(a)) * b
        else:
            h = F.gelu(h)
        return self.down(h)
