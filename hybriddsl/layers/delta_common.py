"""What DeltaNet and Gated DeltaNet share: projections, short convolutions, L2 norm, beta, the kernel call.

Both layers (Yang et al. 2024, arXiv:2406.06484; Yang, Kautz, Hatamizadeh 2025, arXiv:2412.06464; layout of
fla-org/flash-linear-attention's ``fla/layers/{delta_net,gated_deltanet}.py``) compute, per head ``h``::

    q_t = l2norm(silu(conv_q(W_q x)_t)),  k_t = l2norm(silu(conv_k(W_k x)_t)),  v_t = silu(conv_v(W_v x)_t)
    beta_t = sigmoid(W_beta x_t)
    S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,   o_t = K^-1/2 S_t^T q_t
    y_t = W_o [norm(o_t^1, gate_t^1); ...; norm(o_t^H, gate_t^H)]

with ``conv`` a causal depthwise convolution of width ``conv`` (left out when ``conv = 0``; SiLU applies
either way, as in fla), ``norm`` an RMSNorm over one head's value width whose weight is shared by the heads
(fla's ``o_norm``), and ``alpha_t = 1``, no gate for DeltaNet. :class:`DeltaMixer` holds all of this; a kind
supplies only ``_decay`` (the log decay ``g_t = log alpha_t``) and ``_gate``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybriddsl.kernels.checks import compute_dtype
from hybriddsl.layers.base import GatedRMSNorm, Mixer, ShortConv, State
from hybriddsl.layers.delta_features import conv_silu_norm, gated_head_norm
from hybriddsl.specs.delta_common import delta_flops, validate  # noqa: F401 (the kind's spec, torch-free)


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x / sqrt(sum(x^2) + eps)`` over the last dim (fla's ``l2norm``), in float32; returns x's dtype."""
    xf = x.to(compute_dtype(x))
    return (xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) + eps)).to(x.dtype)


# RMSNorm over a head's value width (times silu(gate) when given): the one RMSNorm class of layers/base.py
HeadNorm = GatedRMSNorm


def _kernels():
    # Imported on first use so that this module imports even while the kernel package is being written.
    from hybriddsl.kernels.delta_rule import chunk_delta_rule, delta_rule_step

    return chunk_delta_rule, delta_rule_step


class DeltaMixer(Mixer):
    """Base of the delta-rule mixers. x: [batch, seq, hidden] -> [batch, seq, hidden].

    Parameters: ``q_proj``, ``k_proj`` ``hidden -> heads*head_dim``; ``v_proj`` ``hidden -> heads*head_v_dim``;
    ``b_proj`` ``hidden -> heads`` (no bias, as fla); ``q_conv``, ``k_conv``, ``v_conv`` (``conv >= 1``; no bias,
    fla's ``conv_bias=False``); ``o_norm`` (weight [head_v_dim], shared by the heads as fla's ``o_norm``);
    ``o_proj`` ``heads*head_v_dim -> hidden``. Linear and conv weights keep PyTorch's default init, as fla's layer
    modules do (fla's model wrapper redraws them N(0, 0.02): a model-wide choice, not the layer's).

    ``v_heads`` (default ``heads``): more value heads than q/k heads (Qwen3-Next's ``linear_num_value_heads``):
    q/k head ``h`` serves value heads ``h * r .. h * r + r - 1`` (``r = v_heads / heads``, transformers'
    ``repeat_interleave``); then ``v_proj``, ``b_proj``, the gate, the memory and ``o_proj`` are per value head.
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
        norm_eps: float,
        v_heads: int | None,
    ):
        super().__init__()
        self.hidden, self.heads, self.chunk = hidden_size, heads, chunk
        self.v_heads = v_heads or heads
        self.head_dim = head_dim or hidden_size // heads
        self.head_v_dim = int(self.head_dim * expand_v)
        self.conv = conv
        kd, vd = heads * self.head_dim, self.v_heads * self.head_v_dim
        self.q_proj = nn.Linear(hidden_size, kd, bias=bias)
        self.k_proj = nn.Linear(hidden_size, kd, bias=bias)
        self.v_proj = nn.Linear(hidden_size, vd, bias=bias)
        self.b_proj = nn.Linear(hidden_size, self.v_heads, bias=False)
        if conv >= 1:
            self.q_conv = ShortConv(kd, conv, bias=False)
            self.k_conv = ShortConv(kd, conv, bias=False)
            self.v_conv = ShortConv(vd, conv, bias=False)
        self.o_norm = HeadNorm(self.head_v_dim, eps=norm_eps)
        self.o_proj = nn.Linear(vd, hidden_size, bias=bias)

    # ---- hooks for the kinds -------------------------------------------------------------------------------
    def _decay(self, x: torch.Tensor) -> torch.Tensor | None:
        """Log decay ``g`` [..., heads] (float32) from x [..., hidden], or None for no decay."""
        return None

    def _gate(self, x: torch.Tensor) -> torch.Tensor | None:
        """Output gate [..., heads, head_v_dim] from x [..., hidden], or None."""
        return None

    # ---- shared pieces -------------------------------------------------------------------------------------
    def _split(self, z: torch.Tensor, d: int) -> torch.Tensor:
        """[..., n d] -> [..., n, d]: n = heads for q/k (d = head_dim), v_heads for values and gates."""
        return z.reshape(*z.shape[:-1], -1, d)

    def _qk(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Activated q, k [..., heads*head_dim] -> L2-normed [..., v_heads, head_dim] (shared by value heads)."""
        q, k = l2norm(self._split(F.silu(q), self.head_dim)), l2norm(self._split(F.silu(k), self.head_dim))
        if self.v_heads != self.heads:
            r = self.v_heads // self.heads
            q, k = q.repeat_interleave(r, dim=-2), k.repeat_interleave(r, dim=-2)
        return q, k

    def _out(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """o [..., heads, head_v_dim] -> y [..., hidden]: per-head norm (gated for GDN), then o_proj."""
        o = self.o_norm(o, self._gate(x))
        return self.o_proj(o.reshape(*o.shape[:-2], -1))

    def _projections(self) -> dict[str, nn.Linear]:
        """The layer's projections of x, by name (a kind with more adds its own): fused on the CPU path."""
        return {"q": self.q_proj, "k": self.k_proj, "v": self.v_proj, "b": self.b_proj}

    def _decay_of(self, z: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Log decay from the projections :meth:`_projections` names (None: no decay)."""
        return None

    def _gate_of(self, z: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Output gate [..., v_heads, head_v_dim] from the projections (None: no gate)."""
        return None

    def _forward_cpu(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward`'s math for float32 / float64 on the CPU with ``conv >= 1``, in fewer, larger ops: every
        projection of x in one matmul (one x-gradient instead of a sum of five or seven); conv + SiLU + L2 norm of
        q, k, v and the output norm as autograd functions over contiguous tensors
        (:mod:`hybriddsl.layers.delta_features`).
        """
        chunk_delta_rule, _ = _kernels()
        projs = self._projections()
        lins = list(projs.values())
        bias = None
        if any(p.bias is not None for p in lins):
            bias = torch.cat([x.new_zeros(p.out_features) if p.bias is None else p.bias for p in lins])
        z = F.linear(x, torch.cat([p.weight for p in lins]), bias)
        parts = dict(zip(projs, z.split([p.out_features for p in lins], dim=-1), strict=True))
        q = self._split(conv_silu_norm(parts["q"], self.q_conv.conv.weight, self.head_dim), self.head_dim)
        k = self._split(conv_silu_norm(parts["k"], self.k_conv.conv.weight, self.head_dim), self.head_dim)
        v = self._split(conv_silu_norm(parts["v"], self.v_conv.conv.weight), self.head_v_dim)
        if self.v_heads != self.heads:
            r = self.v_heads // self.heads
            q, k = q.repeat_interleave(r, dim=-2), k.repeat_interleave(r, dim=-2)
        beta = torch.sigmoid(parts["b"])
        o, _ = chunk_delta_rule(q, k, v, beta, g=self._decay_of(parts), chunk_size=self.chunk)
        o = gated_head_norm(o, self.o_norm.weight, self._gate_of(parts), self.o_norm.eps)
        return self.o_proj(o.reshape(*o.shape[:-2], -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0:  # an empty batch or sequence: nothing to mix (reshapes cannot infer -1 from 0 elements)
            return x * 0
        if self.conv >= 1 and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
            return self._forward_cpu(x)
        chunk_delta_rule, _ = _kernels()
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.conv >= 1:
            q, k, v = self.q_conv(q), self.k_conv(k), self.v_conv(v)
        q, k = self._qk(q, k)
        v = self._split(F.silu(v), self.head_v_dim)
        beta = torch.sigmoid(self.b_proj(x))
        o, _ = chunk_delta_rule(q, k, v, beta, g=self._decay(x), chunk_size=self.chunk)
        return self._out(o.to(x.dtype), x)

    # ---- streaming -----------------------------------------------------------------------------------------
    def init_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> State:
        """``S`` [batch, v_heads, head_dim, head_v_dim] float32 (the delta-rule memory) and, with ``conv >= 1``,
        the last ``conv - 1`` projected inputs of each short conv (``conv_q``, ``conv_k``: [batch,
        heads*head_dim, conv-1]; ``conv_v``: [batch, v_heads*head_v_dim, conv-1]) in the model's dtype."""
        w = self.q_proj.weight
        device, dtype = device or w.device, dtype or w.dtype
        st = {"S": torch.zeros(batch, self.v_heads, self.head_dim, self.head_v_dim, device=device)}
        if self.conv >= 1:
            for name in ("q", "k", "v"):
                st[f"conv_{name}"] = getattr(self, f"{name}_conv").init_state(batch, device, dtype)
        return st

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One token x [batch, hidden] -> y [batch, hidden] and the new state."""
        _, delta_rule_step = _kernels()
        new: State = {}
        feats = {"q": self.q_proj(x), "k": self.k_proj(x), "v": self.v_proj(x)}
        if self.conv >= 1:
            for name, z in feats.items():
                feats[name], new[f"conv_{name}"] = getattr(self, f"{name}_conv").step(z, state[f"conv_{name}"])
        q, k = self._qk(feats["q"], feats["k"])
        v = self._split(F.silu(feats["v"]), self.head_v_dim)
        beta = torch.sigmoid(self.b_proj(x))
        o, new["S"] = delta_rule_step(q, k, v, beta, g=self._decay(x), state=state["S"])
        return self._out(o.to(x.dtype), x), new

    def state_bytes(self, seq_len: int, dtype_bytes: int = 4) -> int:
        """``4 v_heads head_dim head_v_dim`` (float32 memory) plus ``(conv - 1)`` inputs of the three convs."""
        mem = 4 * self.v_heads * self.head_dim * self.head_v_dim
        width = 2 * self.heads * self.head_dim + self.v_heads * self.head_v_dim
        conv = max(self.conv - 1, 0) * width * dtype_bytes
        return mem + conv
