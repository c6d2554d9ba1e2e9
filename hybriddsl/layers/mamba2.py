"""Mamba-2 block, state-space duality / SSD (Dao & Gu 2024, "Transformers are SSMs: Generalized Models and
Efficient Algorithms Through Structured State Space Duality", arXiv:2405.21060, sections 7-8), laid out as
``mamba_ssm.modules.mamba2_simple.Mamba2Simple`` / ``Mamba2`` (one fused input projection, ``ngroups`` B/C
groups).

With ``D_in = expand * hidden`` split into ``H = D_in / head_dim`` heads of ``P = head_dim`` channels, ``N =
state``, and ``G = groups`` B/C groups (head ``h`` reads group ``h // (H / G)``)::

    [z_t, x_t, B_t, C_t, δ_t] = W_in x_t            (z, x: D_in; B, C: G N; δ: H)
    [x_t, B_t, C_t] = silu(ShortConv_conv([x, B, C])_t)      one causal depthwise conv over the concatenation
    Δ_t   = softplus(δ_t + b_dt)                              per head
    g_t   = Δ_t A,  A = -exp(A_log)                           scalar log-decay per head
    h_t   = exp(g_t) h_{t-1} + B_t (Δ_t x_t)^T                per head, h: [N, P]
    y_t   = h_t^T C_t + D ⊙ x_t                                (D per head)
    out_t = W_out RMSNorm(y_t ⊙ silu(z_t))                    gate before the norm (mamba_ssm's
                                                              ``norm_before_gate=False``), norm over D_in / G

``out_norm`` chooses that last line: ``gated`` (above, the default), ``before_gate`` (``RMSNorm(y) ⊙ silu(z)``,
Falcon-H1's ``mamba_norm_before_gate``) or ``off`` (``y ⊙ silu(z)``, no norm weight: Falcon-H1 without
``mamba_rms_norm``).

The recurrence is gated linear attention with a scalar decay per head, so the sequence runs through the SSD
kernels :func:`hybriddsl.kernels.ssd.ssd` with ``q = C``, ``k = B`` (one per group, shared by its heads),
``v = Δ x``, ``g`` ``[batch, T, H]`` and ``scale = 1``; :meth:`Mamba2.step` through ``ssd_step``, with the conv
window and ``h`` (float32) as state.

Initialization (mamba_ssm): ``A`` uniform in [1, 16] per head, ``A_log = log A``; ``b_dt`` the inverse
softplus of a log-uniform ``Δ`` in [1e-3, 1e-1] (floored at 1e-4, as Mamba-1); ``D = 1``; norm weight 1; other
weights PyTorch's default init.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybriddsl.layers.base import GatedRMSNorm, Mixer, ShortConv, State, options_from, wide
from hybriddsl.layers.mamba import dt_bias_init
from hybriddsl.specs.mamba2 import SPEC, mamba2_flops, validate  # noqa: F401 (the kind's spec, torch-free)

A_INIT_RANGE = (1.0, 16.0)  # mamba_ssm's A_init_range
# The fused CPU scan from this many chunks on (interleaved, one thread, h256: 1.12x fwd / 1.09x fwd+bwd over the
# separate ops at T 2048, 0.94x at B2-T256, where the separate ops keep the whole sequence in cache anyway)
FUSED_MIN_CHUNKS = 8


@options_from(SPEC)
class Mamba2(Mixer):
    """Mamba-2 (SSD) mixer. x: [batch, seq, hidden] -> [batch, seq, hidden].

    Parameters: ``in_proj`` hidden -> 2 D_in + 2 G N + H; ``conv1d`` depthwise over D_in + 2 G N channels;
    ``A_log``, ``dt_bias``, ``D`` [H]; ``norm`` weight [D_in]; ``out_proj`` D_in -> hidden.
    """

    def __init__(
        self,
        hidden_size: int,
        *,
        state: int,
        expand: int,
        conv: int,
        head_dim: int,
        groups: int,
        chunk: int,
        bias: bool,
        conv_bias: bool,
        inner: int | None,
        gate_eps: float,
        dt_min: float,
        dt_max: float | None,
        out_norm: str,
    ):
        super().__init__()
        self.hidden, self.state, self.head_dim, self.groups, self.chunk = (
            hidden_size,
            state,
            head_dim,
            groups,
            chunk,
        )
        self.dt_min, self.dt_max = dt_min, dt_max
        self.d_inner = inner or expand * hidden_size
        self.heads = self.d_inner // head_dim
        self.conv_dim = self.d_inner + 2 * groups * state
        self.in_proj = nn.Linear(hidden_size, self.d_inner + self.conv_dim + self.heads, bias=bias)
        self.conv1d = ShortConv(self.conv_dim, conv, bias=conv_bias)
        self.A_log = nn.Parameter(torch.empty(self.heads))
        self.dt_bias = nn.Parameter(torch.empty(self.heads))
        self.D = nn.Parameter(torch.empty(self.heads))
        self.norm_mode = out_norm
        self.norm = GatedRMSNorm(self.d_inner, groups=groups, eps=gate_eps) if out_norm != "off" else None
        self.out_proj = nn.Linear(self.d_inner, hidden_size, bias=bias)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        self.A_log.copy_(torch.empty(self.heads).uniform_(*A_INIT_RANGE).log())
        self.dt_bias.copy_(dt_bias_init(self.heads))
        self.D.fill_(1.0)

    def _split(self, zxbcdt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[..., in_proj out] -> z [..., D_in], xBC [..., conv_dim] (before the conv), δ [..., H]."""
        return zxbcdt.split([self.d_inner, self.conv_dim, self.heads], dim=-1)

    def _heads(self, xBC: torch.Tensor, dt: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """After the conv: xBC [..., conv_dim], δ [..., H] -> q = C, k = B [..., G, N] (one per group: the SSD
        kernels share them between the group's heads), x [..., H, P], v = Δ x [..., H, P] and g = Δ A [..., H]
        (float32)."""
        lead = xBC.shape[:-1]
        x, B, C = xBC.split([self.d_inner, self.groups * self.state, self.groups * self.state], dim=-1)
        x = x.reshape(*lead, self.heads, self.head_dim)
        B, C = B.reshape(*lead, self.groups, self.state), C.reshape(*lead, self.groups, self.state)
        # Δ and the log-decay in float32: g is summed over time inside the kernel
        delta = F.softplus(wide(dt) + wide(self.dt_bias))
        if self.dt_min > 0 or self.dt_max is not None:  # mamba_ssm's dt_limit (Nemotron-H: (time_step_min, inf))
            delta = delta.clamp(min=self.dt_min, max=self.dt_max)
        g = -torch.exp(wide(self.A_log)) * delta
        v = (x * delta[..., None]).to(x.dtype)
        return C, B, x, v, g

    def _finish(self, o: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """o, x [..., H, P] (scan output, conv'd input), z [..., D_in] -> [..., hidden]."""
        y = torch.addcmul(o, x, self.D.to(x.dtype)[:, None])  # D skip per head
        return self._out(y.reshape(*y.shape[:-2], self.d_inner), z)

    def _out(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """y [..., D_in] (scan output with the D skip), z [..., D_in] -> gate, norm, out_proj [..., hidden]."""
        if self.norm is None:
            return self.out_proj(y * F.silu(z))
        if self.norm_mode == "before_gate":
            return self.out_proj(self.norm(y, z))
        # mamba_ssm's default norm_before_gate=False: RMSNorm(y * silu(z)) * weight
        return self.out_proj(self.norm(y * F.silu(z)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from hybriddsl.kernels.checks import traced
        from hybriddsl.kernels.dispatch import use_triton
        from hybriddsl.kernels.ssd import ssd

        z, xBC, dt = self._split(self.in_proj(x))
        long = x.shape[1] >= FUSED_MIN_CHUNKS * self.chunk
        if long and x.device.type == "cpu" and not use_triton(xBC, name="ssd") and not traced(xBC):
            # eager CPU path: conv, silu, Δ, SSD and the D skip block by block (kernels/ssd/mamba2_scan.py)
            from hybriddsl.kernels.ssd.mamba2_scan import mamba2_scan

            dims = (self.heads, self.head_dim, self.groups, self.state)
            limits = (self.dt_min, self.dt_max)
            conv = self.conv1d.conv
            y = mamba2_scan(xBC, conv.weight[:, 0], conv.bias, dt, self.dt_bias, self.A_log, self.D, dims, limits,
                            self.chunk)  # fmt: skip
            return self._out(y.reshape(*y.shape[:-2], self.d_inner), z)
        # in place when nothing keeps the conv's output for a backward (it is a fresh tensor)
        xBC = F.silu(self.conv1d(xBC), inplace=not torch.is_grad_enabled())
        q, k, xh, v, g = self._heads(xBC, dt)
        o, _ = ssd(q, k, v, g, scale=1.0, chunk_size=self.chunk)
        return self._finish(o, xh, z)

    def init_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> State:
        """``conv``: [batch, D_in + 2 G N, conv-1] (input dtype); ``ssm``: [batch, H, N, P] float32 (float64
        for a float64 model, as Mamba-1)."""
        p = self._param()
        device, dtype = device or p.device, dtype or p.dtype
        wide_dtype = torch.promote_types(dtype, torch.float32)
        return {
            "conv": self.conv1d.init_state(batch, device=device, dtype=dtype),
            "ssm": torch.zeros(batch, self.heads, self.state, self.head_dim, device=device, dtype=wide_dtype),
        }

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One token x [batch, hidden] -> y [batch, hidden] and the advanced state.

        The recurrence ``h = exp(g) h + k v^T``, ``o = h^T q`` runs in ``ssd_step`` (float32, float64 for a float64
        model); the new state is stored in the state's own dtype (the model's, as Mamba-1 keeps it)."""
        from hybriddsl.kernels.ssd import ssd_step

        z, xBC, dt = self._split(self.in_proj(x))
        xBC, conv = self.conv1d.step(xBC, state["conv"])
        q, k, xh, v, g = self._heads(F.silu(xBC), dt)
        o, h = ssd_step(q, k, v, g, scale=1.0, state=state["ssm"])
        h = h.to(state["ssm"].dtype)
        return self._finish(o, xh, z), {"conv": conv, "ssm": h}
