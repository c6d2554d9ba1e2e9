"""Zamba2's shared transformer block (Glorioso et al. 2024, "Zamba2"; transformers' modeling_zamba2).

A hybrid layer of Zamba2 runs, for its use ``j`` of a shared block (stream ``r``, embedding output ``x0``)::

    s = RMSNorm_2h([r, x0])                                   (input_layernorm, width 2 x hidden)
    q = W_q s + B_q^j A_q^j s   (and k, v; the adapters only with attn_adapter)
    o = W_o attention(q, k, v)                                 (causal; heads of width 2 hidden / heads; scores
                                                                scaled by (head_width / 2)^-1/2; RoPE with rope)
    f = RMSNorm_h(o)                                           (pre_ff_layernorm; no residual inside the block)
    g, u = split(W_gu f + B_gu^j A_gu^j f)                     (the adapter with rank >= 1)
    t = L^j W_d (act(g) * u)                                   (L^j: the use's own linear, no bias)

and its Mamba layer then reads ``norm(r + t)`` while its residual adds to ``r`` alone: ``t`` is not part of
the stream. The core weights (``W_*``, norms) are shared by every use; ``uses[j]`` holds use ``j``'s adapters
and linear. ``forward(r, x0, use)``: r, x0 [batch, seq, hidden] -> t [batch, seq, hidden]; ``step`` the same
for one token with a KV cache per use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybriddsl.kernels.checks import compute_dtype
from hybriddsl.layers.base import GatedRMSNorm, Mixer, State, options_from
from hybriddsl.layers.rope import apply_rope, rope_angles
from hybriddsl.specs.zamba_shared import SPEC, inner_width, validate  # noqa: F401 (the kind's spec, torch-free)


def _lora(d_in: int, rank: int, d_out: int) -> nn.Sequential:
    """``B A x``: down to ``rank`` then up (no biases), as transformers' adapters (Sequential of two Linear)."""
    return nn.Sequential(nn.Linear(d_in, rank, bias=False), nn.Linear(rank, d_out, bias=False))


class ZambaUse(nn.Module):
    """What one use of the shared block owns: its LoRA adapters and its output linear."""

    def __init__(self, hidden: int, rank: int, attn_adapter: bool, q: int, kv: int, inner: int):
        super().__init__()
        w = 2 * hidden
        self.q = _lora(w, rank, q) if attn_adapter else None
        self.k = _lora(w, rank, kv) if attn_adapter else None
        self.v = _lora(w, rank, kv) if attn_adapter else None
        self.gate_up = _lora(hidden, rank, 2 * inner) if rank else None
        self.linear = nn.Linear(hidden, hidden, bias=False)


@options_from(SPEC)
class ZambaShared(Mixer):
    """Zamba2's shared attention + MLP block with per-use adapters (see the module docstring)."""

    reads_embeddings = True  # the model passes the embedding output x0 and the use index

    def __init__(
        self,
        hidden_size: int,
        *,
        heads: int,
        kv_heads: int | None,
        inner: int | None,
        act: str,
        bias: bool,
        rank: int,
        attn_adapter: bool,
        rope: bool,
        rope_theta: float,
        eps: float,
        uses: int,
    ):
        super().__init__()
        w = 2 * hidden_size
        self.hidden, self.heads, self.kv_heads = hidden_size, heads, kv_heads or heads
        self.head_dim = w // heads
        self.inner = inner_width({"inner": inner}, hidden_size)
        self.act, self.rope, self.rope_theta = act, rope, rope_theta
        d = self.head_dim
        self.in_norm = GatedRMSNorm(w, eps=eps)
        self.q_proj = nn.Linear(w, heads * d, bias=False)
        self.k_proj = nn.Linear(w, self.kv_heads * d, bias=False)
        self.v_proj = nn.Linear(w, self.kv_heads * d, bias=False)
        self.o_proj = nn.Linear(heads * d, hidden_size, bias=False)
        self.ff_norm = GatedRMSNorm(hidden_size, eps=eps)
        self.gate_up = nn.Linear(hidden_size, 2 * self.inner, bias=bias)
        self.down = nn.Linear(self.inner, hidden_size, bias=bias)
        self.uses = nn.ModuleList(
            ZambaUse(hidden_size, rank, attn_adapter, heads * d, self.kv_heads * d, self.inner) for _ in range(uses)
        )
        self.scale = (d / 2) ** -0.5

    # ---- pieces ----------------------------------------------------------------------------------------------
    def _qkv(self, s: torch.Tensor, u: ZambaUse) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = self.q_proj(s), self.k_proj(s), self.v_proj(s)
        if u.q is not None:
            q, k, v = q + u.q(s), k + u.k(s), v + u.v(s)
        return q, k, v

    def _mlp(self, o: torch.Tensor, u: ZambaUse) -> torch.Tensor:
        f = self.ff_norm(o)
        gu = self.gate_up(f)
        if u.gate_up is not None:
            gu = gu + u.gate_up(f)
        g, up = gu.chunk(2, dim=-1)
        g = F.silu(g) if self.act == "swiglu" else F.gelu(g)
        return u.linear(self.down(g * up))

    def _rotate(self, q, k, pos):
        if not self.rope:
            return q, k
        cos, sin = rope_angles(pos, self.head_dim, self.rope_theta, compute_dtype(q))
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin)

    # ---- forward ---------------------------------------------------------------------------------------------
    def forward(self, r: torch.Tensor, x0: torch.Tensor, use: int = 0) -> torch.Tensor:
        """r (the stream), x0 (the embedding output): [batch, seq, hidden] -> t [batch, seq, hidden]."""
        b, t, _ = r.shape
        u = self.uses[use]
        s = self.in_norm(torch.cat([r, x0], dim=-1))
        q, k, v = self._qkv(s, u)
        q = q.view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = self._rotate(q, k, torch.arange(t, device=r.device))
        o = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=self.scale, enable_gqa=self.kv_heads != self.heads
        )
        return self._mlp(self.o_proj(o.transpose(1, 2).reshape(b, t, -1)), u)

    # ---- streaming -------------------------------------------------------------------------------------------
    def init_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> State:
        """An empty KV cache [batch, kv_heads, 0, head width] and ``row_pos`` ([batch] int64: tokens each row has
        seen since it was last reset; RoPE positions, and keys older than that are masked)."""
        w = self.q_proj.weight
        device, dtype = device or w.device, dtype or w.dtype
        shape = (batch, self.kv_heads, 0, self.head_dim)
        return {
            "k": torch.zeros(shape, device=device, dtype=dtype),
            "v": torch.zeros(shape, device=device, dtype=dtype),
            "row_pos": torch.zeros(batch, device=device, dtype=torch.int64),
        }

    def state_bytes(self, seq_len: int, dtype_bytes: int = 4) -> int:
        """Bytes of K and V cached by one use after ``seq_len`` tokens: ``2 kv_heads head_width seq_len`` (the
        int64 position counters are not counted)."""
        return 2 * self.kv_heads * self.head_dim * seq_len * dtype_bytes

    def step(
        self, r: torch.Tensor, state: State, x0: torch.Tensor | None = None, use: int = 0
    ) -> tuple[torch.Tensor, State]:
        """One token: r, x0 [batch, hidden] -> (t [batch, hidden], the cache with this token's key and value)."""
        if x0 is None:
            raise ValueError("zamba_shared.step needs the embedding output x0")
        b, d = r.shape[0], self.head_dim
        u = self.uses[use]
        row = state["row_pos"]
        s = self.in_norm(torch.cat([r, x0], dim=-1))
        q, k, v = self._qkv(s, u)
        q = q.view(b, self.heads, 1, d)
        k = k.view(b, self.kv_heads, 1, d)
        v = v.view(b, self.kv_heads, 1, d)
        if self.rope:
            cos, sin = rope_angles(row, d, self.rope_theta, compute_dtype(q))
            q, k = (
                apply_rope(q, cos[:, None, None], sin[:, None, None]),
                apply_rope(k, cos[:, None, None], sin[:, None, None]),
            )
        kc = torch.cat([state["k"], k.to(state["k"].dtype)], dim=2)
        vc = torch.cat([state["v"], v.to(state["v"].dtype)], dim=2)
        age = kc.shape[2] - 1 - torch.arange(kc.shape[2], device=r.device)
        mask = (age[None, :] <= row[:, None])[:, None, None, :]  # [batch, 1, 1, keys]: keys since the last reset
        o = F.scaled_dot_product_attention(
            q, kc.to(q.dtype), vc.to(q.dtype), attn_mask=mask, scale=self.scale, enable_gqa=self.kv_heads != self.heads
        )
        y = self._mlp(self.o_proj(o.reshape(b, -1)), u)
        return y, {"k": kc, "v": vc, "row_pos": row + 1}
