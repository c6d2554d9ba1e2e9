"""Gated DeltaNet: the delta rule with a Mamba-2 style decay (Yang, Kautz, Hatamizadeh 2025, "Gated Delta
Networks: Improving Mamba2 with Delta Rule", arXiv:2412.06464, ICLR 2025).

Per head, with q, k, v, beta as in DeltaNet (:mod:`hybriddsl.layers.delta_net`)::

    g_t     = -exp(A_log) * softplus(w_a . x_t + dt_bias),   alpha_t = exp(g_t) in (0, 1)
    S_t     = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,     o_t = K^-1/2 S_t^T q_t
    y_t     = W_o [RMSNorm(o_t^h) * silu(W_g^h x_t)]_h                          (gated RMSNorm per head)

``alpha_t`` lets a head erase its whole memory quickly (Mamba-2's gate) while the delta rule edits single
key-value associations. Parametrization and init follow the reference implementation (NVlabs/GatedDeltaNet,
fla's ``GatedDeltaNet`` layer): ``A ~ U[0, 16]``, ``A_log = log A``; ``dt_bias = softplus^-1(dt)`` with
``dt = exp(U[log 1e-3, log 1e-1])`` floored at 1e-4, as Mamba's dt init; ``a_proj``, ``b_proj`` without bias.

Value width: ``head_v_dim = expand_v * head_dim``. The paper and fla use ``expand_v = 2`` (with head_dim 256
and 6 heads at hidden 2048, i.e. key width 0.75 hidden); our default is ``expand_v = 1`` and ``head_dim =
hidden // heads``, so that the value width is ``hidden`` as in delta_net and attention and a pattern can swap
kinds at about the same size (``5 hidden^2`` weights against ``8 hidden^2`` with ``expand_v = 2``). Write
``GD(expand_v=2)`` for the paper's shape.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hybriddsl.kernels.checks import compute_dtype
from hybriddsl.layers.base import options_from
from hybriddsl.layers.delta_common import DeltaMixer
from hybriddsl.specs.gated_delta_net import SPEC


@options_from(SPEC)
class GatedDeltaNet(DeltaMixer):
    """Gated DeltaNet mixer. x: [batch, seq, hidden] -> [batch, seq, hidden].

    On top of :class:`~hybriddsl.layers.delta_common.DeltaMixer`: ``a_proj`` ``hidden -> v_heads`` (decay
    input), ``A_log`` and ``dt_bias`` [v_heads], ``g_proj`` ``hidden -> v_heads*head_v_dim`` (output gate).
    """

    def __init__(
        self,
        hidden_size: int,
        *,
        heads: int,
        head_dim: int | None,
        expand_v: float,
        conv: int,
        chunk: int,
        bias: bool,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_floor: float = 1e-4,
        v_heads: int | None,
        out_eps: float,
    ):
        super().__init__(
            hidden_size,
            heads=heads,
            head_dim=head_dim,
            expand_v=expand_v,
            conv=conv,
            chunk=chunk,
            bias=bias,
            v_heads=v_heads,
            norm_eps=out_eps,
        )
        nv = self.v_heads
        self.a_proj = nn.Linear(hidden_size, nv, bias=False)
        self.g_proj = nn.Linear(hidden_size, nv * self.head_v_dim, bias=bias)
        self.dt_range = (dt_min, dt_max, dt_floor)
        self.A_log = nn.Parameter(torch.empty(nv))
        self.dt_bias = nn.Parameter(torch.empty(nv))
        # the reference excludes these from weight decay; an optimizer set-up may read this flag
        self.A_log._no_weight_decay = True
        self.dt_bias._no_weight_decay = True
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        nv = self.v_heads
        dt_min, dt_max, dt_floor = self.dt_range
        self.A_log.copy_(torch.empty(nv).uniform_(0, 16).log())
        dt = torch.exp(torch.rand(nv) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_floor)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)

    def _decay(self, x: torch.Tensor) -> torch.Tensor:
        """g [..., heads] = -exp(A_log) softplus(a_proj x + dt_bias), in float32 (float64 for float64 x)."""
        return self._decay_of({"a": self.a_proj(x)})

    def _gate(self, x: torch.Tensor) -> torch.Tensor:
        return self._split(self.g_proj(x), self.head_v_dim)

    def _projections(self) -> dict[str, nn.Linear]:
        return {**super()._projections(), "a": self.a_proj, "g": self.g_proj}

    def _decay_of(self, z: dict[str, torch.Tensor]) -> torch.Tensor:
        cd = compute_dtype(z["a"])
        return -self.A_log.to(cd).exp() * F.softplus(z["a"].to(cd) + self.dt_bias.to(cd))

    def _gate_of(self, z: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._split(z["g"], self.head_v_dim)
