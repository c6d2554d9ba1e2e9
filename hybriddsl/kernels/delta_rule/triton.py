"""Triton forward and backward of the chunked (gated) delta rule.

Math: see :mod:`hybriddsl.kernels.delta_rule.reference`. Per chunk of ``BT`` steps (state ``S_0`` at
its start, ``G`` the in-chunk cumulative log decay, ``D_ij = exp(G_i - G_j)`` for i >= j):

    A = (I + L)^{-1},  L_ij = beta_i D_ij k_i.k_j (i > j)        (forward substitution, in registers)
    w = A (beta e^G K),  u = A (beta V),  U' = u - w S_0
    o = scale (e^G Q S_0 + (Q K^T ⊙ D) U'),   S_C = e^{G_C} S_0 + (e^{G_C - G} K)^T U'.

Backward (``dS`` the gradient of the chunk's end state, ``X = (I + L) U' = beta (V - e^G K S_0)``):

    dU' = scale (Q K^T ⊙ D)^T dO + (e^{G_C - G} K) dS            dX = A^T dU',  dV = beta dX
    dS_0 = e^{G_C} dS + scale (e^G Q)^T dO - w^T dU'              (the reverse state pass)
    dA = dU' X^T,  dL = -(A^T dA A^T) on the strict lower triangle,
    dbeta = rowsum(dX ⊙ X / beta) + rowsum(dL ⊙ D ⊙ K K^T),  and dq, dk, dG from the products above;
    dg is the reverse cumulative sum of dG inside the chunk.

Kernels (grid in brackets; ``NT`` chunks, ``NV`` blocks of the value dim):

- ``_prepare_fwd`` [NT, B*H]: G, A, w, u for every chunk in parallel.
- ``_state_fwd`` [NV, B*H]: the only sequential part, chunk after chunk: stores each chunk's start
  state, turns u into U' in place, and the final state.
- ``_output_fwd`` [NT, NV, B*H]: outputs, in parallel.
- backward: ``_dvlocal_bwd`` (the local part of dU'), ``_state_bwd`` (the reverse pass: chunk-end state
  gradients, dU', d initial_state) and ``_grads_bwd`` (dq, dk, dv, dbeta, dg per chunk). The backward
  recomputes A, w, U' and the chunk states with the forward kernels instead of saving them.

States, decays and the intermediates A, w, U' are float32; matmuls run on tensor cores (tf32 for
16-bit inputs, exact float32 for float32 inputs). Exponents are differences ``G_i - G_j <= 0`` (entries
above the diagonal are set to 0 before ``exp``), so long sequences cannot overflow.

One ``torch.library`` op, ``hybriddsl::delta_rule``, with its backward ``hybriddsl::delta_rule_bwd``
registered through ``register_autograd`` and fake implementations for both.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hybriddsl.kernels.checks import contiguous
from hybriddsl.kernels.device import capability, launch_fitting, tile_configs


@triton.jit
def _prepare_fwd(
    K,
    V,
    BETA,
    G,
    GC,
    AM,
    W,
    U,
    T,
    H: tl.constexpr,
    DK: tl.constexpr,
    DV: tl.constexpr,
    HAS_G: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    LOG_BT: tl.constexpr,
    PREC: tl.constexpr,
    PREC_A: tl.constexpr,
):
    i_n, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    rows = i_n * BT + tl.arange(0, BT)
    m_row = rows < T
    ok = tl.arange(0, BK)
    m_k = ok < DK
    tok = (i_b * T + rows).to(tl.int64) * H + i_h  # index of (b, t, h) in the [B, T, H] layout
    inner = i_bh.to(tl.int64) * T + rows  # index of (b, h, t) in the internal [B, H, T] layout
    k = tl.load(K + tok[:, None] * DK + ok[None, :], mask=m_row[:, None] & m_k[None, :], other=0.0)
    k = k.to(tl.float32)
    beta = tl.load(BETA + tok, mask=m_row, other=0.0).to(tl.float32)
    if HAS_G:
        gc = tl.cumsum(tl.load(G + tok, mask=m_row, other=0.0).to(tl.float32), 0)
    else:
        gc = tl.zeros([BT], dtype=tl.float32)
    tl.store(GC + inner, gc, mask=m_row)

    ri = tl.arange(0, BT)[:, None]
    ci = tl.arange(0, BT)[None, :]
    strict = ri > ci
    dec = tl.exp(tl.where(strict, gc[:, None] - gc[None, :], 0.0))
    kk = tl.dot(k, tl.trans(k), input_precision=PREC)
    lower = tl.where(strict, beta[:, None] * kk * dec, 0.0)
    # A = (I + L)^{-1} = sum_m (-L)^m = (I - L)(I + L^2)(I + L^4)...(I + L^(BT/2)): L is strictly lower,
    # so L^BT = 0 and 2 log2(BT) - 2 tile matmuls give the exact inverse (in parallel on tensor cores,
    # instead of BT - 1 dependent row updates of forward substitution). PREC_A keeps float32 accuracy.
    p = -lower
    a = tl.where(ri == ci, 1.0, 0.0) + p
    for _ in tl.static_range(LOG_BT - 1):
        p = tl.dot(p, p, input_precision=PREC_A)
        a += tl.dot(a, p, input_precision=PREC_A)
    tl.store(AM + inner[:, None] * BT + ci, a, mask=m_row[:, None])

    w = tl.dot(a, k * (beta * tl.exp(gc))[:, None], input_precision=PREC)
    tl.store(W + inner[:, None] * DK + ok[None, :], w, mask=m_row[:, None] & m_k[None, :])
    for v0 in range(0, DV, BV):
        ov = v0 + tl.arange(0, BV)
        mask_v = m_row[:, None] & (ov < DV)[None, :]
        vv = tl.load(V + tok[:, None] * DV + ov[None, :], mask=mask_v, other=0.0).to(tl.float32)
        u = tl.dot(a, vv * beta[:, None], input_precision=PREC)
        tl.store(U + inner[:, None] * DV + ov[None, :], u, mask=mask_v)


@triton.jit
def _state_fwd(
    K,
    GC,
    W,
    U,
    H0,
    HS,
    HT,
    T,
    NT,
    H: tl.constexpr,
    DK: tl.constexpr,
    DV: tl.constexpr,
    HAS_H0: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    PREC: tl.constexpr,
):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    ok = tl.arange(0, BK)
    ov = i_v * BV + tl.arange(0, BV)
    m_kv = (ok < DK)[:, None] & (ov < DV)[None, :]
    s_off = ok[:, None] * DV + ov[None, :]
    if HAS_H0:
        s = tl.load(H0 + i_bh.to(tl.int64) * DK * DV + s_off, mask=m_kv, other=0.0).to(tl.float32)
    else:
        s = tl.zeros([BK, BV], dtype=tl.float32)
    for i_n in range(NT):
        tl.store(HS + (i_bh.to(tl.int64) * NT + i_n) * DK * DV + s_off, s, mask=m_kv)
        rows = i_n * BT + tl.arange(0, BT)
        m_row = rows < T
        tok = (i_b * T + rows).to(tl.int64) * H + i_h
        inner = i_bh.to(tl.int64) * T + rows
        m_rk = m_row[:, None] & (ok < DK)[None, :]
        m_rv = m_row[:, None] & (ov < DV)[None, :]
        w = tl.load(W + inner[:, None] * DK + ok[None, :], mask=m_rk, other=0.0)
        u = tl.load(U + inner[:, None] * DV + ov[None, :], mask=m_rv, other=0.0)
        u_new = u - tl.dot(w, s, input_precision=PREC)
        tl.store(U + inner[:, None] * DV + ov[None, :], u_new, mask=m_rv)
        k = tl.load(K + tok[:, None] * DK + ok[None, :], mask=m_rk, other=0.0).to(tl.float32)
        gc = tl.load(GC + inner, mask=m_row, other=0.0)
        g_last = tl.load(GC + i_bh.to(tl.int64) * T + tl.minimum(T, i_n * BT + BT) - 1)
        k_dec = k * tl.exp(g_last - gc)[:, None]
        s = s * tl.exp(g_last) + tl.dot(tl.trans(k_dec), u_new, input_precision=PREC)
    tl.store(HT + i_bh.to(tl.int64) * DK * DV + s_off, s, mask=m_kv)


@triton.jit
def _output_fwd(
    Q,
    K,
    GC,
    U,
    HS,
    O,
    scale,
    T,
    NT,
    H: tl.constexpr,
    DK: tl.constexpr,
    DV: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    PREC: tl.constexpr,
):
    i_n, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    rows = i_n * BT + tl.arange(0, BT)
    m_row = rows < T
    ok = tl.arange(0, BK)
    ov = i_v * BV + tl.arange(0, BV)
    tok = (i_b * T + rows).to(tl.int64) * H + i_h
    inner = i_bh.to(tl.int64) * T + rows
    m_rk = m_row[:, None] & (ok < DK)[None, :]
    m_rv = m_row[:, None] & (ov < DV)[None, :]
    q = tl.load(Q + tok[:, None] * DK + ok[None, :], mask=m_rk, other=0.0).to(tl.float32)
    k = tl.load(K + tok[:, None] * DK + ok[None, :], mask=m_rk, other=0.0).to(tl.float32)
    gc = tl.load(GC + inner, mask=m_row, other=0.0)
    s = tl.load(
        HS + (i_bh.to(tl.int64) * NT + i_n) * DK * DV + ok[:, None] * DV + ov[None, :],
        mask=(ok < DK)[:, None] & (ov < DV)[None, :],
        other=0.0,
    )
    u_new = tl.load(U + inner[:, None] * DV + ov[None, :], mask=m_rv, other=0.0)
    causal = tl.arange(0, BT)[:, None] >= tl.arange(0, BT)[None, :]
    dec = tl.exp(tl.where(causal, gc[:, None] - gc[None, :], 0.0))
    qk = tl.where(causal, tl.dot(q, tl.trans(k), input_precision=PREC) * dec, 0.0)
    o = tl.exp(gc)[:, None] * tl.dot(q, s, input_precision=PREC) + tl.dot(qk, u_new, input_precision=PREC)
    tl.store(O + tok[:, None] * DV + ov[None, :], (o * scale).to(O.dtype.element_ty), mask=m_rv)


@triton.jit
def _dvlocal_bwd(
    Q,
    K,
    GC,
    DO,
    DU,
    scale,
    T,
    H: tl.constexpr,
    DK: tl.constexpr,
    DV: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    PREC: tl.constexpr,
):
    # dU'_local = scale (Q K^T ⊙ D ⊙ causal)^T dO: how each U'_j is read by the outputs of its own chunk
    i_n, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    rows = i_n * BT + tl.arange(0, BT)
    m_row = rows < T
    ok = tl.arange(0, BK)
    ov = i_v * BV + tl.arange(0, BV)
    tok = (i_b * T + rows).to(tl.int64) * H + i_h
    inner = i_bh.to(tl.int64) * T + rows
    m_rk = m_row[:, None] & (ok < DK)[None, :]
    m_rv = m_row[:, None] & (ov < DV)[None, :]
    q = tl.load(Q + tok[:, None] * DK + ok[None, :], mask=m_rk, other=0.0).to(tl.float32)
    k = tl.load(K + tok[:, None] * DK + ok[None, :], mask=m_rk, other=0.0).to(tl.float32)
    gc = tl.load(GC + inner, mask=m_row, other=0.0)
    do = tl.load(DO + tok[:, None] * DV + ov[None, :], mask=m_rv, other=0.0).to(tl.float32)
    # rows j, columns i: entry (j, i) is q_i.k_j D_ij for i >= j
    later = tl.arange(0, BT)[None, :] >= tl.arange(0, BT)[:, None]
    dec = tl.exp(tl.where(later, gc[None, :] - gc[:, None], 0.0))
    kq = tl.where(later, tl.dot(k, tl.trans(q), input_precision=PREC) * dec, 0.0)
    du = tl.dot(kq, do, input_precision=PREC) * scale
    tl.store(DU + inner[:, None] * DV + ov[None, :], du, mask=m_rv)


@triton.jit
def _state_bwd(
    Q,
    K,
    GC,
    W,
    DO,
    DU,
    DHT,
    DHS,
    DH0,
    scale,
    T,
    NT,
    H: tl.constexpr,
    DK: tl.constexpr,
    DV: tl.constexpr,
    HAS_DHT: tl.constexpr,
    HAS_H0: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    PREC: tl.constexpr,
):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    ok = tl.arange(0, BK)
    ov = i_v * BV + tl.arange(0, BV)
    m_kv = (ok < DK)[:, None] & (ov < DV)[None, :]
    s_off = ok[:, None] * DV + ov[None, :]
    if HAS_DHT:
        ds = tl.load(DHT + i_bh.to(tl.int64) * DK * DV + s_off, mask=m_kv, other=0.0).to(tl.float32)
    else:
        ds = tl.zeros([BK, BV], dtype=tl.float32)
    for idx in range(NT):
        i_n = NT - 1 - idx
        # ds is now the gradient of this chunk's end state
        tl.store(DHS + (i_bh.to(tl.int64) * NT + i_n) * DK * DV + s_off, ds, mask=m_kv)
        rows = i_n * BT + tl.arange(0, BT)
        m_row = rows < T
        tok = (i_b * T + rows).to(tl.int64) * H + i_h
        inner = i_bh.to(tl.int64) * T + rows
        m_rk = m_row[:, None] & (ok < DK)[None, :]
        m_rv = m_row[:, None] & (ov < DV)[None, :]
        k = tl.load(K + tok[:, None] * DK + ok[None, :], mask=m_rk, other=0.0).to(tl.float32)
        q = tl.load(Q + tok[:, None] * DK + ok[None, :], mask=m_rk, other=0.0).to(tl.float32)
        w = tl.load(W + inner[:, None] * DK + ok[None, :], mask=m_rk, other=0.0)
        do = tl.load(DO + tok[:, None] * DV + ov[None, :], mask=m_rv, other=0.0).to(tl.float32)
        gc = tl.load(GC + inner, mask=m_row, other=0.0)
        g_last = tl.load(GC + i_bh.to(tl.int64) * T + tl.minimum(T, i_n * BT + BT) - 1)
        k_dec = k * tl.exp(g_last - gc)[:, None]
        du = tl.load(DU + inner[:, None] * DV + ov[None, :], mask=m_rv, other=0.0)
        du += tl.dot(k_dec, ds, input_precision=PREC)
        tl.store(DU + inner[:, None] * DV + ov[None, :], du, mask=m_rv)
        q_dec = q * (tl.exp(gc) * scale)[:, None]
        ds = (
            ds * tl.exp(g_last)
            + tl.dot(tl.trans(q_dec), do, input_precision=PREC)
            - tl.dot(tl.trans(w), du, input_precision=PREC)
        )
    if HAS_H0:
        tl.store(DH0 + i_bh.to(tl.int64) * DK * DV + s_off, ds, mask=m_kv)


@triton.jit
def _grads_bwd(
    Q,
    K,
    V,
    BETA,
    GC,
    AM,
    U,
    DU,
    HS,
    DHS,
    DO,
    DQ,
    DK_,
    DV_,
    DBETA,
    DG,
    scale,
    T,
    NT,
    H: tl.constexpr,
    DK: tl.constexpr,
    DV: tl.constexpr,
    HAS_G: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    PREC: tl.constexpr,
):
    i_n, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    rows = i_n * BT + tl.arange(0, BT)
    m_row = rows < T
    ok = tl.arange(0, BK)
    m_k = ok < DK
    tok = (i_b * T + rows).to(tl.int64) * H + i_h
    inner = i_bh.to(tl.int64) * T + rows
    m_rk = m_row[:, None] & m_k[None, :]
    # Register budget (8 warps, BT 64, BK 128: a [BT, BK] float32 tile costs 32 registers per thread, twice that
    # as an mma operand on sm_80/sm_89). Q, K and A are (re)loaded where they are used instead of being held
    # across the value loop (K and A inside it: the loop stores dV, so they are not hoisted), and the two dK parts
    # through the states (e^{G_C - G} U' dS^T and beta e^G dX S_0^T) share one accumulator, their row scales
    # applied to the loop's [BT, BV] operands; the dG row sums that read them separately are accumulated from
    # [BT, BV] products instead (K dS, K S_0). Holding them all, sm_80/sm_89 spilled ~9-11 KB per thread.
    beta = tl.load(BETA + tok, mask=m_row, other=0.0).to(tl.float32)
    gc = tl.load(GC + inner, mask=m_row, other=0.0)
    g_last = tl.load(GC + i_bh.to(tl.int64) * T + tl.minimum(T, i_n * BT + BT) - 1)
    eg = tl.exp(gc)
    e_end = tl.exp(g_last - gc)
    beg = beta * eg
    ci = tl.arange(0, BT)[None, :]
    ri = tl.arange(0, BT)[:, None]
    state = (i_bh.to(tl.int64) * NT + i_n) * DK * DV

    acc_dq0 = tl.zeros([BT, BK], dtype=tl.float32)  # dO S_0^T
    acc_dks = tl.zeros([BT, BK], dtype=tl.float32)  # e^{G_C - G} U' dS^T - beta e^G dX S_0^T
    acc_du = tl.zeros([BT, BT], dtype=tl.float32)  # dO U'^T
    acc_da = tl.zeros([BT, BT], dtype=tl.float32)  # dU' X^T
    dbeta = tl.zeros([BT], dtype=tl.float32)
    r = tl.zeros([BT], dtype=tl.float32)  # rowsum(K ⊙ U' dS^T)
    xs = tl.zeros([BT], dtype=tl.float32)  # rowsum(K ⊙ dX S_0^T)
    acc_last = tl.zeros([BK], dtype=tl.float32)  # <dS, S_0>, by rows
    for v0 in range(0, DV, BV):
        ov = v0 + tl.arange(0, BV)
        m_v = ov < DV
        m_rv = m_row[:, None] & m_v[None, :]
        m_kv = m_k[:, None] & m_v[None, :]
        s0 = tl.load(HS + state + ok[:, None] * DV + ov[None, :], mask=m_kv, other=0.0)
        ds = tl.load(DHS + state + ok[:, None] * DV + ov[None, :], mask=m_kv, other=0.0)
        u_new = tl.load(U + inner[:, None] * DV + ov[None, :], mask=m_rv, other=0.0)
        du = tl.load(DU + inner[:, None] * DV + ov[None, :], mask=m_rv, other=0.0)
        do = tl.load(DO + tok[:, None] * DV + ov[None, :], mask=m_rv, other=0.0).to(tl.float32)
        vv = tl.load(V + tok[:, None] * DV + ov[None, :], mask=m_rv, other=0.0).to(tl.float32)
        k = tl.load(K + tok[:, None] * DK + ok[None, :], mask=m_rk, other=0.0).to(tl.float32)
        a = tl.load(AM + inner[:, None] * BT + ci, mask=m_row[:, None], other=0.0)
        acc_dq0 += tl.dot(do, tl.trans(s0), input_precision=PREC)
        acc_du += tl.dot(do, tl.trans(u_new), input_precision=PREC)
        # X / beta = V - e^G K S_0 (kept without beta so that dbeta needs no division)
        ks0 = tl.dot(k, s0, input_precision=PREC)
        x_b = vv - eg[:, None] * ks0
        dx = tl.dot(tl.trans(a), du, input_precision=PREC)
        tl.store(DV_ + tok[:, None] * DV + ov[None, :], (beta[:, None] * dx).to(DV_.dtype.element_ty), mask=m_rv)
        dbeta += tl.sum(dx * x_b, 1)
        xs += tl.sum(dx * ks0, 1)
        r += tl.sum(u_new * tl.dot(k, ds, input_precision=PREC), 1)
        acc_dks += tl.dot(u_new * e_end[:, None], tl.trans(ds), input_precision=PREC)
        acc_dks -= tl.dot(dx * beg[:, None], tl.trans(s0), input_precision=PREC)
        acc_da += tl.dot(du, tl.trans(x_b * beta[:, None]), input_precision=PREC)
        acc_last += tl.sum(ds * s0, 1)

    q = tl.load(Q + tok[:, None] * DK + ok[None, :], mask=m_rk, other=0.0).to(tl.float32)
    k = tl.load(K + tok[:, None] * DK + ok[None, :], mask=m_rk, other=0.0).to(tl.float32)
    causal = ri >= ci
    dec = tl.where(causal, tl.exp(tl.where(causal, gc[:, None] - gc[None, :], 0.0)), 0.0)
    dqk = acc_du * dec * scale  # gradient of the (Q K^T)_ij entries
    dq = eg[:, None] * scale * acc_dq0 + tl.dot(dqk, k, input_precision=PREC)
    tl.store(DQ + tok[:, None] * DK + ok[None, :], dq.to(DQ.dtype.element_ty), mask=m_rk)  # dq is complete
    dk = tl.dot(tl.trans(dqk), q, input_precision=PREC) + acc_dks
    # dG: the intra-chunk decays D_ij (+ at row i, - at column j), e^G on S_0 terms, and e^{G_C - G}
    t_qk = dqk * tl.dot(q, tl.trans(k), input_precision=PREC)
    dg = tl.sum(t_qk, 1) - tl.sum(t_qk, 0)
    dg += eg * scale * tl.sum(q * acc_dq0, 1) - beg * xs
    r = e_end * r
    dg -= r
    last = tl.exp(g_last) * tl.sum(acc_last, 0) + tl.sum(r, 0)
    # G_C is G at the chunk's last row (padded rows have g = 0, so row BT - 1 holds it too)
    dg += tl.where(tl.arange(0, BT) == BT - 1, last, 0.0)

    # through A = (I + L)^{-1}: dL = -A^T dA A^T on the strict lower triangle
    strict = ri > ci
    a = tl.load(AM + inner[:, None] * BT + ci, mask=m_row[:, None], other=0.0)
    dl = -tl.dot(tl.dot(tl.trans(a), acc_da, input_precision=PREC), tl.trans(a), input_precision=PREC)
    dl = tl.where(strict, dl, 0.0)
    kk = tl.dot(k, tl.trans(k), input_precision=PREC)
    dl_dec = dl * dec
    dbeta += tl.sum(dl_dec * kk, 1)
    p = dl_dec * beta[:, None]
    dk += tl.dot(p, k, input_precision=PREC) + tl.dot(tl.trans(p), k, input_precision=PREC)
    t_l = p * kk
    dg += tl.sum(t_l, 1) - tl.sum(t_l, 0)

    tl.store(DK_ + tok[:, None] * DK + ok[None, :], dk.to(DK_.dtype.element_ty), mask=m_rk)
    tl.store(DBETA + tok, dbeta.to(DBETA.dtype.element_ty), mask=m_row)
    if HAS_G:
        # g_t enters every G_s with s >= t in its chunk
        dg_in = tl.sum(dg, 0) - tl.cumsum(dg, 0) + dg
        tl.store(DG + tok, dg_in.to(DG.dtype.element_ty), mask=m_row)


def _blocks(dk: int, dv: int) -> tuple[int, int]:
    bk = max(16, triton.next_power_of_2(dk))
    bv = min(64, max(16, triton.next_power_of_2(dv)))
    if bk > 256:
        raise ValueError(f"chunk_delta_rule (Triton): key dim K = {dk} > 256 is not supported")
    return bk, bv


def _smaller(bv: int, stages: int | None) -> list[dict]:
    """Launch options from the H100 tiles down to ones that fit ~100 KB of shared memory (sm_89): fewer pipeline
    stages first (same work per program), then narrower value blocks (more programs)."""
    return tile_configs({"BV": bv}, ("BV",), stages=(None, 2, 1) if stages is None else range(stages, 0, -1))


def _precision(*tensors: torch.Tensor) -> str:
    # float32 inputs get exact float32 products; 16-bit inputs lose nothing to tf32
    return "ieee" if all(t.dtype == torch.float32 for t in tensors) else "tf32"


def _forward(q, k, v, beta, g, initial_state, chunk_size):
    """Run the three forward kernels; returns (G, A, w, U', chunk states, final state)."""
    bsz, t_len, h, dk = q.shape
    dv = v.shape[-1]
    bt = chunk_size
    nt = triton.cdiv(t_len, bt)
    bk, bv = _blocks(dk, dv)
    prec = _precision(q, k, v)
    f32 = dict(device=q.device, dtype=torch.float32)
    gc = torch.empty(bsz, h, t_len, **f32)
    am = torch.empty(bsz, h, t_len, bt, **f32)
    w = torch.empty(bsz, h, t_len, dk, **f32)
    u = torch.empty(bsz, h, t_len, dv, **f32)
    hs = torch.empty(bsz, h, nt, dk, dv, **f32)
    ht = torch.empty(bsz, h, dk, dv, **f32)
    _prepare_fwd[(nt, bsz * h)](
        k, v, beta, g if g is not None else beta, gc, am, w, u, t_len,
        H=h, DK=dk, DV=dv, HAS_G=g is not None, BT=bt, BK=bk, BV=bv, LOG_BT=bt.bit_length() - 1, PREC=prec,
        PREC_A="ieee" if prec == "ieee" else "tf32x3", num_warps=4,
    )  # fmt: skip
    h0 = initial_state.contiguous() if initial_state is not None else ht
    launch_fitting("delta_rule._state_fwd", (dk, dv, bt, prec), _smaller(bv, 2), lambda c: _state_fwd[
        (triton.cdiv(dv, c["BV"]), bsz * h)](
        k, gc, w, u, h0, hs, ht, t_len, nt,
        H=h, DK=dk, DV=dv, HAS_H0=initial_state is not None, BT=bt, BK=bk, PREC=prec, num_warps=4, **c,
    ))  # fmt: skip
    return gc, am, w, u, hs, ht


@torch.library.custom_op("hybriddsl::delta_rule", mutates_args=())
def delta_rule_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None,
    initial_state: torch.Tensor | None,
    scale: float,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton delta rule: q, k ``[B, T, H, K]``, v ``[B, T, H, V]``, beta, g ``[B, T, H]``.

    Returns ``o`` ``[B, T, H, V]`` (v's dtype) and the final state ``[B, H, K, V]`` float32.
    """
    q, k, v, beta, g, initial_state = contiguous(q, k, v, beta, g, initial_state)
    bsz, t_len, h, dk = q.shape
    dv = v.shape[-1]
    gc, _, _, u, hs, ht = _forward(q, k, v, beta, g, initial_state, chunk_size)
    o = torch.empty_like(v)
    bk, bv = _blocks(dk, dv)
    nt = triton.cdiv(t_len, chunk_size)
    prec = _precision(q, k, v)
    launch_fitting("delta_rule._output_fwd", (dk, dv, chunk_size, prec), _smaller(bv, None), lambda c: _output_fwd[
        (nt, triton.cdiv(dv, c["BV"]), bsz * h)](
        q, k, gc, u, hs, o, scale, t_len, nt,
        H=h, DK=dk, DV=dv, BT=chunk_size, BK=bk, PREC=prec, num_warps=4, **c,
    ))  # fmt: skip
    return o, ht


@delta_rule_op.register_fake
def _(q, k, v, beta, g, initial_state, scale, chunk_size):
    bsz, _, h, dk = q.shape
    return torch.empty_like(v), q.new_empty(bsz, h, dk, v.shape[-1], dtype=torch.float32)


@torch.library.custom_op("hybriddsl::delta_rule_bwd", mutates_args=())
def delta_rule_bwd_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None,
    initial_state: torch.Tensor | None,
    do: torch.Tensor,
    dht: torch.Tensor | None,
    scale: float,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton backward: ``(dq, dk, dv, dbeta, dg, d_initial_state)``.

    ``dg`` is empty without ``g`` and ``d_initial_state`` (float32) empty without an initial state.
    """
    q, k, v, beta, g, initial_state, do, dht = contiguous(q, k, v, beta, g, initial_state, do, dht)
    bsz, t_len, h, dk = q.shape
    dv = v.shape[-1]
    bt = chunk_size
    nt = triton.cdiv(t_len, bt)
    bk, bv = _blocks(dk, dv)
    prec = _precision(q, k, v)
    gc, am, w, u, hs, _ = _forward(q, k, v, beta, g, initial_state, chunk_size)
    du = torch.empty_like(u)
    dhs = torch.empty_like(hs)
    has_h0 = initial_state is not None
    dh0 = q.new_empty((bsz, h, dk, dv) if has_h0 else (0,), dtype=torch.float32)
    _dvlocal_bwd[(nt, triton.cdiv(dv, bv), bsz * h)](
        q, k, gc, do, du, scale, t_len,
        H=h, DK=dk, DV=dv, BT=bt, BK=bk, BV=bv, PREC=prec, num_warps=4,
    )  # fmt: skip
    launch_fitting("delta_rule._state_bwd", (dk, dv, bt, prec), _smaller(bv, 2), lambda c: _state_bwd[
        (triton.cdiv(dv, c["BV"]), bsz * h)](
        q, k, gc, w, do, du, dht if dht is not None else dhs, dhs, dh0, scale, t_len, nt,
        H=h, DK=dk, DV=dv, HAS_DHT=dht is not None, HAS_H0=has_h0, BT=bt, BK=bk, PREC=prec, num_warps=4, **c,
    ))  # fmt: skip
    dq, dk_, dv_ = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dbeta = torch.empty_like(beta)
    dg = torch.empty_like(g) if g is not None else q.new_empty(0)
    bv_grads = min(bv, 32) if bk > 64 else bv
    # Without wgmma (sm_80/sm_89: mma.sync takes its operands from registers) every pipeline stage of the value loop
    # adds to a live set that already fills the register file: at 2 stages ptxas fell back to 40 registers and
    # ~7 KB of spills per thread, at 1 stage 128 registers and ~3.8 KB (sm_89, gated, D 128). sm_90 keeps 3.
    cap = capability()
    grads_cfgs = _smaller(bv_grads, None) if cap >= 90 else tile_configs({"BV": bv_grads}, ("BV",), (1,))
    # Left to itself, ptxas for sm_80/sm_89 caps the gated variant at 32 registers whatever the warps, stages or BV
    # (8.7-11.7 KB of spills per thread on sm_80). Granting one 8-warp block the whole register file (255 a thread,
    # 65,280 of 65,536) brings it to 255 registers and ~3 KB. Not in the interpreter (cap 0), which has no ptxas.
    regs = {"maxnreg": 255} if 0 < cap < 90 else {}
    launch_fitting("delta_rule._grads_bwd", (dk, dv, bt, prec), grads_cfgs, lambda c: _grads_bwd[
        (nt, bsz * h)](
        q, k, v, beta, gc, am, u, du, hs, dhs, do, dq, dk_, dv_, dbeta, dg if g is not None else dbeta,
        scale, t_len, nt,
        H=h, DK=dk, DV=dv, HAS_G=g is not None, BT=bt, BK=bk, PREC=prec, num_warps=8, **regs, **c,
    ))  # fmt: skip
    return dq, dk_, dv_, dbeta, dg, dh0


@delta_rule_bwd_op.register_fake
def _(q, k, v, beta, g, initial_state, do, dht, scale, chunk_size):
    bsz, _, h, dk = q.shape
    dg = torch.empty_like(g) if g is not None else q.new_empty(0)
    shape0 = (bsz, h, dk, v.shape[-1]) if initial_state is not None else (0,)
    return (
        torch.empty_like(q),
        torch.empty_like(k),
        torch.empty_like(v),
        torch.empty_like(beta),
        dg,
        q.new_empty(shape0, dtype=torch.float32),
    )


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, beta, g, initial_state, scale, chunk_size = inputs
    ctx.save_for_backward(q, k, v, beta, g, initial_state)
    ctx.scale, ctx.chunk_size = scale, chunk_size
    ctx.init_dtype = None if initial_state is None else initial_state.dtype


def _backward(ctx, do, dht):
    q, k, v, beta, g, initial_state = ctx.saved_tensors
    if do is None:
        do = torch.zeros_like(v)
    dq, dk, dv, dbeta, dg, dh0 = delta_rule_bwd_op(q, k, v, beta, g, initial_state, do, dht, ctx.scale, ctx.chunk_size)
    return (
        dq,
        dk,
        dv,
        dbeta,
        dg if g is not None else None,
        dh0.to(ctx.init_dtype) if initial_state is not None else None,
        None,
        None,
    )


delta_rule_op.register_autograd(_backward, setup_context=_setup_context)


def delta_rule_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None,
    scale: float,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the custom op (differentiable): ``o`` ``[B, T, H, V]`` and final state ``[B, H, K, V]``."""
    if chunk_size < 16 or chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_delta_rule (Triton): chunk_size must be a power of two >= 16, got {chunk_size}")
    return delta_rule_op(q, k, v, beta, g, initial_state, float(scale), int(chunk_size))


chunk_delta_rule_triton = delta_rule_triton  # the name before issue 13's naming scheme, kept for other branches
