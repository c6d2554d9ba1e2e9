"""The chunked SSD algorithm in PyTorch with a hand-written backward (the CPU path of :func:`ssd_torch`).

Per chunk of ``c`` tokens, batch and group (its ``R = H / G`` heads side by side), ``b`` the in-chunk cumulative
log-decay per head, ``S0`` the [K, V] state entering the chunk, ``P = scale q k^T`` (shared by the group's heads)::

    A     = P ∘ L,   L[i, j] = exp(b_i - b_j) for j <= i, else 0
    o     = A v + scale exp(b) ∘ (q S0)
    S_end = exp(b_last) S0 + k^T (w ∘ v),   w_j = exp(b_last - b_j)

Backward, with ``dS`` the gradient of the state leaving the chunk and ``M = dA ∘ A`` (the gradient of the
exponents ``b_i - b_j``)::

    dA  = dO v^T                 dv = A^T dO + w ∘ (k dS)
    dq  = scale (Σ_h dA ∘ L) k + scale exp(b) ∘ (dO S0^T)
    dk  = scale (Σ_h dA ∘ L)^T q + (w ∘ v) dS^T
    db  = rowsum(M) - colsum(M) + Σ_V (o_inter ∘ dO) - w ∘ dw,   dw = Σ_V (k dS) ∘ v
    db_last += Σ_j w_j dw_j + exp(b_last) <dS, S0>;   dg = the reverse cumulative sum of db in the chunk
    dS0 = exp(b_last) dS + scale q^T (exp(b) ∘ dO)          (the gradient passed to the previous chunk)

Both passes run chunk by chunk (forward in time, backward in reverse), every tensor of a chunk for all batches
and groups at once: on a CPU whose caches hold one chunk's working set (a few hundred KB) but whose memory is
slow, the batched matmuls over all chunks at once ran at a third of matmul speed (measured: bmm of 256 blocks of
64 x 128 x 64 at 34 GFLOP/s vs 125 for 8 blocks). The forward saves only the state entering each chunk; the
backward recomputes ``L``, ``P`` and ``A``.
"""

from __future__ import annotations

import torch

from hybriddsl.kernels.checks import needs_grad

Tensor = torch.Tensor


# Chunks per block: the matmuls of a block run batched over (batch, group, chunk), so a block must be big enough
# to amortize the per-op overhead and small enough to stay in cache (about 32 [c, c] tiles, measured).
BLOCK_TILES = 32


def _take(x: Tensor, t0: int, t1: int, nb: int, c: int, dtype: torch.dtype) -> Tensor:
    """x [B, T, G, *tail] -> tokens t0:t1 as a fresh [B G, nb, c, *tail] in ``dtype``, zero past t1."""
    B, _, G = x.shape[:3]
    tail = x.shape[3:]
    out = x.new_empty(B, G, nb * c, *tail, dtype=dtype)
    out[:, :, : t1 - t0].copy_(x[:, t0:t1].movedim(2, 1))
    if t1 - t0 < nb * c:
        out[:, :, t1 - t0 :].zero_()
    return out.view(B * G, nb, c, *tail)


def _put(out: Tensor, t0: int, t1: int, y: Tensor) -> None:
    """Write the first t1 - t0 tokens of y [B G, nb, c, *tail] into out [B, T, G, *tail] at t0:t1."""
    B, _, G = out.shape[:3]
    out[:, t0:t1].copy_(y.view(B, G, -1, *y.shape[3:])[:, :, : t1 - t0].movedim(1, 2))


def _decay_matrix(b: Tensor) -> Tensor:
    """b [Z, c, R] cumulative log-decays -> L [Z, R, c, c], exp(b_i - b_j) on and below the diagonal, else 0.
    Masked before the exp: above the diagonal the exponent is positive and could overflow."""
    c = b.shape[1]
    bt = b.transpose(1, 2)
    upper = torch.ones(c, c, dtype=torch.bool, device=b.device).triu_(1)
    return (bt.unsqueeze(-1) - bt.unsqueeze(-2)).masked_fill_(upper, float("-inf")).exp_()


def _heads_first(x: Tensor) -> Tensor:
    """[Z, c, R, V] -> [Z, R, c, V] (a view when R = 1, else a copy: matmul wants it dense)."""
    Z, c, R, V = x.shape
    return x.view(Z, 1, c, V) if R == 1 else x.transpose(1, 2).contiguous()


def _blocks(T: int, chunk: int, Z: int) -> tuple[int, int, int]:
    """(chunks N, chunks per block nb, blocks)."""
    N = max(1, -(-T // chunk))
    nb = max(1, min(N, BLOCK_TILES // max(Z, 1)))  # Z = 0: an empty batch
    return N, nb, -(-N // nb)


def block_forward(
    qn: Tensor, kn: Tensor, vn: Tensor, bn: Tensor, S: Tensor, S0: Tensor, scale: float
) -> tuple[Tensor, Tensor]:
    """One block of ``nb`` chunks for ``Z`` (batch, group) rows. qn, kn: [Z nb, c, K]; vn: [Z nb, c, R, V];
    bn: [Z nb, c, R] cumulative log-decays; S: [Z, K, R V] the state entering the block; S0: [Z, nb, K, R V]
    filled with the state entering each chunk. Returns o [Z nb, c, R, V] and the state leaving the block."""
    Zb, c, R, V = vn.shape
    Z, nb, K = S0.shape[:3]
    # The state entering each chunk of the block: a short loop over its chunks
    b_last = bn[:, -1:]  # [Zb, 1, R]
    vw = (vn * (b_last - bn).exp_().unsqueeze(-1)).view(Zb, c, R * V)
    contrib = torch.bmm(kn.transpose(1, 2), vw).view(Z, nb, K, R, V)
    decay = b_last.exp().view(Z, nb, 1, R, 1)
    S0[:, 0] = S
    S0v = S0.view(Z, nb, K, R, V)
    for j in range(nb - 1):
        torch.addcmul(contrib[:, j], S0v[:, j], decay[:, j], out=S0v[:, j + 1])
    S = torch.addcmul(contrib[:, -1], S0v[:, -1], decay[:, -1]).view(Z, K, R * V)

    A = _decay_matrix(bn).mul_(torch.bmm(qn, kn.transpose(1, 2)).mul_(scale).unsqueeze(1))  # [Zb, R, c, c]
    on = torch.bmm(qn, S0.view(Zb, K, R * V)).view(Zb, c, R, V).mul_((bn.exp() * scale).unsqueeze(-1))
    on += torch.matmul(A, _heads_first(vn)).transpose(1, 2)
    return on, S


def block_backward(
    qn: Tensor, kn: Tensor, vn: Tensor, bn: Tensor, don: Tensor, S0: Tensor, dS: Tensor, scale: float
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The gradients of :func:`block_forward`: don [Z nb, c, R, V] that of o, dS [Z, K, R V] that of the state
    leaving the block, S0 as filled by the forward. Returns dq, dk [Z nb, c, K], dv [Z nb, c, R, V], dg
    [Z nb, c, R] (of the log-decays before the cumulative sum) and the gradient of the state entering the
    block."""
    Zb, c, R, V = vn.shape
    Z, nb, K = S0.shape[:3]
    S0 = S0.view(Zb, K, R * V)

    # Intra-chunk: o = (P ∘ L) v
    L = _decay_matrix(bn)  # [Zb, R, c, c]
    P = torch.bmm(qn, kn.transpose(1, 2)).mul_(scale)  # [Zb, c, c]
    A = L * P.unsqueeze(1)
    doT, vT = _heads_first(don), _heads_first(vn)
    dA = torch.matmul(doT, vT.transpose(-1, -2))  # [Zb, R, c, c]
    dvn = torch.matmul(A.transpose(-1, -2), doT).transpose(1, 2)  # [Zb, c, R, V]
    M = A.mul_(dA)
    db = (M.sum(-1) - M.sum(-2)).transpose(1, 2).contiguous()  # [Zb, c, R]
    E = dA.mul_(L)
    dP = E.view(Zb, c, c) if R == 1 else E.sum(1)
    dqn = torch.bmm(dP, kn).mul_(scale)
    dkn = torch.bmm(dP.transpose(1, 2), qn).mul_(scale)

    # The state entering each chunk: o += scale exp(b) ∘ (q S0)
    dos = (don * (bn.exp() * scale).unsqueeze(-1)).view(Zb, c, R * V)
    dqn.baddbmm_(dos, S0.transpose(1, 2))
    db += (torch.bmm(qn, S0).view(Zb, c, R, V) * dos.view(Zb, c, R, V)).sum(-1)
    d_s0 = torch.bmm(qn.transpose(1, 2), dos).view(Z, nb, K, R, V)

    # The gradient of the state leaving each chunk, passed backwards through the block
    b_last = bn[:, -1:]  # [Zb, 1, R]
    decay = b_last.exp()
    dec5 = decay.view(Z, nb, 1, R, 1)
    dSb = S0.new_empty(Z, nb, K, R, V)
    dSb[:, -1] = dS.view(Z, K, R, V)
    for j in range(nb - 1, 0, -1):
        torch.addcmul(d_s0[:, j], dSb[:, j], dec5[:, j], out=dSb[:, j - 1])
    dS = torch.addcmul(d_s0[:, 0], dSb[:, 0], dec5[:, 0]).view(Z, K, R * V)
    dSz = dSb.view(Zb, K, R * V)

    # Each chunk's contribution S_end = exp(b_last) S0 + k^T (w ∘ v)
    w = (b_last - bn).exp_()  # [Zb, c, R]
    dvw = torch.bmm(kn, dSz).view(Zb, c, R, V)
    dw = (dvw * vn).sum(-1).mul_(w)  # the gradient of the exponent b_last - b_j
    dkn.baddbmm_((vn * w.unsqueeze(-1)).view(Zb, c, R * V), dSz.transpose(1, 2))
    dvn = dvw.mul_(w.unsqueeze(-1)).add_(dvn)
    db -= dw
    db[:, -1] += dw.sum(1) + (dSz * S0).view(Zb, K, R, V).sum((1, 3)) * decay[:, 0]
    # b = cumsum(g) in the chunk: dg is the reverse cumulative sum of db
    dgn = db.sum(1, keepdim=True) - db.cumsum(1) + db
    return dqn, dkn, dvn, dgn, dS


def ssd_chunked_forward(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, s_init: Tensor | None, scale: float, chunk: int, keep: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The forward. q, k: [B, T, G, K]; v: [B, T, G, R, V]; g: [B, T, G, R]; s_init [B G, K, R V] or None.

    Returns o [B, T, G, R, V] (compute dtype), the final state [B G, K, R V] and, if ``keep``, the states
    entering each chunk [blocks, B G, nb, K, R V]."""
    B, T, G, K = q.shape
    R, V = v.shape[-2:]
    Z, ct, c = B * G, _compute(q), chunk
    N, nb, n_blocks = _blocks(T, c, Z)
    Zb = Z * nb
    o = q.new_empty(B, T, G, R, V, dtype=ct)
    S = s_init.clone() if s_init is not None else q.new_zeros(Z, K, R * V, dtype=ct)
    starts = q.new_empty(n_blocks, Z, nb, K, R * V, dtype=ct) if keep else None
    for i in range(n_blocks):
        t0, t1 = i * nb * c, min(T, (i + 1) * nb * c)
        qn, kn = _take(q, t0, t1, nb, c, ct).view(Zb, c, K), _take(k, t0, t1, nb, c, ct).view(Zb, c, K)
        vn = _take(v, t0, t1, nb, c, ct).view(Zb, c, R, V)
        bn = _take(g, t0, t1, nb, c, ct).view(Zb, c, R).cumsum_(1)
        S0 = starts[i] if keep else q.new_empty(Z, nb, K, R * V, dtype=ct)
        on, S = block_forward(qn, kn, vn, bn, S, S0, scale)
        _put(o, t0, t1, on.view(Z, nb, c, R, V))
    return o, S, starts


def ssd_chunked_backward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    starts: Tensor,
    do: Tensor,
    d_final: Tensor | None,
    scale: float,
    chunk: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of :func:`ssd_chunked_forward` (arguments as there; ``starts`` from it; do [B, T, G, R, V];
    d_final [B G, K, R V] or None). Returns dq, dk [B, T, G, K], dv [B, T, G, R, V], dg [B, T, G, R] and
    d s_init [B G, K, R V], in the compute dtype."""
    B, T, G, K = q.shape
    R, V = v.shape[-2:]
    Z, ct, c = B * G, starts.dtype, chunk
    N, nb, n_blocks = _blocks(T, c, Z)
    Zb = Z * nb
    dq, dk = q.new_empty(B, T, G, K, dtype=ct), q.new_empty(B, T, G, K, dtype=ct)
    dv, dg = q.new_empty(B, T, G, R, V, dtype=ct), q.new_empty(B, T, G, R, dtype=ct)
    dS = d_final.clone() if d_final is not None else q.new_zeros(Z, K, R * V, dtype=ct)
    for i in range(n_blocks - 1, -1, -1):
        t0, t1 = i * nb * c, min(T, (i + 1) * nb * c)
        qn, kn = _take(q, t0, t1, nb, c, ct).view(Zb, c, K), _take(k, t0, t1, nb, c, ct).view(Zb, c, K)
        vn = _take(v, t0, t1, nb, c, ct).view(Zb, c, R, V)
        don = _take(do, t0, t1, nb, c, ct).view(Zb, c, R, V)
        bn = _take(g, t0, t1, nb, c, ct).view(Zb, c, R).cumsum_(1)
        dqn, dkn, dvn, dgn, dS = block_backward(qn, kn, vn, bn, don, starts[i], dS, scale)
        _put(dq, t0, t1, dqn.view(Z, nb, c, K))
        _put(dk, t0, t1, dkn.view(Z, nb, c, K))
        _put(dv, t0, t1, dvn.view(Z, nb, c, R, V))
        _put(dg, t0, t1, dgn.view(Z, nb, c, R))
    return dq, dk, dv, dg, dS


def _compute(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _state_in(s: Tensor, G: int, dtype: torch.dtype) -> Tensor:
    """[B, H, K, V] -> [B G, K, R V] (a group's heads side by side in the columns)."""
    B, H, K, V = s.shape
    return s.to(dtype).view(B, G, H // G, K, V).transpose(2, 3).reshape(B * G, K, (H // G) * V)


def _state_out(s: Tensor, B: int, G: int, V: int) -> Tensor:
    """[B G, K, R V] -> [B, H, K, V]."""
    K, RV = s.shape[1:]
    return s.view(B, G, K, RV // V, V).transpose(2, 3).reshape(B, G * (RV // V), K, V)


def ssd_chunked(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, s_init: Tensor | None, scale: float, chunk: int
) -> tuple[Tensor, Tensor]:
    """Chunked SSD, eager. q, k: [B, T, G, K]; v: [B, T, H, V]; g: [B, T, H]; s_init: [B, H, K, V] or None.

    Returns o [B, T, H, V] (v's dtype) and the final state [B, H, K, V] (float32, float64 for float64 inputs).
    Through :class:`SSDChunked` when a gradient is wanted, else the forward alone (no states kept)."""
    if needs_grad(q, k, v, g, s_init):
        return SSDChunked.apply(q, k, v, g, s_init, scale, chunk)
    B, T, G, K = q.shape
    H, V = v.shape[2:]
    ct = _compute(q)
    s = None if s_init is None else _state_in(s_init, G, ct)
    o, final, _ = ssd_chunked_forward(q, k, v.view(B, T, G, H // G, V), g.view(B, T, G, H // G), s, scale, chunk, False)
    return o.view(B, T, H, V).to(v.dtype), _state_out(final, B, G, V)


class SSDChunked(torch.autograd.Function):
    """:func:`ssd_torch`'s eager path: the forward and backward above (first-order only).

    forward(q [B, T, G, K], k, v [B, T, H, V], g [B, T, H], s_init [B, H, K, V] or None, scale, chunk) ->
    o [B, T, H, V] (v's dtype), final state [B, H, K, V] (float32, float64 for float64 inputs)."""

    @staticmethod
    def forward(ctx, q, k, v, g, s_init, scale: float, chunk: int):
        ctx.set_materialize_grads(False)
        B, T, G, K = q.shape
        H, V = v.shape[2:]
        ct = _compute(q)
        v5, g4 = v.view(B, T, G, H // G, V), g.view(B, T, G, H // G)
        s = None if s_init is None else _state_in(s_init, G, ct)
        o, final, starts = ssd_chunked_forward(q, k, v5, g4, s, scale, chunk, keep=True)
        ctx.save_for_backward(q, k, v, g, starts)
        ctx.meta = (scale, chunk, None if s_init is None else s_init.dtype)
        return o.view(B, T, H, V).to(v.dtype), _state_out(final, B, G, V)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do, d_final):
        q, k, v, g, starts = ctx.saved_tensors
        scale, chunk, s_dtype = ctx.meta
        B, T, G, K = q.shape
        H, V = v.shape[2:]
        ct = starts.dtype
        do = v.new_zeros(v.shape, dtype=ct) if do is None else do
        dfin = None if d_final is None else _state_in(d_final, G, ct)
        v5, g4 = v.view(B, T, G, H // G, V), g.view(B, T, G, H // G)
        dq, dk, dv, dg, ds = ssd_chunked_backward(q, k, v5, g4, starts, do.view(B, T, G, H // G, V), dfin, scale, chunk)
        ds = None if s_dtype is None else _state_out(ds, B, G, V).to(s_dtype)
        return (
            dq.to(q.dtype),
            dk.to(k.dtype),
            dv.view(B, T, H, V).to(v.dtype),
            dg.view(B, T, H).to(g.dtype),
            ds,
            None,
            None,
        )
