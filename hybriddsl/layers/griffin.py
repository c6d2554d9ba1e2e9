"""Griffin's recurrent block with the Real-Gated Linear Recurrent Unit (De et al. 2024, "Griffin: Mixing
Gated Linear Recurrences with Local Attention for Efficient Language Models", arXiv:2402.19427, section 2.4,
fig. 2), laid out as RecurrentGemma's ``RecurrentBlock``.

Two branches from ``x_t`` (``hidden`` wide) into ``width`` channels (default ``width = hidden``,
RecurrentGemma's ``lru_width`` default), multiplied, then projected back::

    y_t = W_o ( gelu(W_y x_t + b_y) * RG-LRU(ShortConv_conv(W_x x_t + b_x))_t ) + b_o

RG-LRU on its input ``z_t`` (paper eq. 1-4, c = 8)::

    r_t = sigmoid(W_a z_t + b_a)                        recurrence gate
    i_t = sigmoid(W_i z_t + b_i)                        input gate
    log a_t = c r_t log sigmoid(Λ) = -c r_t softplus(-Λ)  (a_t = sigmoid(Λ)^(c r_t), in log space)
    h_t = a_t * h_{t-1} + sqrt(1 - a_t^2) * (i_t * z_t)

``sqrt(1 - a^2)`` is computed as ``sqrt(-expm1(2 log a))`` (accurate when a is near 1). The recurrence runs
through :func:`hybriddsl.kernels.linear_scan.linear_scan` (``h = a h + b``); :meth:`GriffinBlock.step` through
``linear_scan_step``, with the conv window and ``h`` (float32) as state. ``forward`` computes both gates in one
matmul and a, b in one autograd function with a hand-written backward
(:func:`hybriddsl.layers.rglru_gates.rglru_scan_coeffs`); ``step`` keeps the plain form (:func:`rglru_coeffs`).

Choices, stated (each with the option that gives RecurrentGemma's choice instead):
- the gates ``W_a``, ``W_i`` are plain dense ``width x width`` maps by default; ``gate_blocks = n`` makes them
  block-diagonal with ``n`` blocks of ``width / n`` (RecurrentGemma: one block per attention head), each block
  ``z_blk @ W[h] + b[h]`` with ``W`` stored ``[n, in, out]`` as RecurrentGemma stores it;
- no reset of the ``sqrt(1 - a^2)`` multiplier at the first token by default (the paper's eq. 4 as written);
  ``reset = true`` sets it to 1 at position 0 (RecurrentGemma's document start), in ``step`` too: the state
  then carries ``seen`` ([batch] int64, 0 until the row's first token, so a zeroed row restarts);
- ``gelu_tanh``: the y branch's GELU tanh-approximated (RecurrentGemma's ``gelu_pytorch_tanh``) instead of
  exact;
- every layer owns its weights (Edifice's ``griffin_lru`` shares them across layers by mistake).

Initialization (paper / RecurrentGemma): ``Λ`` such that ``a^c = sigmoid(Λ)^c`` is uniform in [0.9, 0.999];
input projections normal with std ``hidden^(-1/2)``, gates and output std ``width^(-1/2)``, conv weights std
``(0.01 / conv)^(1/2)``, biases zero.

The gated MLP that follows in Griffin's residual stack is a companion: ``ffn`` with ``act = geglu``,
``mult = 3``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hybriddsl.layers.base import Mixer, ShortConv, State, options_from
from hybriddsl.layers.rglru_gates import C, rglru_scan_coeffs
from hybriddsl.specs.griffin import SPEC, validate  # noqa: F401 (the kind's spec, torch-free)


def rglru_coeffs(lam: torch.Tensor, r: torch.Tensor, i: torch.Tensor, z: torch.Tensor):
    """The scan's coefficients of the RG-LRU: a_t and b_t = sqrt(1 - a_t^2) * i_t * z_t (float32 or wider).

    lam: [width]; r, i: gates in (0, 1), z: input, all [..., width]. Returns (a, b) of that shape.
    """
    dtype = torch.promote_types(z.dtype, torch.float32)
    log_a = -C * r.to(dtype) * F.softplus(-lam.to(dtype))
    # sqrt(1 - a^2); the floor keeps the derivative finite if a gate drives a to exactly 1
    mult = torch.sqrt((-torch.expm1(2 * log_a)).clamp_min(1e-12))
    return log_a.exp(), mult * i.to(dtype) * z.to(dtype)


class BlockDiagonalLinear(nn.Module):
    """``blocks`` independent ``in -> out`` maps over equal slices of the last dim: x [..., blocks * width] ->
    same. ``weight`` [blocks, width, width] is applied as ``x_blk @ weight[h]`` (RecurrentGemma's layout)."""

    def __init__(self, width: int, blocks: int):
        super().__init__()
        self.blocks, self.block = blocks, width // blocks
        self.weight = nn.Parameter(torch.empty(blocks, self.block, self.block))
        self.bias = nn.Parameter(torch.zeros(blocks, self.block))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xb = x.reshape(*x.shape[:-1], self.blocks, self.block)
        y = torch.einsum("...hi,hio->...ho", xb, self.weight) + self.bias
        return y.reshape(x.shape)


@options_from(SPEC)
class GriffinBlock(Mixer):
    """Griffin recurrent block. x: [batch, seq, hidden] -> [batch, seq, hidden], width channels inside."""

    def __init__(
        self,
        hidden_size: int,
        *,
        width: int | None,
        conv: int,
        mlp: bool,  # consumed by the spec's companions; the mixer itself ignores it
        gelu_tanh: bool,
        gate_blocks: int | None,
        reset: bool,
    ):
        super().__init__()
        w = width or hidden_size
        self.hidden, self.width = hidden_size, w
        self.approximate = "tanh" if gelu_tanh else "none"
        self.reset = reset
        self.in_y = nn.Linear(hidden_size, w)  # gelu branch
        self.in_x = nn.Linear(hidden_size, w)  # recurrence branch
        self.conv = ShortConv(w, conv)
        if gate_blocks:  # RecurrentGemma: block-diagonal gates, one block per head
            self.gate_a: nn.Module = BlockDiagonalLinear(w, gate_blocks)  # recurrence gate r
            self.gate_i: nn.Module = BlockDiagonalLinear(w, gate_blocks)  # input gate i
        else:
            self.gate_a = nn.Linear(w, w)
            self.gate_i = nn.Linear(w, w)
        self.lam = nn.Parameter(torch.empty(w))
        self.out_proj = nn.Linear(w, hidden_size)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        hidden_size, w, conv = self.hidden, self.width, self.conv.size
        for lin, fan_in in (
            (self.in_y, hidden_size),
            (self.in_x, hidden_size),
            (self.gate_a, w),
            (self.gate_i, w),
            (self.out_proj, w),
        ):
            if isinstance(lin, BlockDiagonalLinear):  # fan-in of one block
                fan_in = lin.block
            nn.init.normal_(lin.weight, std=fan_in**-0.5)
            nn.init.zeros_(lin.bias)
        nn.init.normal_(self.conv.conv.weight, std=math.sqrt(0.01 / conv))
        nn.init.zeros_(self.conv.conv.bias)
        self.reset_lambda()

    @torch.no_grad()
    def reset_lambda(self, lo: float = 0.9, hi: float = 0.999) -> None:
        """Λ with sigmoid(Λ)^c uniform in [lo, hi]: Λ = logit(u^(1/c)), u ~ U[lo, hi] (paper, sec. 2.4)."""
        u = torch.empty_like(self.lam, dtype=torch.float64).uniform_(lo, hi)
        p = u ** (1.0 / C)
        self.lam.copy_(torch.log(p) - torch.log1p(-p))

    def _gates(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Conv output z [..., width] -> scan coefficients (a, b), float32."""
        return rglru_coeffs(self.lam, torch.sigmoid(self.gate_a(z)), torch.sigmoid(self.gate_i(z)), z)

    def _first(self, z: torch.Tensor) -> torch.Tensor:
        """b at a reset position: ``i * z`` (the ``sqrt(1 - a^2)`` multiplier set to 1). z [..., width]."""
        dtype = torch.promote_types(z.dtype, torch.float32)
        return torch.sigmoid(self.gate_i(z)).to(dtype) * z.to(dtype)

    def _gate_pre(self, z: torch.Tensor) -> torch.Tensor:
        """Both gates' pre-activations in one matmul: z [B, T, width] -> [blocks, B*T, 2*blk] (per block the
        recurrence gate's columns, then the input gate's; dense gates are one block)."""
        ga, gi = self.gate_a, self.gate_i
        if isinstance(ga, BlockDiagonalLinear):
            zt = z.reshape(-1, ga.blocks, ga.block).transpose(0, 1)  # [blocks, B*T, blk], no copy
            w = torch.cat([ga.weight, gi.weight], dim=2)
            bias = torch.cat([ga.bias, gi.bias], dim=1)[:, None]
            return torch.baddbmm(bias, zt, w)
        w = torch.cat([ga.weight, gi.weight])
        return F.linear(z.reshape(-1, self.width), w, torch.cat([ga.bias, gi.bias]))[None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from hybriddsl.kernels.linear_scan import linear_scan

        y = F.gelu(self.in_y(x), approximate=self.approximate)
        z = self.conv(self.in_x(x)).contiguous()
        if torch.compiler.is_compiling():  # its out= into strided views does not trace; the plain ops do
            a, b = self._gates(z)
            if self.reset:  # position 0 starts a document: h_0 = i_0 z_0 (h_-1 = 0, so a_0 does not matter)
                b = torch.cat([self._first(z[:, :1]), b[:, 1:]], dim=1)
        else:  # the same a, b by one autograd function with a hand-written backward
            a, b = rglru_scan_coeffs(self._gate_pre(z), z, self.lam, self.reset)
        h, _ = linear_scan(a, b)
        return self.out_proj(h.to(x.dtype) * y)

    def init_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> State:
        """``conv``: previous inputs [batch, width, conv-1] (model dtype), ``h``: [batch, width] float32; with
        ``reset``, ``seen`` [batch] int64 (0 before a row's first token)."""
        device = device or self._param().device
        st = {
            "conv": self.conv.init_state(batch, device=device, dtype=dtype),
            "h": torch.zeros(batch, self.width, device=device, dtype=torch.float32),
        }
        if self.reset:
            st["seen"] = torch.zeros(batch, device=device, dtype=torch.int64)
        return st

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One token x [batch, hidden] -> y [batch, hidden] and the advanced state."""
        from hybriddsl.kernels.linear_scan import linear_scan_step

        y = F.gelu(self.in_y(x), approximate=self.approximate)
        z, buf = self.conv.step(self.in_x(x), state["conv"].to(x.dtype))
        a, b = self._gates(z)
        new = {"conv": buf.to(state["conv"].dtype)}
        if self.reset:
            b = torch.where((state["seen"] == 0)[:, None], self._first(z), b)
            new["seen"] = torch.ones_like(state["seen"])
        new["h"] = linear_scan_step(a, b, state["h"])
        return self.out_proj(new["h"].to(x.dtype) * y), new
