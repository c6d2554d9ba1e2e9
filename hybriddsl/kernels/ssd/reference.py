"""PyTorch paths of SSD, the scalar-decay case of gated linear attention (Dao & Gu 2024, "Transformers are SSMs",
arXiv:2405.21060, sections 6-7: the state-space dual form and its chunked algorithm).

Math, per batch and head ``h`` (head ``h`` reads the q/k group ``h // (H / G)``)::

    S_t = exp(g_t) S_{t-1} + k_t v_t^T          S_t: [K, V], g_t <= 0 a scalar log-decay per head
    o_t = scale * q_t^T S_t

Mamba-2 is this with ``q = C``, ``k = B``, ``v = Δ x``, ``g = Δ A``, ``scale = 1``. Because the decay is one
number per token and head, the decay between tokens ``j <= i`` of a chunk is the scalar ``L[i, j] = exp(b_i -
b_j)`` (``b`` the in-chunk cumulative log-decay), so a whole chunk is one masked matmul ``(q k^T ∘ L) v`` with
``q k^T`` shared by the heads of a group, and the chunks talk through one [K, V] state per head.

- :func:`ssd_naive`: the definition, a float32 loop over time (what tests compare against).
- :func:`ssd_torch`: the chunked algorithm in PyTorch (the CPU path), with the hand-written backward of
  ``chunked.py`` (plain autograd ops while torch.compile / torch.export trace).
- :func:`ssd_step`: one token with an explicit state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hybriddsl.kernels.checks import compute_dtype, traced


def _per_head(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[..., G, D] -> [..., H, D]: each group's row repeated for its H / G heads."""
    return x.repeat_interleave(heads // x.shape[-2], dim=-2)


def ssd_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The definition, a float32 (float64 for float64 inputs) loop over time.

    q, k: [B, T, G, K]; v: [B, T, H, V]; g: [B, T, H] (H a multiple of G); initial_state: [B, H, K, V].
    Returns o: [B, T, H, V] (input dtype) and the final state [B, H, K, V] (or None).
    """
    B, T, _, K = q.shape
    H, V = v.shape[2], v.shape[3]
    scale = K**-0.5 if scale is None else scale
    ct = compute_dtype(q)
    qf, kf = _per_head(q.to(ct), H), _per_head(k.to(ct), H)
    vf, gf = v.to(ct), g.to(ct)
    S = q.new_zeros(B, H, K, V, dtype=ct)
    if initial_state is not None:
        S = S + initial_state.to(ct)
    o = []
    for t in range(T):
        S = gf[:, t, :, None, None].exp() * S + kf[:, t, :, :, None] * vf[:, t, :, None, :]
        o.append(torch.einsum("bhk,bhkv->bhv", qf[:, t], S) * scale)
    out = torch.stack(o, dim=1).to(v.dtype) if T > 0 else v.new_zeros(B, 0, H, V)
    return out, (S if output_final_state else None)


def ssd_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked SSD in PyTorch (shapes and results as :func:`ssd_naive`); computes in float32 (float64 for
    float64 inputs) and returns the final state in that dtype.

    Per chunk of ``c = chunk_size`` tokens, with ``b`` the in-chunk cumulative log-decay and ``S0`` the state
    entering the chunk::

        o     = scale * ((q k^T ∘ L) v + exp(b) ∘ (q S0)),   L[i, j] = exp(b_i - b_j) for j <= i, else 0
        S_end = exp(b_last) S0 + (k ∘ exp(b_last - b))^T v

    ``q k^T`` and ``q S0`` are one matmul per group (its heads' values side by side); every exponent is <= 0
    where it is used, so no decay strength overflows. The states pass from chunk to chunk in a loop of T / c
    steps over [K, V] tensors.

    Eager calls run :class:`~hybriddsl.kernels.ssd.chunked.SSDChunked` (the same algorithm with a hand-written
    backward); traced calls the plain ops below, which the compiler sees through.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if not traced(q, k, v, g):
        from hybriddsl.kernels.ssd.chunked import ssd_chunked

        o, final = ssd_chunked(q, k, v, g, initial_state, float(scale), chunk_size)
        return o, (final if output_final_state else None)
    B, T, G, K = q.shape
    H, V = v.shape[2], v.shape[3]
    R = H // G  # heads per group
    scale = K**-0.5 if scale is None else scale
    ct = compute_dtype(q)
    c = chunk_size
    N = max(1, -(-T // c))
    pad = N * c - T  # zero q/k/v/g in the padding: no effect on real tokens or the final state

    # Layout: chunk-major [B, G, N, c, ...], a group's heads side by side with the values ([..., R, V] = R * V
    # columns), so q k^T, k^T v and q S are plain batched matmuls over (B, G, N) without copies of the states.
    def chunks(x: torch.Tensor, *tail: int) -> torch.Tensor:
        x = F.pad(x.to(ct), (0, 0) * (x.dim() - 2) + (0, pad)) if pad else x.to(ct)
        return x.reshape(B, N, c, G, *tail).movedim(3, 1).contiguous()

    qb, kb = chunks(q, K), chunks(k, K)  # [B, G, N, c, K]
    vb = chunks(v, R, V)  # [B, G, N, c, R, V]
    b = chunks(g, R).cumsum(3)  # in-chunk cumulative log-decay [B, G, N, c, R]

    # Intra-chunk: one masked matmul per chunk and head, the scores q k^T shared by a group's heads.
    idx = torch.arange(c, device=q.device)
    causal = idx[:, None] >= idx[None, :]
    bt = b.transpose(-1, -2)  # [B, G, N, R, c]
    seg = (bt[..., :, None] - bt[..., None, :]).masked_fill(~causal, float("-inf"))
    scores = (qb @ kb.transpose(-1, -2)) * scale  # [B, G, N, c, c]
    o = ((scores.unsqueeze(3) * seg.exp()) @ vb.transpose(3, 4)).transpose(3, 4)  # [B, G, N, c, R, V]

    # Inter-chunk: what each chunk adds to the state, then the state passed along in a loop over chunks.
    b_last = b[:, :, :, -1]  # [B, G, N, R]
    vw = (vb * (b_last.unsqueeze(3) - b).exp()[..., None]).view(B, G, N, c, R * V)
    contrib = kb.transpose(-1, -2) @ vw  # [B, G, N, K, R * V]
    S = q.new_zeros(B, G, K, R * V, dtype=ct)
    if initial_state is not None:
        S = S + initial_state.to(ct).view(B, G, R, K, V).transpose(2, 3).reshape(B, G, K, R * V)
    decay = b_last.exp()[:, :, :, None, :, None]  # [B, G, N, 1, R, 1]
    starts = []
    # unbind, not indexing: the backward of N selects would write N full-size zero tensors (O(N^2) traffic)
    for d_n, c_n in zip(decay.unbind(2), contrib.unbind(2)):
        starts.append(S)
        S = (S.view(B, G, K, R, V) * d_n).view(B, G, K, R * V) + c_n
    S0 = torch.stack(starts, dim=2)  # [B, G, N, K, R * V]
    o = o + (qb @ S0).view(B, G, N, c, R, V) * (b.exp() * scale)[..., None]
    o = o.permute(0, 2, 3, 1, 4, 5).reshape(B, N * c, H, V)[:, :T]
    final = S.view(B, G, K, R, V).transpose(2, 3).reshape(B, H, K, V) if output_final_state else None
    return o.to(v.dtype), final


def ssd_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token. q, k: [B, G, K]; v: [B, H, V]; g: [B, H]; state: [B, H, K, V] or None (zeros).
    Returns o: [B, H, V] (v's dtype) and the new state [B, H, K, V] (float32, float64 for float64 inputs)."""
    B, G, K = q.shape
    H, V = v.shape[1], v.shape[2]
    scale = K**-0.5 if scale is None else scale
    ct = compute_dtype(q)
    R = H // G
    S = q.new_zeros(B, H, K, V, dtype=ct) if state is None else state.to(ct)
    S = S.view(B, G, R, K, V)
    kv = k.to(ct)[:, :, None, :, None] * v.to(ct).view(B, G, R, 1, V)
    new = g.to(ct).exp().view(B, G, R, 1, 1) * S + kv
    o = torch.einsum("bgk,bgrkv->bgrv", q.to(ct) * scale, new).reshape(B, H, V)
    return o.to(v.dtype), new.reshape(B, H, K, V)
