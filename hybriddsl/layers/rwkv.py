"""RWKV-6 "Finch" (Peng et al. 2024, "Eagle and Finch: RWKV with Matrix-Valued States and Dynamic Recurrence",
arXiv:2404.05892): the time mix (the mixer of kind ``rwkv``) and the channel mix (internal kind
``rwkv_channel_mix``, inserted by the compiler as rwkv's companion residual block).

Time mix. Token shift with a data-dependent lerp (ddlerp), ``x'_t = x_{t-1}`` (zero before the first token)::

    lerp_□(a, b) = a + (b - a) * □
    m_t   = lerp_μx(x_t, x'_t)
    z_t^* = x_t + (x'_t - x_t) * (μ_* + tanh(m_t A_*) B_*)     * in {w, k, v, r, g}; A_*: [d, mix_rank]
    r_t = W_r z^r,  k_t = W_k z^k,  v_t = W_v z^v,  g_t = W_g z^g
    d_t = w0 + tanh(z^w C) D                                   decay LoRA, C: [d, decay_rank]
    w_t = exp(-exp(d_t))                                       per channel, in (0, 1)
    S_t = diag(w_t) S_{t-1} + k_t v_t^T                        per head, S: [head_size, head_size]
    o_t = r_t^T S_{t-1} + (r_t * u) . k_t  v_t                 bonus u: [heads, head_size]
    y_t = W_o ( GroupNorm_heads(o_t) * silu(g_t) )             LayerNorm per head, as RWKV's ln_x

The WKV runs through :func:`hybriddsl.kernels.gla.chunk_gla` (``q = r``, ``g = log w = -exp(d)``, ``u``,
``scale = 1``). Heads are ``hidden // head_size`` (RWKV-6 uses head_size 64, so small models must set a
head_size dividing hidden).

Channel mix::

    z^k = lerp_μk'(x_t, x'_t),  z^r = lerp_μr'(x_t, x'_t)
    y_t = sigmoid(W_r' z^r) * W_v' relu(W_k' z^k)^2             inner width mult * hidden (3.5 in RWKV-6)

Both keep the previous token's input (``shift``) in their step state.

Initialization follows RWKV-LM's RWKV-6 code (``RWKV_Tmix_x060``, ``RWKV_CMix_x060``) at the middle of the
stack (``layer_id / n_layer = 1/2``, since a mixer does not know its depth): with ``i = n / d`` over channels,
``μ_x = μ_w = μ_k = 1 - i^(1/2)``, ``μ_v = 1 - (i^(1/2) + 0.3/2)``, ``μ_r = μ_g = 1 - i^(1/4)``;
``w0_n = -6 + 5 (n / (d-1))^(0.7 + 1.3/2)``; ``u_n = (1/2)(1 - n/(d-1)) + 0.1 ((n+1) mod 3 - 1)``;
the LoRA ``A``, ``C`` zero and ``B``, ``D`` uniform in ±0.01 (so the LoRAs start as no-ops but learn).
Linear maps: Xavier-uniform with gain ``2 ** -2.5`` as fla's RWKV-6 (RWKV-LM zero-inits the output, which
would make the block start as the identity map).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybriddsl.layers.base import Mixer, State, options_from
from hybriddsl.specs.rwkv import SPECS, rwkv_flops, validate  # noqa: F401 (the kind's spec, torch-free)

_MIDDLE = 0.5  # layer_id / n_layer used by the RWKV-6 init schedules (see the module docstring)


def _shift(x: torch.Tensor) -> torch.Tensor:
    """The previous token's input: x [batch, seq, d] -> x' with x'_0 = 0."""
    return F.pad(x, (0, 0, 1, -1))


def _xavier(*lins: nn.Linear) -> None:
    for lin in lins:
        nn.init.xavier_uniform_(lin.weight, gain=2**-2.5)


@options_from(SPECS[0])
class RWKV6TimeMix(Mixer):
    """RWKV-6 time mix. x: [batch, seq, hidden] -> [batch, seq, hidden]; heads = hidden // head_size."""

    def __init__(
        self,
        hidden_size: int,
        *,
        head_size: int,
        mix_rank: int,
        decay_rank: int,
        chunk: int,
        cmix: bool,  # consumed by the spec's companions; the mixer itself ignores it
    ):
        super().__init__()
        d = hidden_size
        self.hidden, self.head_size, self.heads, self.chunk = d, head_size, d // head_size, chunk
        self.mu = nn.Parameter(torch.empty(6, d))  # μ for x (the ddlerp's own input) and for w, k, v, r, g
        self.mix_a = nn.Parameter(torch.empty(d, 5 * mix_rank))  # A_* stacked
        self.mix_b = nn.Parameter(torch.empty(5, mix_rank, d))  # B_*
        self.w0 = nn.Parameter(torch.empty(d))
        self.decay_a = nn.Parameter(torch.empty(d, decay_rank))
        self.decay_b = nn.Parameter(torch.empty(decay_rank, d))
        self.u = nn.Parameter(torch.empty(self.heads, head_size))
        self.r_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.g_proj = nn.Linear(d, d, bias=False)
        self.out_proj = nn.Linear(d, d, bias=False)
        # RWKV's ln_x: GroupNorm over heads with eps 1e-5 * head_size_divisor^2 (divisor 8)
        self.ln_x = nn.GroupNorm(self.heads, d, eps=64e-5)
        self.mix_rank = mix_rank
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        d = self.hidden
        i = torch.arange(d, dtype=torch.float64) / d
        n = torch.arange(d, dtype=torch.float64) / max(d - 1, 1)
        r01, r10 = _MIDDLE, 1.0 - _MIDDLE
        mu = [1 - i**r10, 1 - i**r10, 1 - i**r10, 1 - (i**r10 + 0.3 * r01), 1 - i ** (0.5 * r10), 1 - i ** (0.5 * r10)]
        self.mu.copy_(torch.stack(mu))  # x, w, k, v, r, g
        self.mix_a.zero_()
        self.mix_b.uniform_(-0.01, 0.01)
        self.w0.copy_(-6 + 5 * n ** (0.7 + 1.3 * r01))
        self.decay_a.zero_()
        self.decay_b.uniform_(-0.01, 0.01)
        u = r01 * (1 - n) + 0.1 * ((torch.arange(d) + 1) % 3 - 1)
        self.u.copy_(u.view(self.heads, self.head_size))
        _xavier(self.r_proj, self.k_proj, self.v_proj, self.g_proj, self.out_proj)

    def _mix(self, x: torch.Tensor, prev: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x, prev [..., d] -> r, k, v [..., heads, head_size], log-decay g (float32), output gate pre-act."""
        dx = prev - x
        m = x + dx * self.mu[0]
        lora = torch.tanh(m @ self.mix_a).unflatten(-1, (5, self.mix_rank))  # [..., 5, mix_rank]
        lora = torch.einsum("...fr,frd->...fd", lora, self.mix_b)  # [..., 5, d]
        z = x.unsqueeze(-2) + dx.unsqueeze(-2) * (self.mu[1:] + lora)  # [..., 5, d]: w k v r g
        zw, zk, zv, zr, zg = z.unbind(-2)
        hs = (self.heads, self.head_size)
        r = self.r_proj(zr).unflatten(-1, hs)
        k = self.k_proj(zk).unflatten(-1, hs)
        v = self.v_proj(zv).unflatten(-1, hs)
        dec = self.w0 + torch.tanh(zw @ self.decay_a) @ self.decay_b
        g = -torch.exp(dec.to(torch.promote_types(dec.dtype, torch.float32)))  # log w: summed over time in the kernel
        return r, k, v, g.unflatten(-1, hs), self.g_proj(zg)

    def _finish(self, o: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        lead = o.shape[:-2]
        o = self.ln_x(o.reshape(-1, self.hidden)).reshape(*lead, self.hidden)
        return self.out_proj(o * F.silu(gate))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0:  # an empty batch or sequence: nothing to mix (reshapes cannot infer -1 from 0 elements)
            return x * 0
        from hybriddsl.kernels.gla import chunk_gla

        r, k, v, g, gate = self._mix(x, _shift(x))
        o, _ = chunk_gla(r, k, v, g, u=self.u, scale=1.0, chunk_size=self.chunk)
        return self._finish(o, gate)

    def init_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> State:
        """``shift``: previous input [batch, hidden] (model dtype); ``S``: [batch, heads, hs, hs] float32."""
        p = self._param()
        device, dtype = device or p.device, dtype or p.dtype
        hs = self.head_size
        return {
            "shift": torch.zeros(batch, self.hidden, device=device, dtype=dtype),
            "S": torch.zeros(batch, self.heads, hs, hs, device=device, dtype=torch.float32),
        }

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One token x [batch, hidden] -> y [batch, hidden] and the advanced state."""
        from hybriddsl.kernels.gla import gla_step

        r, k, v, g, gate = self._mix(x, state["shift"].to(x.dtype))
        o, S = gla_step(r, k, v, g, u=self.u, scale=1.0, state=state["S"])
        return self._finish(o, gate), {"shift": x.to(state["shift"].dtype), "S": S}


@options_from(SPECS[1])
class RWKV6ChannelMix(Mixer):
    """RWKV-6 channel mix (RWKV's FFN). x: [batch, seq, hidden] -> same; inner = mult hidden."""

    def __init__(self, hidden_size: int, *, mult: float):
        super().__init__()
        d = hidden_size
        inner = max(1, int(mult * d))
        self.mu_k = nn.Parameter(torch.empty(d))
        self.mu_r = nn.Parameter(torch.empty(d))
        self.key = nn.Linear(d, inner, bias=False)
        self.receptance = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(inner, d, bias=False)
        self.hidden = d
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        i = torch.arange(self.hidden, dtype=torch.float64) / self.hidden
        mu = 1 - i ** (1.0 - _MIDDLE)
        self.mu_k.copy_(mu)
        self.mu_r.copy_(mu)
        _xavier(self.key, self.receptance, self.value)

    def _mix(self, x: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        dx = prev - x
        k = torch.relu(self.key(x + dx * self.mu_k)).square()
        return torch.sigmoid(self.receptance(x + dx * self.mu_r)) * self.value(k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0:  # an empty batch or sequence: nothing to mix (reshapes cannot infer -1 from 0 elements)
            return x * 0
        return self._mix(x, _shift(x))

    def init_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> State:
        """``shift``: previous input [batch, hidden] (model dtype)."""
        p = self._param()
        return {"shift": torch.zeros(batch, self.hidden, device=device or p.device, dtype=dtype or p.dtype)}

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        y = self._mix(x, state["shift"].to(x.dtype))
        return y, {"shift": x.to(state["shift"].dtype)}
