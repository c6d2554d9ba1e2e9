"""Gated linear attention (Yang et al. 2024, "Gated Linear Attention Transformers with Hardware-Efficient
Training", arXiv:2312.06635), laid out as the reference implementation in flash-linear-attention (fla).

Per token ``x_t`` (width ``d = hidden``), with ``heads`` heads of key width ``dk = expand_k d / heads`` and
value width ``dv = expand_v d / heads``::

    q_t = W_q x_t,   k_t = W_k x_t,   v_t = W_v x_t,   r_t = W_r x_t                  (r: the output gate)
    g_t = logsigmoid(W_2 W_1 x_t + b) / gate_norm                 low-rank (``rank``) per-key-dim log-decay
    S_t = diag(exp g_t) S_{t-1} + k_t v_t^T                         per head, S_t: [dk, dv]
    o_t = dk^(-1/2) q_t^T S_t
    y_t = W_o [ RMSNorm_head(o_t) * swish(r_t) ]         RMSNorm per head (GatedRMSNorm, groups=heads)

``gate_norm`` (fla's ``gate_logit_normalizer``, 16) keeps ``exp(g)`` close to 1 so the memory is long at
initialization. The sequence runs through :func:`hybriddsl.kernels.gla.chunk_gla`; :meth:`GLA.step` through
:func:`hybriddsl.kernels.gla.gla_step` with the ``[batch, heads, dk, dv]`` float32 state.

Initialization as fla: every projection Xavier-uniform with gain ``2 ** -2.5``, biases zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybriddsl.layers.base import GatedRMSNorm, Mixer, State, options_from, wide
from hybriddsl.specs.gla import SPEC, _widths, gla_flops, validate  # noqa: F401 (the kind's spec, torch-free)


@options_from(SPEC)
class GLA(Mixer):
    """Gated linear attention mixer. x: [batch, seq, hidden] -> [batch, seq, hidden].

    Projections: q, k ``hidden -> expand_k hidden``; v, output gate ``hidden -> expand_v hidden``; decay
    ``hidden -> rank -> expand_k hidden``; out ``expand_v hidden -> hidden``.
    """

    def __init__(
        self,
        hidden_size: int,
        *,
        heads: int,
        expand_k: float,
        expand_v: float,
        rank: int,
        gate_norm: float,
        chunk: int,
    ):
        super().__init__()
        self.hidden, self.heads, self.chunk, self.gate_norm = hidden_size, heads, chunk, gate_norm
        self.key_dim, self.value_dim = _widths(hidden_size, expand_k, expand_v)
        self.dk, self.dv = self.key_dim // heads, self.value_dim // heads
        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        self.g_proj = nn.Linear(hidden_size, self.value_dim, bias=False)  # output gate
        self.gk_down = nn.Linear(hidden_size, rank, bias=False)  # low-rank decay: W_1
        self.gk_up = nn.Linear(rank, self.key_dim, bias=True)  # W_2, b
        self.norm = GatedRMSNorm(self.value_dim, groups=heads, eps=1e-5)
        self.out_proj = nn.Linear(self.value_dim, hidden_size, bias=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        for lin in (
            self.q_proj,
            self.k_proj,
            self.v_proj,
            self.g_proj,
            self.gk_down,
            self.gk_up,
            self.out_proj,
        ):
            nn.init.xavier_uniform_(lin.weight, gain=2**-2.5)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x [..., hidden] -> q, k [..., heads, dk], v [..., heads, dv], g [..., heads, dk] float32, gate."""
        lead = x.shape[:-1]
        q = self.q_proj(x).view(*lead, self.heads, self.dk)
        k = self.k_proj(x).view(*lead, self.heads, self.dk)
        v = self.v_proj(x).view(*lead, self.heads, self.dv)
        # the log-decay is kept in float32 (or wider): it is summed over time inside the kernel
        g = F.logsigmoid(wide(self.gk_up(self.gk_down(x)))) / self.gate_norm
        return q, k, v, g.view(*lead, self.heads, self.dk), self.g_proj(x)

    def _finish(self, o: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        o = o.reshape(*o.shape[:-2], self.value_dim)
        return self.out_proj(self.norm(o, gate))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0:  # an empty batch or sequence: nothing to mix (reshapes cannot infer -1 from 0 elements)
            return x * 0
        from hybriddsl.kernels.gla import chunk_gla

        q, k, v, g, gate = self._project(x)
        o, _ = chunk_gla(q, k, v, g, chunk_size=self.chunk)
        return self._finish(o, gate)

    def init_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> State:
        """``S``: [batch, heads, dk, dv] float32 zeros."""
        device = device or self._param().device
        return {"S": torch.zeros(batch, self.heads, self.dk, self.dv, device=device, dtype=torch.float32)}

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One token x [batch, hidden] -> y [batch, hidden] and the advanced state."""
        from hybriddsl.kernels.gla import gla_step

        q, k, v, g, gate = self._project(x)
        o, S = gla_step(q, k, v, g, state=state["S"])
        return self._finish(o, gate), {"S": S}
