"""Triton forward and backward of chunked gated linear attention, as one ``torch.library`` op.

Math and notation as in ``reference.py`` (Yang et al. 2024, GLA; RWKV-6 bonus ``u``). Time is cut
into chunks of ``BT`` tokens; ``gc`` is the chunk-local cumulative log-decay (float32, computed by
PyTorch) and ``qb`` the decay applied to queries: ``gc`` itself, or ``gc`` of the previous token
with ``u`` (RWKV-6 reads the state before adding the current token).

Forward (three kernels):
  1. ``_intra_fwd``: the intra-chunk attention ``A`` [BT, BT] per chunk, in sub-chunks of
     ``BC = 16``. Off-diagonal sub-blocks (J < I) use a reference decay ``r`` = ``gc`` of the row just
     before sub-block I: ``(q_I * exp(qb_I - r)) (k_J * exp(r - gc_J))^T``, both factors <= 1. The
     diagonal sub-block forms each pair's decay in log space (a loop over its 16 columns), so no
     exponential can overflow whatever the decay. The bonus ``u`` goes on A's diagonal.
  2. ``_fwd_h``: the state at the start of every chunk (sequential over chunks), and the final state.
  3. ``_fwd_o``: ``o = scale * (q * exp(qb)) h_start + A v``.
Backward (four kernels, plus a reverse cumulative sum in PyTorch):
  ``_bwd_dh`` (state gradients, reverse over chunks), ``_bwd_inter`` (dq, dk through the states and
  dA = do v^T), ``_bwd_dv`` and ``_bwd_intra`` (dq, dk through A with the same sub-chunk scheme, the
  bonus gradients and the decay terms). The decay gradient uses the identity (GLA paper, fla):
  with B the global cumulative log-decay, o depends on the decays only through q * exp(B_t)
  (B_{t-1} with u), k * exp(-B_s) and exp(B_T) in the final state, so
  ``dB_t = q_t dq_t - k_t dk_t`` (q term shifted one step with u; bonus parts excluded) plus
  ``sum_v S_T dS_T`` at t = T-1, and ``dg_t = sum_{s >= t} dB_s``.

CAUTION (DESIGN.md section 8): Triton 3.4 - 3.7.0 on Hopper miscompiles a gated backward pattern
in fla's ``chunk_simple_gla`` backward. This backward is kept deliberately plain, but it has only
been run in the CPU interpreter when written: it MUST be validated against the reference on the GPU
(``tests/kernels/test_gla.py`` runs on CUDA as is) before its results are trusted there.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hybriddsl.kernels.checks import contiguous
from hybriddsl.kernels.device import launch_tiles
from hybriddsl.kernels.dispatch import interpreting
from hybriddsl.kernels.tl_common import cumsum_chunks
from hybriddsl.kernels.tl_common import dot as _dot
from hybriddsl.kernels.tl_common import dot_hilo as _dot_hilo

_BC = 16  # sub-chunk length of the intra-chunk kernels (the smallest tl.dot tile)


@triton.jit
def _load_qb(gc, rows, cols, t_lo, T, stride_t, G_K, K, USE_U: tl.constexpr):
    """Query-side decay for a [rows, cols] tile: gc itself, or gc of the previous row with u
    (0 at the chunk's first row ``t_lo``)."""
    if USE_U:
        r = rows - 1
        m = (r >= t_lo) & (r < T)
    else:
        r = rows
        m = r < T
    return tl.load(gc + r[:, None] * stride_t + cols[None, :] * G_K, mask=m[:, None] & (cols < K)[None, :], other=0.0)


@triton.jit
def _load_qb_row(gc, row, cols, t_lo, T, stride_t, G_K, K, USE_U: tl.constexpr):
    """One row of :func:`_load_qb`."""
    if USE_U:
        r = cols * 0 + row - 1  # as a vector: the interpreter rejects scalar & vector masks
        m = (r >= t_lo) & (r < T)
    else:
        r = cols * 0 + row
        m = r < T
    return tl.load(gc + r * stride_t + cols * G_K, mask=(cols < K) & m, other=0.0)


@triton.jit
def _intra_fwd(
    q,
    k,
    gc,
    u,
    A,
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    G_H: tl.constexpr,
    G_K: tl.constexpr,
    BT: tl.constexpr,
    BC: tl.constexpr,
    BK: tl.constexpr,
    USE_U: tl.constexpr,
    PREC: tl.constexpr,
    F32: tl.constexpr,
):
    i_ci, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    NC: tl.constexpr = BT // BC
    i_t, i_i = i_ci // NC, i_ci % NC
    t_lo = i_t * BT
    t0 = t_lo + i_i * BC
    rows = t0 + tl.arange(0, BC)
    m_r = rows < T
    cb = tl.arange(0, BC)
    q += (i_b * T * H + i_h) * K
    k += (i_b * T * H + i_h) * K
    gc += (i_b * T * H + i_h) * G_H
    A += i_bh * T * BT
    s_qk = H * K
    s_g = H * G_H
    # Off-diagonal sub-blocks J < I, reference decay r = gc at row t0 - 1 (inside this chunk).
    for i_j in range(0, i_i):
        acc = tl.zeros([BC, BC], dtype=tl.float32)
        rows_j = t_lo + i_j * BC + cb
        for i_k in range(0, tl.cdiv(K, BK)):
            ck = i_k * BK + tl.arange(0, BK)
            mk = ck < K
            b_q = tl.load(q + rows[:, None] * s_qk + ck[None, :], mask=m_r[:, None] & mk[None, :], other=0.0)
            b_qb = _load_qb(gc, rows, ck, t_lo, T, s_g, G_K, K, USE_U)
            b_r = tl.load(gc + (t0 - 1) * s_g + ck * G_K, mask=mk & ((ck * 0 + t0 - 1) < T), other=0.0)
            m_j = (rows_j < T)[:, None] & mk[None, :]
            b_k = tl.load(k + rows_j[:, None] * s_qk + ck[None, :], mask=m_j, other=0.0)
            b_gj = tl.load(gc + rows_j[:, None] * s_g + ck[None, :] * G_K, mask=m_j, other=0.0)
            qr = b_q * tl.where(m_r[:, None], tl.exp(b_qb - b_r[None, :]), 0.0)
            kr = b_k * tl.exp(b_r[None, :] - b_gj)
            acc += _dot(qr.to(b_q.dtype), tl.trans(kr.to(b_k.dtype)), PREC, F32)
        tl.store(A + rows[:, None] * BT + (i_j * BC + cb)[None, :], acc * scale, mask=m_r[:, None])
    # Diagonal sub-block: each pair's decay in log space (column by column).
    acc = tl.zeros([BC, BC], dtype=tl.float32)
    for i_k in range(0, tl.cdiv(K, BK)):
        ck = i_k * BK + tl.arange(0, BK)
        mk = ck < K
        b_q = tl.load(q + rows[:, None] * s_qk + ck[None, :], mask=m_r[:, None] & mk[None, :], other=0.0)
        b_q = b_q.to(tl.float32)
        b_qb = _load_qb(gc, rows, ck, t_lo, T, s_g, G_K, K, USE_U)
        for j in range(0, BC):
            tj = t0 + j
            b_kj = tl.load(k + tj * s_qk + ck, mask=mk & ((ck * 0 + tj) < T), other=0.0).to(tl.float32)
            b_gj = tl.load(gc + tj * s_g + ck * G_K, mask=mk & ((ck * 0 + tj) < T), other=0.0)
            if USE_U:
                m_ij = (cb > j) & m_r
            else:
                m_ij = (cb >= j) & m_r
            dec = tl.where(m_ij[:, None], tl.exp(b_qb - b_gj[None, :]), 0.0)
            col = tl.sum(b_q * b_kj[None, :] * dec, 1)
            acc += tl.where(cb[None, :] == j, col[:, None], 0.0)
        if USE_U:
            b_k = tl.load(k + rows[:, None] * s_qk + ck[None, :], mask=m_r[:, None] & mk[None, :], other=0.0)
            b_u = tl.load(u + i_h * K + ck, mask=mk, other=0.0).to(tl.float32)
            bonus = tl.sum(b_q * b_u[None, :] * b_k.to(tl.float32), 1)
            acc += tl.where(cb[:, None] == cb[None, :], bonus[:, None], 0.0)
    tl.store(A + rows[:, None] * BT + (i_i * BC + cb)[None, :], acc * scale, mask=m_r[:, None])


@triton.jit
def _fwd_h(
    k,
    v,
    gc,
    h,
    h0,
    ht,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    G_H: tl.constexpr,
    G_K: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_H0: tl.constexpr,
    PREC: tl.constexpr,
    F32: tl.constexpr,
):
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    ck = i_k * BK + tl.arange(0, BK)
    cv = i_v * BV + tl.arange(0, BV)
    mk, mv = ck < K, cv < V
    k += (i_b * T * H + i_h) * K
    v += (i_b * T * H + i_h) * V
    gc += (i_b * T * H + i_h) * G_H
    h += i_bh * NT * K * V
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_h += tl.load(h0 + i_bh * K * V + ck[:, None] * V + cv[None, :], mask=mk[:, None] & mv[None, :], other=0.0)
    for i_t in range(0, NT):
        tl.store(
            h + i_t * K * V + ck[:, None] * V + cv[None, :],
            b_h.to(h.dtype.element_ty),
            mask=mk[:, None] & mv[None, :],
        )
        rows = i_t * BT + tl.arange(0, BT)
        m_r = rows < T
        last = tl.minimum(i_t * BT + BT, T) - 1
        b_k = tl.load(k + rows[:, None] * H * K + ck[None, :], mask=m_r[:, None] & mk[None, :], other=0.0)
        b_v = tl.load(v + rows[:, None] * H * V + cv[None, :], mask=m_r[:, None] & mv[None, :], other=0.0)
        b_g = tl.load(gc + rows[:, None] * H * G_H + ck[None, :] * G_K, mask=m_r[:, None] & mk[None, :], other=0.0)
        b_gl = tl.load(gc + last * H * G_H + ck * G_K, mask=mk, other=0.0)
        k_end = b_k * tl.where(m_r[:, None], tl.exp(b_gl[None, :] - b_g), 0.0)
        b_h = b_h * tl.exp(b_gl)[:, None] + _dot(tl.trans(k_end.to(b_v.dtype)), b_v, PREC, F32)
    tl.store(ht + i_bh * K * V + ck[:, None] * V + cv[None, :], b_h, mask=mk[:, None] & mv[None, :])


@triton.jit
def _fwd_o(
    q,
    v,
    gc,
    h,
    A,
    o,
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    G_H: tl.constexpr,
    G_K: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_U: tl.constexpr,
    PREC: tl.constexpr,
    F32: tl.constexpr,
):
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    t_lo = i_t * BT
    rows = t_lo + tl.arange(0, BT)
    m_r = rows < T
    cv = i_v * BV + tl.arange(0, BV)
    mv = cv < V
    q += (i_b * T * H + i_h) * K
    v += (i_b * T * H + i_h) * V
    o += (i_b * T * H + i_h) * V
    gc += (i_b * T * H + i_h) * G_H
    h += (i_bh * NT + i_t) * K * V
    acc = tl.zeros([BT, BV], dtype=tl.float32)
    for i_k in range(0, tl.cdiv(K, BK)):
        ck = i_k * BK + tl.arange(0, BK)
        mk = ck < K
        b_q = tl.load(q + rows[:, None] * H * K + ck[None, :], mask=m_r[:, None] & mk[None, :], other=0.0)
        b_qb = _load_qb(gc, rows, ck, t_lo, T, H * G_H, G_K, K, USE_U)
        qe = b_q * tl.where(m_r[:, None], tl.exp(b_qb), 0.0) * scale
        b_h = tl.load(h + ck[:, None] * V + cv[None, :], mask=mk[:, None] & mv[None, :], other=0.0)
        acc += _dot(qe.to(b_h.dtype), b_h, PREC, F32)
    cols = tl.arange(0, BT)
    b_A = tl.load(A + i_bh * T * BT + rows[:, None] * BT + cols[None, :], mask=m_r[:, None], other=0.0)
    b_v = tl.load(v + rows[:, None] * H * V + cv[None, :], mask=m_r[:, None] & mv[None, :], other=0.0)
    acc += _dot_hilo(b_A, b_v, PREC, F32)
    tl.store(o + rows[:, None] * H * V + cv[None, :], acc.to(o.dtype.element_ty), mask=m_r[:, None] & mv[None, :])


@triton.jit
def _bwd_dh(
    q,
    do,
    gc,
    dh,
    dht,
    dh0,
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    G_H: tl.constexpr,
    G_K: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_DHT: tl.constexpr,
    USE_H0: tl.constexpr,
    USE_U: tl.constexpr,
    PREC: tl.constexpr,
    F32: tl.constexpr,
):
    # dh[n] = gradient of the state at the END of chunk n; the loop runs backwards over chunks.
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    ck = i_k * BK + tl.arange(0, BK)
    cv = i_v * BV + tl.arange(0, BV)
    mk, mv = ck < K, cv < V
    q += (i_b * T * H + i_h) * K
    do += (i_b * T * H + i_h) * V
    gc += (i_b * T * H + i_h) * G_H
    dh += i_bh * NT * K * V
    b_dh = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_DHT:
        b_dh += tl.load(dht + i_bh * K * V + ck[:, None] * V + cv[None, :], mask=mk[:, None] & mv[None, :], other=0.0)
    for i_r in range(0, NT):
        i_t = NT - 1 - i_r
        tl.store(
            dh + i_t * K * V + ck[:, None] * V + cv[None, :],
            b_dh.to(dh.dtype.element_ty),
            mask=mk[:, None] & mv[None, :],
        )
        t_lo = i_t * BT
        rows = t_lo + tl.arange(0, BT)
        m_r = rows < T
        last = tl.minimum(t_lo + BT, T) - 1
        b_q = tl.load(q + rows[:, None] * H * K + ck[None, :], mask=m_r[:, None] & mk[None, :], other=0.0)
        b_qb = _load_qb(gc, rows, ck, t_lo, T, H * G_H, G_K, K, USE_U)
        qe = b_q * tl.where(m_r[:, None], tl.exp(b_qb), 0.0) * scale
        b_do = tl.load(do + rows[:, None] * H * V + cv[None, :], mask=m_r[:, None] & mv[None, :], other=0.0)
        b_gl = tl.load(gc + last * H * G_H + ck * G_K, mask=mk, other=0.0)
        b_dh = b_dh * tl.exp(b_gl)[:, None] + _dot(tl.trans(qe.to(b_do.dtype)), b_do, PREC, F32)
    if USE_H0:
        tl.store(dh0 + i_bh * K * V + ck[:, None] * V + cv[None, :], b_dh, mask=mk[:, None] & mv[None, :])


@triton.jit
def _bwd_inter(
    q,
    k,
    v,
    gc,
    h,
    dh,
    do,
    dq,
    dk,
    dA,
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    G_H: tl.constexpr,
    G_K: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_U: tl.constexpr,
    PREC: tl.constexpr,
    F32: tl.constexpr,
):
    # dq, dk through the chunk states (float32 scratch) and dA = do v^T (stored by the first K block).
    i_k, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    t_lo = i_t * BT
    rows = t_lo + tl.arange(0, BT)
    m_r = rows < T
    last = tl.minimum(t_lo + BT, T) - 1
    ck = i_k * BK + tl.arange(0, BK)
    mk = ck < K
    base = i_b * T * H + i_h
    h += (i_bh * NT + i_t) * K * V
    dh += (i_bh * NT + i_t) * K * V
    b_dq = tl.zeros([BT, BK], dtype=tl.float32)
    b_dk = tl.zeros([BT, BK], dtype=tl.float32)
    b_dA = tl.zeros([BT, BT], dtype=tl.float32)
    for i_v in range(0, tl.cdiv(V, BV)):
        cv = i_v * BV + tl.arange(0, BV)
        mv = cv < V
        b_do = tl.load(do + base * V + rows[:, None] * H * V + cv[None, :], mask=m_r[:, None] & mv[None, :], other=0.0)
        b_v = tl.load(v + base * V + rows[:, None] * H * V + cv[None, :], mask=m_r[:, None] & mv[None, :], other=0.0)
        b_h = tl.load(h + ck[:, None] * V + cv[None, :], mask=mk[:, None] & mv[None, :], other=0.0)
        b_dh = tl.load(dh + ck[:, None] * V + cv[None, :], mask=mk[:, None] & mv[None, :], other=0.0)
        b_dq += _dot(b_do, tl.trans(b_h.to(b_do.dtype)), PREC, F32)
        b_dk += _dot(b_v, tl.trans(b_dh.to(b_v.dtype)), PREC, F32)
        b_dA += _dot(b_do, tl.trans(b_v), PREC, F32)
    b_qb = _load_qb(gc + base * G_H, rows, ck, t_lo, T, H * G_H, G_K, K, USE_U)
    b_g = tl.load(
        gc + base * G_H + rows[:, None] * H * G_H + ck[None, :] * G_K,
        mask=m_r[:, None] & mk[None, :],
        other=0.0,
    )
    b_gl = tl.load(gc + base * G_H + last * H * G_H + ck * G_K, mask=mk, other=0.0)
    b_dq = b_dq * tl.where(m_r[:, None], tl.exp(b_qb), 0.0) * scale
    b_dk = b_dk * tl.where(m_r[:, None], tl.exp(b_gl[None, :] - b_g), 0.0)
    m_o = m_r[:, None] & mk[None, :]
    tl.store(dq + base * K + rows[:, None] * H * K + ck[None, :], b_dq, mask=m_o)
    tl.store(dk + base * K + rows[:, None] * H * K + ck[None, :], b_dk, mask=m_o)
    cols = tl.arange(0, BT)
    tl.store(
        dA + i_bh * T * BT + rows[:, None] * BT + cols[None, :],
        b_dA,
        mask=m_r[:, None] & ((cols * 0 + i_k) == 0)[None, :],
    )


@triton.jit
def _bwd_dv(
    k,
    gc,
    A,
    dh,
    do,
    dv,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    G_H: tl.constexpr,
    G_K: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    PREC: tl.constexpr,
    F32: tl.constexpr,
):
    # dv = A^T do + (k * exp(gc_last - gc)) dh_end
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    t_lo = i_t * BT
    rows = t_lo + tl.arange(0, BT)
    m_r = rows < T
    last = tl.minimum(t_lo + BT, T) - 1
    cv = i_v * BV + tl.arange(0, BV)
    mv = cv < V
    base = i_b * T * H + i_h
    dh += (i_bh * NT + i_t) * K * V
    cols = tl.arange(0, BT)
    b_A = tl.load(A + i_bh * T * BT + rows[:, None] * BT + cols[None, :], mask=m_r[:, None], other=0.0)
    b_do = tl.load(do + base * V + rows[:, None] * H * V + cv[None, :], mask=m_r[:, None] & mv[None, :], other=0.0)
    acc = _dot(tl.trans(b_A.to(b_do.dtype)), b_do, PREC, F32)
    for i_k in range(0, tl.cdiv(K, BK)):
        ck = i_k * BK + tl.arange(0, BK)
        mk = ck < K
        b_k = tl.load(k + base * K + rows[:, None] * H * K + ck[None, :], mask=m_r[:, None] & mk[None, :], other=0.0)
        b_g = tl.load(
            gc + base * G_H + rows[:, None] * H * G_H + ck[None, :] * G_K,
            mask=m_r[:, None] & mk[None, :],
            other=0.0,
        )
        b_gl = tl.load(gc + base * G_H + last * H * G_H + ck * G_K, mask=mk, other=0.0)
        k_end = b_k * tl.where(m_r[:, None], tl.exp(b_gl[None, :] - b_g), 0.0)
        b_dh = tl.load(dh + ck[:, None] * V + cv[None, :], mask=mk[:, None] & mv[None, :], other=0.0)
        acc += _dot(k_end.to(b_dh.dtype), b_dh, PREC, F32)
    tl.store(
        dv + base * V + rows[:, None] * H * V + cv[None, :],
        acc.to(dv.dtype.element_ty),
        mask=m_r[:, None] & mv[None, :],
    )


@triton.jit
def _bwd_intra(
    q,
    k,
    gc,
    u,
    dA,
    dq_in,
    dk_in,
    dq,
    dk,
    dgq,
    dgk,
    du,
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    G_H: tl.constexpr,
    G_K: tl.constexpr,
    BT: tl.constexpr,
    BC: tl.constexpr,
    BK: tl.constexpr,
    USE_U: tl.constexpr,
    PREC: tl.constexpr,
    F32: tl.constexpr,
):
    # dq, dk through A for sub-block I (rows t0 .. t0+BC) and one K block; adds the inter-chunk parts
    # (dq_in, dk_in), writes the decay terms q*dq and k*dk (bonus excluded) and the bonus gradient.
    i_k, i_ci, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    NC: tl.constexpr = BT // BC
    i_t, i_i = i_ci // NC, i_ci % NC
    t_lo = i_t * BT
    t0 = t_lo + i_i * BC
    cb = tl.arange(0, BC)
    rows = t0 + cb
    m_r = rows < T
    ck = i_k * BK + tl.arange(0, BK)
    mk = ck < K
    m_o = m_r[:, None] & mk[None, :]
    base = i_b * T * H + i_h
    q += base * K
    k += base * K
    gc += base * G_H
    dA += i_bh * T * BT
    s_qk = H * K
    s_g = H * G_H
    b_q = tl.load(q + rows[:, None] * s_qk + ck[None, :], mask=m_o, other=0.0)
    b_k = tl.load(k + rows[:, None] * s_qk + ck[None, :], mask=m_o, other=0.0)
    b_g = tl.load(gc + rows[:, None] * s_g + ck[None, :] * G_K, mask=m_o, other=0.0)
    b_qb = _load_qb(gc, rows, ck, t_lo, T, s_g, G_K, K, USE_U)
    # dq from earlier sub-blocks J < I, reference r = gc at row t0 - 1.
    b_r = tl.load(gc + (t0 - 1) * s_g + ck * G_K, mask=mk & ((ck * 0 + i_i) > 0) & ((ck * 0 + t0 - 1) < T), other=0.0)
    b_dq = tl.zeros([BC, BK], dtype=tl.float32)
    for i_j in range(0, i_i):
        rows_j = t_lo + i_j * BC + cb
        b_dA = tl.load(dA + rows[:, None] * BT + (i_j * BC + cb)[None, :], mask=m_r[:, None], other=0.0)
        m_j = (rows_j < T)[:, None] & mk[None, :]
        b_kj = tl.load(k + rows_j[:, None] * s_qk + ck[None, :], mask=m_j, other=0.0)
        b_gj = tl.load(gc + rows_j[:, None] * s_g + ck[None, :] * G_K, mask=m_j, other=0.0)
        kr = b_kj * tl.exp(b_r[None, :] - b_gj)
        b_dq += _dot(b_dA.to(b_q.dtype), kr.to(b_q.dtype), PREC, F32)
    b_dq = b_dq * tl.where(m_r[:, None], tl.exp(b_qb - b_r[None, :]), 0.0)
    # dk from later sub-blocks J > I, reference r2 = gc at the last row of I.
    r2 = tl.minimum(t0 + BC, T) - 1
    b_r2 = tl.load(gc + r2 * s_g + ck * G_K, mask=mk, other=0.0)
    b_dk = tl.zeros([BC, BK], dtype=tl.float32)
    for i_j in range(i_i + 1, NC):
        rows_j = t_lo + i_j * BC + cb
        m_j = rows_j < T
        b_dA = tl.load(dA + rows_j[:, None] * BT + (i_i * BC + cb)[None, :], mask=m_j[:, None], other=0.0)
        b_qj = tl.load(q + rows_j[:, None] * s_qk + ck[None, :], mask=m_j[:, None] & mk[None, :], other=0.0)
        b_qbj = _load_qb(gc, rows_j, ck, t_lo, T, s_g, G_K, K, USE_U)
        qr = b_qj * tl.where(m_j[:, None], tl.exp(b_qbj - b_r2[None, :]), 0.0)
        b_dk += _dot(tl.trans(b_dA.to(b_q.dtype)), qr.to(b_q.dtype), PREC, F32)
    b_dk = b_dk * tl.where(m_r[:, None], tl.exp(b_r2[None, :] - b_g), 0.0)
    # Diagonal sub-block, pair by pair in log space.
    b_qf = b_q.to(tl.float32)
    b_kf = b_k.to(tl.float32)
    for j in range(0, BC):
        tj = t0 + j
        # dq_i += dA_ij k_j exp(qb_i - gc_j) for j <= i (j < i with u)
        b_dAc = tl.load(dA + rows * BT + (i_i * BC + j), mask=m_r, other=0.0)
        b_kj = tl.load(k + tj * s_qk + ck, mask=mk & ((ck * 0 + tj) < T), other=0.0).to(tl.float32)
        b_gj = tl.load(gc + tj * s_g + ck * G_K, mask=mk & ((ck * 0 + tj) < T), other=0.0)
        if USE_U:
            m_ij = (cb > j) & m_r
        else:
            m_ij = (cb >= j) & m_r
        b_dq += tl.where(m_ij[:, None], b_dAc[:, None] * b_kj[None, :] * tl.exp(b_qb - b_gj[None, :]), 0.0)
        # dk_i += dA_ji q_j exp(qb_j - gc_i) for i <= j (i < j with u); here j is the query row
        b_dAr = tl.load(dA + tj * BT + i_i * BC + cb, mask=(cb * 0 + tj) < T, other=0.0)
        b_qj = tl.load(q + tj * s_qk + ck, mask=mk & ((ck * 0 + tj) < T), other=0.0).to(tl.float32)
        b_qbj = _load_qb_row(gc, tj, ck, t_lo, T, s_g, G_K, K, USE_U)
        if USE_U:
            m_ji = (cb < j) & ((cb * 0 + tj) < T)
        else:
            m_ji = (cb <= j) & ((cb * 0 + tj) < T)
        b_dk += tl.where(m_ji[:, None], b_dAr[:, None] * b_qj[None, :] * tl.exp(b_qbj[None, :] - b_g), 0.0)
    b_dq = b_dq * scale + tl.load(dq_in + base * K + rows[:, None] * s_qk + ck[None, :], mask=m_o, other=0.0)
    b_dk = b_dk * scale + tl.load(dk_in + base * K + rows[:, None] * s_qk + ck[None, :], mask=m_o, other=0.0)
    gq = b_qf * b_dq
    gk = b_kf * b_dk
    if USE_U:
        # Bonus on A's diagonal: A_ii += scale * sum_k q_ik u_k k_ik.
        b_dAd = tl.load(dA + rows * BT + (rows - t_lo), mask=m_r, other=0.0) * scale
        b_u = tl.load(u + i_h * K + ck, mask=mk, other=0.0).to(tl.float32)
        b_dq += b_dAd[:, None] * b_u[None, :] * b_kf
        b_dk += b_dAd[:, None] * b_u[None, :] * b_qf
        tl.store(du + (i_bh * tl.num_programs(1) + i_ci) * K + ck, tl.sum(b_dAd[:, None] * b_qf * b_kf, 0), mask=mk)
        tl.store(dgq + base * K + rows[:, None] * s_qk + ck[None, :], gq, mask=m_o)
        tl.store(dgk + base * K + rows[:, None] * s_qk + ck[None, :], gk, mask=m_o)
    else:
        tl.store(dgq + base * K + rows[:, None] * s_qk + ck[None, :], gq - gk, mask=m_o)
    tl.store(dq + base * K + rows[:, None] * s_qk + ck[None, :], b_dq.to(dq.dtype.element_ty), mask=m_o)
    tl.store(dk + base * K + rows[:, None] * s_qk + ck[None, :], b_dk.to(dk.dtype.element_ty), mask=m_o)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def _meta(q: torch.Tensor, v: torch.Tensor, g: torch.Tensor, BT: int) -> dict:
    B, T, H, K = q.shape
    V = v.shape[-1]
    scalar = g.dim() == 3
    return dict(
        B=B,
        T=T,
        H=H,
        K=K,
        V=V,
        NT=-(-T // BT),
        G_H=1 if scalar else K,
        G_K=0 if scalar else 1,  # scalar decay: stride 0 over K
        BK=max(16, min(64, triton.next_power_of_2(K))),
        BV=max(16, min(64, triton.next_power_of_2(V))),
        PREC="ieee" if q.dtype == torch.float32 else "tf32",
        F32=q.dtype == torch.bfloat16 and interpreting(),  # see _dot
    )


def _fit(name: str, m: dict, q: torch.Tensor, blocks: tuple[str, ...], flags: tuple, launch) -> None:
    """:func:`launch_tiles` from the BK/BV of ``_meta``, keyed by the shapes and flags the fit depends on."""
    key = (m["K"], m["V"], m["G_K"], str(q.dtype), m["PREC"], m["F32"], *flags)
    launch_tiles(f"gla.{name}", key, {"BK": m["BK"], "BV": m["BV"]}, blocks, launch)


def _fwd_h_launch(k, v, gc, h0, m, BT):
    h = k.new_empty(m["B"], m["H"], m["NT"], m["K"], m["V"])  # state at every chunk start
    ht = k.new_empty(m["B"], m["H"], m["K"], m["V"], dtype=torch.float32)
    _fit("_fwd_h", m, k, ("BV", "BK"), (BT, h0 is not None), lambda c: _fwd_h[
        (triton.cdiv(m["K"], c["BK"]), triton.cdiv(m["V"], c["BV"]), m["B"] * m["H"])](
        k, v, gc, h, h0 if h0 is not None else ht, ht, m["T"], m["H"], m["K"], m["V"], m["G_H"], m["G_K"], BT,
        USE_H0=h0 is not None, PREC=m["PREC"], F32=m["F32"], **c,
    ))  # fmt: skip
    return h, ht


def _forward(q, k, v, g, u, h0, scale, BT):
    m = _meta(q, v, g, BT)
    B, T, H, K, V, NT = m["B"], m["T"], m["H"], m["K"], m["V"], m["NT"]
    gc = cumsum_chunks(g, BT)
    A = q.new_zeros(B, H, T, BT, dtype=torch.float32)
    use_u = u is not None
    _fit("_intra_fwd", m, q, ("BK",), (BT, use_u), lambda c: _intra_fwd[(NT * (BT // _BC), B * H)](
        q, k, gc, u if use_u else q, A, scale, T, H, K, m["G_H"], m["G_K"], BT, _BC,
        BK=c["BK"], USE_U=use_u, PREC=m["PREC"], F32=m["F32"], **_stages(c),
    ))  # fmt: skip
    h, ht = _fwd_h_launch(k, v, gc, h0, m, BT)
    o = torch.empty_like(v)
    _fit("_fwd_o", m, q, ("BV", "BK"), (BT, use_u), lambda c: _fwd_o[(triton.cdiv(V, c["BV"]), NT, B * H)](
        q, v, gc, h, A, o, scale, T, H, K, V, m["G_H"], m["G_K"], BT,
        USE_U=use_u, PREC=m["PREC"], F32=m["F32"], **c,
    ))  # fmt: skip
    return o, ht, A


def _stages(c: dict) -> dict:
    """The options of ``c`` for a kernel without a BV block: BK and num_stages."""
    return {k: v for k, v in c.items() if k != "BV" and k != "BK"}


def _backward(q, k, v, g, u, h0, A, ht, do, dht, scale, BT):
    m = _meta(q, v, g, BT)
    B, T, H, K, V, NT = m["B"], m["T"], m["H"], m["K"], m["V"], m["NT"]
    use_u = u is not None
    gc = cumsum_chunks(g, BT)
    h, _ = _fwd_h_launch(k, v, gc, h0, m, BT)  # recomputed rather than stored (memory)
    dh = q.new_empty(B, H, NT, K, V)
    dh0 = q.new_empty(B, H, K, V, dtype=torch.float32)
    flags = (BT, dht is not None, h0 is not None, use_u)
    _fit("_bwd_dh", m, q, ("BV", "BK"), flags, lambda c: _bwd_dh[
        (triton.cdiv(K, c["BK"]), triton.cdiv(V, c["BV"]), B * H)](
        q, do, gc, dh, dht if dht is not None else dh0, dh0, scale, T, H, K, V, m["G_H"], m["G_K"], BT,
        USE_DHT=dht is not None, USE_H0=h0 is not None, USE_U=use_u, PREC=m["PREC"], F32=m["F32"], **c,
    ))  # fmt: skip
    dq_in = q.new_empty(B, T, H, K, dtype=torch.float32)
    dk_in = q.new_empty(B, T, H, K, dtype=torch.float32)
    dA = q.new_zeros(B, H, T, BT, dtype=torch.float32)
    _fit("_bwd_inter", m, q, ("BV", "BK"), (BT, use_u), lambda c: _bwd_inter[(triton.cdiv(K, c["BK"]), NT, B * H)](
        q, k, v, gc, h, dh, do, dq_in, dk_in, dA, scale, T, H, K, V, m["G_H"], m["G_K"], BT,
        USE_U=use_u, PREC=m["PREC"], F32=m["F32"], **c,
    ))  # fmt: skip
    dv = torch.empty_like(v)
    _fit("_bwd_dv", m, q, ("BV", "BK"), (BT,), lambda c: _bwd_dv[(triton.cdiv(V, c["BV"]), NT, B * H)](
        k, gc, A, dh, do, dv, T, H, K, V, m["G_H"], m["G_K"], BT, PREC=m["PREC"], F32=m["F32"], **c
    ))  # fmt: skip
    dq, dk = torch.empty_like(q), torch.empty_like(k)
    dgq = q.new_empty(B, T, H, K, dtype=torch.float32)
    dgk = q.new_empty(B, T, H, K, dtype=torch.float32) if use_u else dgq
    n_sub = NT * (BT // _BC)
    du_part = q.new_empty(B * H, n_sub, K, dtype=torch.float32) if use_u else dgq
    _fit("_bwd_intra", m, q, ("BK",), (BT, use_u), lambda c: _bwd_intra[(triton.cdiv(K, c["BK"]), n_sub, B * H)](
        q, k, gc, u if use_u else q, dA, dq_in, dk_in, dq, dk, dgq, dgk, du_part, scale, T, H, K,
        m["G_H"], m["G_K"], BT, _BC, BK=c["BK"], USE_U=use_u, PREC=m["PREC"], F32=m["F32"], **_stages(c),
    ))  # fmt: skip
    # Decay gradient: dB_t = q dq (at t+1 with u) - k dk, plus the final-state term, reverse-cumsummed.
    if use_u:
        dB = -dgk
        dB[:, :-1] += dgq[:, 1:]
        du = du_part.view(B, H, n_sub, K).sum((0, 2)).to(u.dtype)
    else:
        dB = dgq
        du = q.new_empty(0)
    if dht is not None:
        dB[:, -1] += (ht * dht.float()).sum(-1)
    dg = dB.flip(1).cumsum(1).flip(1)
    if g.dim() == 3:
        dg = dg.sum(-1)
    return dq, dk, dv, dg.to(g.dtype), du, (dh0.to(h0.dtype) if h0 is not None else q.new_empty(0))


# ---------------------------------------------------------------------------------------------
# torch.library op (one op forward, one op backward; torch.compile sees them as opaque)
# ---------------------------------------------------------------------------------------------


@torch.library.custom_op("hybriddsl::chunk_gla_fwd", mutates_args=())
def chunk_gla_fwd_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    u: torch.Tensor | None,
    initial_state: torch.Tensor | None,
    scale: float,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns o [B, T, H, V], final state [B, H, K, V] float32, A [B, H, T, BT] float32 (saved)."""
    q, k, v, g, u, initial_state = contiguous(q, k, v, g, u, initial_state)
    h0 = initial_state.float() if initial_state is not None else None
    return _forward(q, k, v, g, u, h0, scale, chunk_size)


@chunk_gla_fwd_op.register_fake
def _(q, k, v, g, u, initial_state, scale, chunk_size):
    B, T, H, K = q.shape
    return (
        v.new_empty(v.shape),
        q.new_empty(B, H, K, v.shape[-1], dtype=torch.float32),
        q.new_empty(B, H, T, chunk_size, dtype=torch.float32),
    )


@torch.library.custom_op("hybriddsl::chunk_gla_bwd", mutates_args=())
def chunk_gla_bwd_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    u: torch.Tensor | None,
    initial_state: torch.Tensor | None,
    A: torch.Tensor,
    final_state: torch.Tensor,
    do: torch.Tensor,
    dht: torch.Tensor | None,
    scale: float,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns dq, dk, dv, dg, du (empty without u), d initial_state (empty without it)."""
    q, k, v, g, u, initial_state, do, dht = contiguous(q, k, v, g, u, initial_state, do, dht)
    h0 = initial_state.float() if initial_state is not None else None
    return _backward(q, k, v, g, u, h0, A, final_state, do, dht, scale, chunk_size)


@chunk_gla_bwd_op.register_fake
def _(q, k, v, g, u, initial_state, A, final_state, do, dht, scale, chunk_size):
    return (
        q.new_empty(q.shape),
        k.new_empty(k.shape),
        v.new_empty(v.shape),
        g.new_empty(g.shape),
        u.new_empty(u.shape) if u is not None else q.new_empty(0),
        initial_state.new_empty(initial_state.shape) if initial_state is not None else q.new_empty(0),
    )


def _setup_context(ctx, inputs, output):
    q, k, v, g, u, initial_state, scale, chunk_size = inputs
    _, final_state, A = output
    ctx.save_for_backward(q, k, v, g, u, initial_state, A, final_state)
    ctx.scale, ctx.chunk_size = scale, chunk_size


def _backward_fn(ctx, do, dht, _dA):
    q, k, v, g, u, initial_state, A, final_state = ctx.saved_tensors
    dq, dk, dv, dg, du, dh0 = chunk_gla_bwd_op(
        q, k, v, g, u, initial_state, A, final_state, do, dht, ctx.scale, ctx.chunk_size
    )
    return (
        dq,
        dk,
        dv,
        dg,
        du if u is not None else None,
        dh0 if initial_state is not None else None,
        None,
        None,
    )


chunk_gla_fwd_op.register_autograd(_backward_fn, setup_context=_setup_context)


def gla_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    u: torch.Tensor | None,
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Triton chunked GLA (shapes as :func:`hybriddsl.kernels.gla.chunk_gla`; arguments already checked)."""
    o, final_state, _ = chunk_gla_fwd_op(q, k, v, g, u, initial_state, float(scale), int(chunk_size))
    return o, (final_state if output_final_state else None)


chunk_gla_triton = gla_triton  # the name before issue 13's naming scheme, kept for callers on other branches
