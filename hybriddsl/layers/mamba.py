"""Mamba-1 selective state-space block (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective
State Spaces", arXiv:2312.00752, section 3 and Alg. 2), laid out as ``mamba_ssm.modules.mamba_simple.Mamba``.

Per token ``x_t`` (``hidden`` wide), with ``D_in = expand * hidden`` channels and ``N = state``::

    [u_t, z_t] = W_in x_t                                   (u, z: D_in each)
    u_t        = silu(ShortConv_conv(u)_t)                  causal depthwise conv over time
    [δ_t, B_t, C_t] = W_x u_t                               (δ: dt_rank, B, C: N each; input-dependent)
    Δ_t        = softplus(W_dt δ_t + b_dt)                  (D_in)
    h_t        = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t u_t) B_t^T     h: [D_in, N], A = -exp(A_log)   (ZOH on A,
                                                            Euler on B, as the paper's implementation)
    y_t        = W_out [ (h_t C_t + D ⊙ u_t) ⊙ silu(z_t) ]

The scan (discretization, D skip, gate, softplus and ``b_dt``) runs fused in
:func:`hybriddsl.kernels.selective_scan.selective_scan`; ``W_dt`` is applied here without its bias, which goes
to the kernel as ``delta_bias`` (as mamba_ssm). :meth:`Mamba.step` uses ``selective_scan_step`` with the conv
window and ``h`` (float32) as state.

Initialization (paper section 3.6 / appendix, and mamba_ssm): ``A_log[d, n] = log(n + 1)`` (S4D-real,
``A = -(1, 2, ..., N)`` per channel); ``D = 1``; ``W_dt`` uniform in ``±dt_rank^-0.5 * dt_scale``; ``b_dt`` is
the inverse softplus of ``Δ`` drawn log-uniformly in ``[dt_min, dt_max] = [1e-3, 1e-1]`` (floored at 1e-4), so
that ``softplus(b_dt)`` starts in that range. Other weights keep PyTorch's default init (as mamba_ssm; its
per-model rescaling of ``W_out`` by the depth belongs to the model, not to the block).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hybriddsl.kernels.checks import needs_grad
from hybriddsl.layers.base import Mixer, ShortConv, State, options_from, wide
from hybriddsl.specs.mamba import SPEC, mamba_flops, validate  # noqa: F401 (the kind's spec, torch-free)

DT_MIN, DT_MAX, DT_FLOOR = 1e-3, 1e-1, 1e-4  # the paper's Δ initialization range


def dt_bias_init(n: int, dt_min: float = DT_MIN, dt_max: float = DT_MAX, floor: float = DT_FLOOR) -> torch.Tensor:
    """Bias whose softplus is a log-uniform sample in [dt_min, dt_max] (floored): [n] float32.

    The inverse of softplus is ``dt + log(-expm1(-dt))`` (= log(exp(dt) - 1), stable for small dt).
    """
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


def default_dt_rank(hidden: int) -> int:
    """mamba_ssm's ``dt_rank="auto"``: ceil(hidden / 16)."""
    return math.ceil(hidden / 16)


@options_from(SPEC)
class Mamba(Mixer):
    """Mamba-1 mixer. x: [batch, seq, hidden] -> [batch, seq, hidden].

    Parameters: ``in_proj`` hidden -> 2 D_in; ``conv1d`` depthwise (D_in, conv); ``x_proj``
    D_in -> dt_rank + 2N; ``dt_proj`` dt_rank -> D_in (+ bias); ``A_log`` [D_in, N]; ``D`` [D_in];
    ``out_proj`` D_in -> hidden.
    """

    inplace_step = True

    def __init__(
        self,
        hidden_size: int,
        *,
        state: int,
        expand: int,
        conv: int,
        dt_rank: int | None,
        bias: bool,
        conv_bias: bool,
        dt_scale: float = 1.0,
        bc_norm: bool,
        bc_norm_eps: float,
    ):
        super().__init__()
        self.hidden, self.state, self.conv = hidden_size, state, conv
        self.d_inner = expand * hidden_size
        self.dt_rank = dt_rank or default_dt_rank(hidden_size)
        self.in_proj = nn.Linear(hidden_size, 2 * self.d_inner, bias=bias)
        self.conv1d = ShortConv(self.d_inner, conv, bias=conv_bias)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, hidden_size, bias=bias)
        # Jamba's RMSNorms on the low-rank δ, on B and on C (Lieber et al. 2024, section 3: training stability)
        self.dt_norm = nn.RMSNorm(self.dt_rank, eps=bc_norm_eps) if bc_norm else None
        self.b_norm = nn.RMSNorm(state, eps=bc_norm_eps) if bc_norm else None
        self.c_norm = nn.RMSNorm(state, eps=bc_norm_eps) if bc_norm else None
        self.dt_scale = dt_scale
        self.A_log = nn.Parameter(torch.empty(self.d_inner, state))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self._A_cache: tuple[tuple[int, int], torch.Tensor] | None = None
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        std = self.dt_rank**-0.5 * self.dt_scale
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        self.dt_proj.bias.copy_(dt_bias_init(self.d_inner))
        self.A_log.copy_(torch.arange(1, self.state + 1, dtype=torch.float32).log())  # S4D-real, every row
        self.D.fill_(1.0)
        self._A_cache = None

    def _ssm_inputs(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """u [..., D_in] (after conv + silu) -> delta [..., D_in] (before bias/softplus), B, C [..., N]."""
        dt_low, B, C = self.x_proj(u).split([self.dt_rank, self.state, self.state], dim=-1)
        if self.dt_norm is not None:
            dt_low, B, C = self.dt_norm(dt_low), self.b_norm(B), self.c_norm(C)
        return F.linear(dt_low, self.dt_proj.weight), B, C

    def _A(self) -> torch.Tensor:
        return -torch.exp(wide(self.A_log))

    def _A_frozen(self) -> torch.Tensor:
        """``-exp(A_log)`` for the streaming fast path (no grad), recomputed only when ``A_log`` changed: its
        storage or its version counter, which every in-place update (optimizer step, ``load_state_dict``)
        advances. Saves two ops over [D_in, N] a frame."""
        if torch.compiler.is_compiling():  # traced (export, dynamo): computed in the graph from the live A_log
            return -torch.exp(self.A_log)
        key = (self.A_log.data_ptr(), self.A_log._version)
        if self._A_cache is None or self._A_cache[0] != key:
            self._A_cache = (key, -torch.exp(self.A_log.detach()))  # a plain attribute: not in the state_dict
        return self._A_cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from hybriddsl.kernels.selective_scan import selective_scan

        if needs_grad(x, *self.parameters()):
            u, z = self.in_proj(x).chunk(2, dim=-1)
            u = F.silu(self.conv1d(u))
        else:
            # No backward: one matmul per half, so u and z come out contiguous (the conv, the gate and the scan's
            # epilogue then run on dense memory) and SiLU runs in place. ~10% of the forward at B1-T2048-h256.
            w, b, d = self.in_proj.weight, self.in_proj.bias, self.d_inner
            u = F.linear(x, w[:d], None if b is None else b[:d])
            z = F.linear(x, w[d:], None if b is None else b[d:])
            u = F.silu(self.conv1d(u), inplace=True)
        delta, B, C = self._ssm_inputs(u)
        y, _ = selective_scan(u, delta, self._A(), B, C, wide(self.D), z, wide(self.dt_proj.bias), delta_softplus=True)
        return self.out_proj(y)

    def init_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> State:
        """``conv``: [batch, D_in, conv-1] (input dtype); ``ssm``: [batch, D_in, N] float32 (float64 for
        float64 inputs)."""
        p = self._param()
        device, dtype = device or p.device, dtype or p.dtype
        return {
            "conv": self.conv1d.init_state(batch, device=device, dtype=dtype),
            "ssm": torch.zeros(
                batch,
                self.d_inner,
                self.state,
                device=device,
                dtype=torch.promote_types(dtype, torch.float32),
            ),
        }

    def step(self, x: torch.Tensor, state: State, inplace: bool = False) -> tuple[torch.Tensor, State]:
        """One token x [batch, hidden] -> y [batch, hidden] and the advanced state.

        ``inplace=True`` (a :class:`hybriddsl.streaming.Stream`) writes the new state into ``state``'s own
        tensors and returns ``state``; for float32/float64 inputs it also takes a short path (about a third
        of the ops of ``selective_scan_step``, no dtype round trips, the conv and SSM states updated in place).
        """
        from hybriddsl.kernels.selective_scan import selective_scan_step

        u, z = self.in_proj(x).chunk(2, dim=-1)
        h = state["ssm"]
        if inplace and h.dtype == x.dtype == self.A_log.dtype:  # float32/64: the scan computes in x's dtype
            u = F.silu(self.conv1d.step(u, state["conv"], inplace=True)[0])
            delta, B, C = self._ssm_inputs(u)
            dt = F.softplus(delta + self.dt_proj.bias)  # [b, D_in]
            # h = exp(dt A) h + (dt u) B^T, A = -exp(A_log); the same formula as selective_scan_step
            h.mul_(torch.exp(dt.unsqueeze(-1) * self._A_frozen()))
            h.addcmul_((dt * u).unsqueeze(-1), B.unsqueeze(1))
            y = torch.matmul(h, C.unsqueeze(-1)).squeeze(-1)  # h C: [b, D_in]
            y = torch.addcmul(y, self.D, u) * F.silu(z)
            return self.out_proj(y), state
        u, conv = self.conv1d.step(u, state["conv"])
        u = F.silu(u)
        delta, B, C = self._ssm_inputs(u)
        y, h = selective_scan_step(u, delta, self._A(), B, C, wide(self.D), z, wide(self.dt_proj.bias), True, h)
        if inplace:
            state["conv"].copy_(conv)
            state["ssm"].copy_(h)
            return self.out_proj(y), state
        return self.out_proj(y), {"conv": conv, "ssm": h}
