"""Causal softmax attention (Vaswani et al. 2017) with grouped-query heads, sliding windows, RoPE and QK-norm.

For queries ``q_t`` (``heads`` heads) and keys/values ``k_s, v_s`` (``kv_heads`` heads; query head ``h`` reads
key/value head ``h // (heads / kv_heads)``: grouped-query attention, Ainslie et al. 2023)::

    o_t = sum_{s in S(t)} softmax_s(q_t . k_s / sqrt(head_dim)) v_s,    y_t = W_o [o_t^1; ...; o_t^heads]

where ``S(t) = {0..t}`` (full causal), ``{t-window+1..t}`` (sliding window: it COUNTS the current token, so
``window = 1`` attends to the token itself only), or every position (``causal = false``).

- ``rope``: rotary position embedding (Su et al. 2021, RoFormer), rotate-half (GPT-NeoX) layout: the pair
  ``(x_i, x_{i+d/2})`` of q and k at position ``p`` turns by the angle ``p * theta^(-2i/d)``.
- ``qk_norm``: RMSNorm over ``head_dim`` of every q and k head (Dehghani et al. 2023; as OLMo-2 / Qwen3).
  Edifice's ``qk_layernorm`` uses LayerNorm; we take RMSNorm (no mean subtraction, one learned scale of size
  ``head_dim`` shared by the heads).
- ``rope_scaling``: ``linear``, ``llama3`` or ``yarn`` context extension of RoPE, with ``rope_factor``,
  ``rope_original`` (the pre-training context), ``rope_low_freq``/``rope_high_freq`` (llama3),
  ``rope_beta_fast``/``rope_beta_slow``/``rope_mscale``/``rope_truncate`` (yarn): formulas in
  :mod:`hybriddsl.layers.rope`, as transformers' ``rope_parameters``.
- ``rope_dim``: partial RoPE: only the first ``rope_dim`` channels of each head turn (rotate-half within them),
  the rest pass through (RecurrentGemma: half the head, Qwen3-Next: a quarter).
- ``out_gate``: ``o_t^h * sigmoid(W_g^h x_t)`` before ``W_o`` (Qwen3-Next's gated attention output); ``gate_proj``
  ``hidden -> heads*head_dim``.
- ``out_bias``: a bias on ``W_o`` alone (RecurrentGemma: q/k/v without, output with); default follows ``bias``.
- ``chunk``: evaluates queries in blocks of ``chunk`` positions, each against only the keys its block can see
  (bounded by the window): same result, peak memory ``O(chunk * (chunk + window))`` instead of ``O(T^2)``.
- ``dropout``: on the attention probabilities, in training only.

The FFN that Edifice puts after attention is a *companion*: the compiler inserts it as its own residual block.

``step`` keeps a KV cache: it grows by one entry per token without a window; with a window it is a fixed-size
ring buffer ``[batch, kv_heads, window, head_dim]`` plus a position counter, so the state keeps one shape
for ever (ready for CUDA graphs). Softmax does not care about the order of keys, so the ring needs no
rotation; RoPE is applied to keys before they are cached, with their absolute position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybriddsl.kernels.checks import compute_dtype
from hybriddsl.layers import window_attention
from hybriddsl.layers.base import GatedRMSNorm, Mixer, State, options_from
from hybriddsl.layers.rope import apply_rope, rope_angles  # noqa: F401 (importers find them here too)
from hybriddsl.specs.attention import SPEC, attention_flops, keys_per_query, validate  # noqa: F401 (the kind's spec, torch-free)

# qk-norm: one RMSNorm class for every layer (layers/base.py); the name stays for importers
HeadRMSNorm = GatedRMSNorm


def attention_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, causal: bool, window: int | None) -> torch.Tensor | None:
    """Boolean mask [len(q_pos), len(k_pos)]: True where query at q_pos may attend to the key at k_pos."""
    if not causal:
        return None
    d = q_pos[:, None] - k_pos[None, :]
    keep = d >= 0
    if window is not None:
        keep = keep & (d < window)
    return keep


@options_from(SPEC)
class Attention(Mixer):
    """Multi-head / grouped-query causal softmax attention. x: [batch, seq, hidden] -> [batch, seq, hidden].

    Projections: q ``hidden -> heads*head_dim``, k and v ``hidden -> kv_heads*head_dim``, out
    ``heads*head_dim -> hidden``.
    """

    inplace_step = True

    def __init__(
        self,
        hidden_size: int,
        *,
        heads: int,
        kv_heads: int | None,
        head_dim: int | None,
        window: int | None,
        qk_norm: bool,
        rope: bool,
        rope_theta: float,
        bias: bool,
        dropout: float,
        chunk: int | None,
        ffn: bool,  # consumed by the spec's companions; the mixer itself ignores it
        causal: bool,
        qk_eps: float,
        rope_dim: int | None,
        out_gate: bool,
        out_bias: bool | None,
        rope_scaling: str,
        rope_factor: float,
        rope_original: int | None,
        rope_low_freq: float,
        rope_high_freq: float,
        rope_beta_fast: float,
        rope_beta_slow: float,
        rope_mscale: float | None,
        rope_truncate: bool,
    ):
        super().__init__()
        self.hidden = hidden_size
        self.heads = heads
        self.kv_heads = kv_heads or heads
        self.head_dim = head_dim or hidden_size // heads
        self.window, self.causal, self.chunk = window, causal, chunk
        self.rope, self.rope_theta = rope, rope_theta
        self.rope_dim = rope_dim or self.head_dim
        self.rope_scaling = (
            None
            if rope_scaling == "none"
            else {
                "type": rope_scaling,
                "factor": rope_factor,
                "original": rope_original,
                "low_freq": rope_low_freq,
                "high_freq": rope_high_freq,
                "beta_fast": rope_beta_fast,
                "beta_slow": rope_beta_slow,
                "mscale": rope_mscale,
                "truncate": rope_truncate,
            }
        )
        self.dropout = dropout
        d = self.head_dim
        self.q_proj = nn.Linear(hidden_size, heads * d, bias=bias)
        self.k_proj = nn.Linear(hidden_size, self.kv_heads * d, bias=bias)
        self.v_proj = nn.Linear(hidden_size, self.kv_heads * d, bias=bias)
        self.out_proj = nn.Linear(heads * d, hidden_size, bias=bias if out_bias is None else out_bias)
        self.gate_proj = nn.Linear(hidden_size, heads * d, bias=bias) if out_gate else None
        self.q_norm = HeadRMSNorm(d, eps=qk_eps) if qk_norm else None
        self.k_norm = HeadRMSNorm(d, eps=qk_eps) if qk_norm else None
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        # Xavier-uniform projections and zero biases, as torch.nn.MultiheadAttention (and tensor2tensor) do.
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj, self.gate_proj):
            if lin is None:
                continue
            nn.init.xavier_uniform_(lin.weight)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    # ---- shared pieces -------------------------------------------------------------------------------------
    def _qkv(self, x: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, T, hidden], pos [T] -> q [B, heads, T, d], k, v [B, kv_heads, T, d] (normed and rotated)."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope:
            cos, sin = rope_angles(pos, self.rope_dim, self.rope_theta, compute_dtype(q), self.rope_scaling)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return q, k, v

    def _sdpa(self, q, k, v, mask: torch.Tensor | None, is_causal: bool = False) -> torch.Tensor:
        p = self.dropout if self.training else 0.0
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal, enable_gqa=self.kv_heads != self.heads
        )

    # ---- forward -------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        pos = torch.arange(t, device=x.device)
        q, k, v = self._qkv(x, pos)
        if self.chunk is None or self.chunk >= t:
            if self.causal and (self.window is None or self.window >= t):
                o = self._sdpa(q, k, v, None, is_causal=True)  # lets SDPA pick its fused causal kernel
            elif self.window is not None:  # never a dense [T, T] mask: layers/window_attention.py
                p = self.dropout if self.training else 0.0
                gqa = self.kv_heads != self.heads
                o = window_attention.sliding_window_attention(q, k, v, self.window, window_attention.IMPL, p, gqa)
            else:
                o = self._sdpa(q, k, v, attention_mask(pos, pos, self.causal, self.window))
        else:
            o = self._chunked(q, k, v, pos)
        return self._out(o.transpose(1, 2).reshape(b, t, self.heads * self.head_dim), x)

    def _out(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Heads o [..., heads*head_dim] -> y [..., hidden]: ``out_proj``, after the output gate with ``out_gate``."""
        if self.gate_proj is not None:
            o = o * torch.sigmoid(self.gate_proj(x))
        return self.out_proj(o)

    def _chunked(self, q, k, v, pos: torch.Tensor) -> torch.Tensor:
        """Queries in blocks of ``chunk``; each block sees keys from its first visible one to its last."""
        t = q.shape[2]
        outs = []
        for s in range(0, t, self.chunk):
            e = min(s + self.chunk, t)
            if not self.causal:
                k0, k1 = 0, t
            else:
                k0 = 0 if self.window is None else max(0, s - self.window + 1)
                k1 = e
            mask = attention_mask(pos[s:e], pos[k0:k1], self.causal, self.window)
            outs.append(self._sdpa(q[:, :, s:e], k[:, :, k0:k1], v[:, :, k0:k1], mask))
        return torch.cat(outs, dim=2)

    # ---- streaming -----------------------------------------------------------------------------------------
    def init_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> State:
        """KV cache ([batch, kv_heads, 0 or window, head_dim], model dtype), ``pos`` (int64 scalar: tokens
        written, which picks the ring slot) and ``row_pos`` ([batch] int64: tokens each row has seen since it
        was last reset, which gives RoPE positions and masks keys from before a reset)."""
        w = self.q_proj.weight
        device, dtype = device or w.device, dtype or w.dtype
        n = 0 if self.window is None else self.window
        shape = (batch, self.kv_heads, n, self.head_dim)
        return {
            "k": torch.zeros(shape, device=device, dtype=dtype),
            "v": torch.zeros(shape, device=device, dtype=dtype),
            "pos": torch.zeros((), device=device, dtype=torch.int64),
            "row_pos": torch.zeros(batch, device=device, dtype=torch.int64),
        }

    def step(self, x: torch.Tensor, state: State, inplace: bool = False) -> tuple[torch.Tensor, State]:
        """One token x [batch, hidden] -> y [batch, hidden]; the cache gains it (a ring drops its oldest).

        A key is visible to row ``i`` when its age (tokens written after it) is at most ``row_pos[i]``, so a
        row whose state slices were zeroed (``row_pos[i] = 0``, a restarted stream) sees only its own tokens
        while the other rows of the batch go on: the same outputs as a fresh stream.

        ``inplace=True`` (a :class:`hybriddsl.streaming.Stream`) writes the key and value into the ring slot
        of ``state``'s own cache and advances its counters in place, then returns ``state`` (a cache without
        a window grows, so it is replaced as before).
        """
        if not self.causal:
            raise RuntimeError("attention with causal=false cannot run token by token: it reads future tokens")
        b, d = x.shape[0], self.head_dim
        pos, row = state["pos"], state["row_pos"]
        q = self.q_proj(x).view(b, self.heads, 1, d)
        k = self.k_proj(x).view(b, self.kv_heads, 1, d)
        v = self.v_proj(x).view(b, self.kv_heads, 1, d)
        if inplace and self.window is not None and not self.rope and state["k"].dtype == x.dtype:
            return self._step_ring_inplace(x, q, k, v, state)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope:  # per-row positions: cos/sin [batch, 1, 1, d]
            cos, sin = rope_angles(row, self.rope_dim, self.rope_theta, compute_dtype(q), self.rope_scaling)
            cos, sin = cos[:, None, None], sin[:, None, None]
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.window is None:
            kc = torch.cat([state["k"], k.to(state["k"].dtype)], dim=2)
            vc = torch.cat([state["v"], v.to(state["v"].dtype)], dim=2)
            age = kc.shape[2] - 1 - torch.arange(kc.shape[2], device=x.device)  # entry j was written at step j
        else:
            # Write slot pos % window by a one-hot select: no .item(), no in-place update, constant shapes.
            slots = torch.arange(self.window, device=x.device)
            hit = (slots == pos % self.window)[None, None, :, None]
            kc = torch.where(hit, k.to(state["k"].dtype), state["k"])
            vc = torch.where(hit, v.to(state["v"].dtype), state["v"])
            age = (pos - slots) % self.window  # 0 for the slot just written; unwritten slots are masked by row
        mask = (age[None, :] <= row[:, None])[:, None, None, :]  # [batch, 1, 1, keys]
        o = self._sdpa(q, kc.to(q.dtype), vc.to(q.dtype), mask)
        y = self._out(o.reshape(b, self.heads * d), x)
        if inplace:
            if self.window is None:
                state["k"], state["v"] = kc, vc
            else:
                state["k"].copy_(kc)
                state["v"].copy_(vc)
            pos.add_(1)
            row.add_(1)
            return y, state
        return y, {"k": kc, "v": vc, "pos": pos + 1, "row_pos": row + 1}

    def _step_ring_inplace(self, x, q, k, v, state: State) -> tuple[torch.Tensor, State]:
        """:meth:`step` with a window, no RoPE, cache in x's dtype: the same math in fewer ops. The new key
        and value go into slot ``pos % window`` by ``index_copy_`` (no ``.item()``: no host sync), the QK
        norms are one ``F.rms_norm`` each (float32/float64 inputs compute in their own dtype there too)."""
        b, d = x.shape[0], self.head_dim
        pos, row, kc, vc = state["pos"], state["row_pos"], state["k"], state["v"]
        if self.q_norm is not None:
            if q.dtype in (torch.float32, torch.float64) and self.q_norm.weight.dtype == q.dtype:
                q = F.rms_norm(q, (d,), self.q_norm.weight, self.q_norm.eps)
                k = F.rms_norm(k, (d,), self.k_norm.weight, self.k_norm.eps)
            else:
                q, k = self.q_norm(q), self.k_norm(k)
        slot = torch.remainder(pos, self.window).view(1)
        kc.index_copy_(2, slot, k)
        vc.index_copy_(2, slot, v)
        age = (pos - torch.arange(self.window, device=x.device)) % self.window  # 0: the slot just written
        mask = (age[None, :] <= row[:, None])[:, None, None, :]  # [batch, 1, 1, keys]
        o = self._sdpa(q, kc, vc, mask)
        pos.add_(1)
        row.add_(1)
        return self._out(o.reshape(b, self.heads * d), x), state

    def state_bytes(self, seq_len: int, dtype_bytes: int = 4) -> int:
        """Bytes of K and V cached after ``seq_len`` tokens: ``2 kv_heads head_dim min(seq_len, window)``.

        With a window the ring buffer is preallocated at ``window`` entries from the first token; the count
        here is the live cache, which reaches that size after ``window`` tokens. The int64 position counters
        are not counted.
        """
        n = seq_len if self.window is None else min(seq_len, self.window)
        return 2 * self.kv_heads * self.head_dim * n * dtype_bytes
