"""Triton forward and backward of SSD (scalar decay per head), as one ``torch.library`` op.

Math and notation as in ``reference.py``: q, k [B, T, G, K] (head ``h`` reads group ``h // (H / G)``),
v [B, T, H, V], g [B, T, H]. Time is cut into chunks of ``BT`` tokens; ``gc`` is the chunk-local cumulative
log-decay (float32, computed by PyTorch) and ``gl`` its value at a chunk's last token. With a scalar decay the
decay between rows ``i >= j`` of a chunk is one number, ``L[i, j] = exp(gc_i - gc_j) <= 1``, so the
intra-chunk part is a plain masked ``tl.dot`` (no sub-chunks, no per-key log-space loop as in the GLA kernels).

Forward (two kernels):
  1. ``_fwd_h``: the state at the start of every chunk (sequential over chunks) and the final state:
     ``h <- exp(gl) h + (k ∘ exp(gl - gc))^T v``.
  2. ``_fwd_o``: ``o = scale * (exp(gc) ∘ (q h) + (q k^T ∘ L) v)``.
Backward (three kernels, plus sums over heads and a reverse cumulative sum in PyTorch):
  ``_bwd_dh`` (gradient of the state at the end of every chunk, reverse over chunks), ``_bwd_dqk`` (per-head
  dq, dk through the states and through ``dA = do v^T ∘ L``) and ``_bwd_dv``. The decay gradient uses the
  identity of the GLA kernels: o depends on the decays only through ``q exp(B_t)``, ``k exp(-B_s)`` and
  ``exp(B_T)`` in the final state (B the global cumulative log-decay), so per head
  ``dB_t = q_t . dq_t - k_t . dk_t`` (+ ``sum S_T ∘ dS_T`` at t = T - 1) and ``dg_t = sum_{s >= t} dB_s``.

Like the GLA kernels, these were written and tested in Triton's CPU interpreter only (fp32/fp16: the
interpreter's bf16 ``tl.dot`` is wrong); validate them on a GPU (``tests/kernels/test_ssd.py`` runs on CUDA as
is) before trusting them there.
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


@triton.jit
def _decay_mask(gc_r, rows, T):
    """L[i, j] = exp(gc_i - gc_j) for j <= i (both rows real), else 0: [BT, BT] float32."""
    m = (rows[:, None] >= rows[None, :]) & (rows[:, None] < T)
    return tl.where(m, tl.exp(gc_r[:, None] - gc_r[None, :]), 0.0)


@triton.jit
def _fwd_h(
    k,
    v,
    gc,
    h,
    h0,
    ht,
    T,
    G: tl.constexpr,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_H0: tl.constexpr,
    PREC: tl.constexpr,
    F32: tl.constexpr,
):
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    i_g = i_h // (H // G)
    NT = tl.cdiv(T, BT)
    ck = i_k * BK + tl.arange(0, BK)
    cv = i_v * BV + tl.arange(0, BV)
    mk, mv = ck < K, cv < V
    m_kv = mk[:, None] & mv[None, :]
    k += (i_b * T * G + i_g) * K
    v += (i_b * T * H + i_h) * V
    gc += i_b * T * H + i_h
    h += i_bh * NT * K * V
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_h += tl.load(h0 + i_bh * K * V + ck[:, None] * V + cv[None, :], mask=m_kv, other=0.0)
    for i_t in range(0, NT):
        tl.store(h + i_t * K * V + ck[:, None] * V + cv[None, :], b_h, mask=m_kv)
        rows = i_t * BT + tl.arange(0, BT)
        m_r = rows < T
        last = tl.minimum(i_t * BT + BT, T) - 1
        b_k = tl.load(k + rows[:, None] * G * K + ck[None, :], mask=m_r[:, None] & mk[None, :], other=0.0)
        b_v = tl.load(v + rows[:, None] * H * V + cv[None, :], mask=m_r[:, None] & mv[None, :], other=0.0)
        b_g = tl.load(gc + rows * H, mask=m_r, other=0.0)
        b_gl = tl.load(gc + last * H)
        k_end = b_k * tl.where(m_r, tl.exp(b_gl - b_g), 0.0)[:, None]
        b_h = b_h * tl.exp(b_gl) + _dot(tl.trans(k_end.to(b_v.dtype)), b_v, PREC, F32)
    tl.store(ht + i_bh * K * V + ck[:, None] * V + cv[None, :], b_h, mask=m_kv)


@triton.jit
def _fwd_o(
    q,
    k,
    v,
    gc,
    h,
    o,
    scale,
    T,
    G: tl.constexpr,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    PREC: tl.constexpr,
    F32: tl.constexpr,
):
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    i_g = i_h // (H // G)
    NT = tl.cdiv(T, BT)
    rows = i_t * BT + tl.arange(0, BT)
    m_r = rows < T
    cv = i_v * BV + tl.arange(0, BV)
    mv = cv < V
    q += (i_b * T * G + i_g) * K
    k += (i_b * T * G + i_g) * K
    v += (i_b * T * H + i_h) * V
    o += (i_b * T * H + i_h) * V
    gc += i_b * T * H + i_h
    h += (i_bh * NT + i_t) * K * V
    acc = tl.zeros([BT, BV], dtype=tl.float32)  # q h
    s = tl.zeros([BT, BT], dtype=tl.float32)  # q k^T
    for i_k in range(0, tl.cdiv(K, BK)):
        ck = i_k * BK + tl.arange(0, BK)
        mk = ck < K
        m_qk = m_r[:, None] & mk[None, :]
        b_q = tl.load(q + rows[:, None] * G * K + ck[None, :], mask=m_qk, other=0.0)
        b_k = tl.load(k + rows[:, None] * G * K + ck[None, :], mask=m_qk, other=0.0)
        b_h = tl.load(h + ck[:, None] * V + cv[None, :], mask=mk[:, None] & mv[None, :], other=0.0)
        acc += _dot(b_q, b_h.to(b_q.dtype), PREC, F32)
        s += _dot(b_q, tl.trans(b_k), PREC, F32)
    b_g = tl.load(gc + rows * H, mask=m_r, other=0.0)
    acc = acc * (tl.exp(b_g) * scale)[:, None]
    b_v = tl.load(v + rows[:, None] * H * V + cv[None, :], mask=m_r[:, None] & mv[None, :], other=0.0)
    acc += _dot_hilo(s * scale * _decay_mask(b_g, rows, T), b_v, PREC, F32)
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
    G: tl.constexpr,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_DHT: tl.constexpr,
    USE_H0: tl.constexpr,
    PREC: tl.constexpr,
    F32: tl.constexpr,
):
    # dh[n] = gradient of the state at the END of chunk n; the loop runs backwards over chunks.
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    i_g = i_h // (H // G)
    NT = tl.cdiv(T, BT)
    ck = i_k * BK + tl.arange(0, BK)
    cv = i_v * BV + tl.arange(0, BV)
    mk, mv = ck < K, cv < V
    m_kv = mk[:, None] & mv[None, :]
    q += (i_b * T * G + i_g) * K
    do += (i_b * T * H + i_h) * V
    gc += i_b * T * H + i_h
    dh += i_bh * NT * K * V
    b_dh = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_DHT:
        b_dh += tl.load(dht + i_bh * K * V + ck[:, None] * V + cv[None, :], mask=m_kv, other=0.0)
    for i_r in range(0, NT):
        i_t = NT - 1 - i_r
        tl.store(dh + i_t * K * V + ck[:, None] * V + cv[None, :], b_dh, mask=m_kv)
        rows = i_t * BT + tl.arange(0, BT)
        m_r = rows < T
        last = tl.minimum(i_t * BT + BT, T) - 1
        b_q = tl.load(q + rows[:, None] * G * K + ck[None, :], mask=m_r[:, None] & mk[None, :], other=0.0)
        b_g = tl.load(gc + rows * H, mask=m_r, other=0.0)
        b_gl = tl.load(gc + last * H)
        qe = b_q * tl.where(m_r, tl.exp(b_g) * scale, 0.0)[:, None]
        b_do = tl.load(do + rows[:, None] * H * V + cv[None, :], mask=m_r[:, None] & mv[None, :], other=0.0)
        b_dh = b_dh * tl.exp(b_gl) + _dot(tl.trans(qe.to(b_do.dtype)), b_do, PREC, F32)
    if USE_H0:
        tl.store(dh0 + i_bh * K * V + ck[:, None] * V + cv[None, :], b_dh, mask=m_kv)


@triton.jit
def _bwd_dqk(
    q,
    k,
    v,
    gc,
    h,
    dh,
    do,
    dq,
    dk,
    dB,
    scale,
    T,
    G: tl.constexpr,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    PREC: tl.constexpr,
    F32: tl.constexpr,
):
    # Per head and K block: dq, dk (float32, summed over a group's heads afterwards) and the decay term
    # q . dq - k . dk of this K block.
    i_k, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    i_g = i_h // (H // G)
    NT = tl.cdiv(T, BT)
    rows = i_t * BT + tl.arange(0, BT)
    m_r = rows < T
    last = tl.minimum(i_t * BT + BT, T) - 1
    ck = i_k * BK + tl.arange(0, BK)
    mk = ck < K
    m_qk = m_r[:, None] & mk[None, :]
    q += (i_b * T * G + i_g) * K
    k += (i_b * T * G + i_g) * K
    v += (i_b * T * H + i_h) * V
    do += (i_b * T * H + i_h) * V
    gc += i_b * T * H + i_h
    h += (i_bh * NT + i_t) * K * V
    dh += (i_bh * NT + i_t) * K * V
    b_q = tl.load(q + rows[:, None] * G * K + ck[None, :], mask=m_qk, other=0.0)
    b_k = tl.load(k + rows[:, None] * G * K + ck[None, :], mask=m_qk, other=0.0)
    b_dq = tl.zeros([BT, BK], dtype=tl.float32)  # do h^T
    b_dk = tl.zeros([BT, BK], dtype=tl.float32)  # v dh^T
    b_dA = tl.zeros([BT, BT], dtype=tl.float32)  # do v^T
    for i_v in range(0, tl.cdiv(V, BV)):
        cv = i_v * BV + tl.arange(0, BV)
        mv = cv < V
        m_tv = m_r[:, None] & mv[None, :]
        b_do = tl.load(do + rows[:, None] * H * V + cv[None, :], mask=m_tv, other=0.0)
        b_v = tl.load(v + rows[:, None] * H * V + cv[None, :], mask=m_tv, other=0.0)
        b_h = tl.load(h + ck[:, None] * V + cv[None, :], mask=mk[:, None] & mv[None, :], other=0.0)
        b_dh = tl.load(dh + ck[:, None] * V + cv[None, :], mask=mk[:, None] & mv[None, :], other=0.0)
        b_dq += _dot(b_do, tl.trans(b_h.to(b_do.dtype)), PREC, F32)
        b_dk += _dot(b_v, tl.trans(b_dh.to(b_v.dtype)), PREC, F32)
        b_dA += _dot(b_do, tl.trans(b_v), PREC, F32)
    b_g = tl.load(gc + rows * H, mask=m_r, other=0.0)
    b_gl = tl.load(gc + last * H)
    b_dq = b_dq * (tl.exp(b_g) * scale)[:, None]
    b_dk = b_dk * tl.where(m_r, tl.exp(b_gl - b_g), 0.0)[:, None]
    b_dA = b_dA * scale * _decay_mask(b_g, rows, T)
    b_dq += _dot_hilo(b_dA, b_k, PREC, F32)
    b_dk += _dot_hilo(tl.trans(b_dA), b_q, PREC, F32)
    term = tl.sum(b_q.to(tl.float32) * b_dq - b_k.to(tl.float32) * b_dk, 1)
    out = (i_b * T * H + i_h) * K
    tl.store(dq + out + rows[:, None] * H * K + ck[None, :], b_dq, mask=m_qk)
    tl.store(dk + out + rows[:, None] * H * K + ck[None, :], b_dk, mask=m_qk)
    tl.store(dB + (i_k * tl.num_programs(2) * T + i_b * T * H + i_h) + rows * H, term, mask=m_r)


@triton.jit
def _bwd_dv(
    q,
    k,
    gc,
    dh,
    do,
    dv,
    scale,
    T,
    G: tl.constexpr,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    PREC: tl.constexpr,
    F32: tl.constexpr,
):
    # dv = (k ∘ exp(gl - gc)) dh + (q k^T ∘ L)^T do.
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    i_g = i_h // (H // G)
    NT = tl.cdiv(T, BT)
    rows = i_t * BT + tl.arange(0, BT)
    m_r = rows < T
    last = tl.minimum(i_t * BT + BT, T) - 1
    cv = i_v * BV + tl.arange(0, BV)
    mv = cv < V
    m_tv = m_r[:, None] & mv[None, :]
    q += (i_b * T * G + i_g) * K
    k += (i_b * T * G + i_g) * K
    do += (i_b * T * H + i_h) * V
    dv += (i_b * T * H + i_h) * V
    gc += i_b * T * H + i_h
    dh += (i_bh * NT + i_t) * K * V
    b_g = tl.load(gc + rows * H, mask=m_r, other=0.0)
    b_gl = tl.load(gc + last * H)
    w = tl.where(m_r, tl.exp(b_gl - b_g), 0.0)
    acc = tl.zeros([BT, BV], dtype=tl.float32)
    s = tl.zeros([BT, BT], dtype=tl.float32)  # q k^T
    for i_k in range(0, tl.cdiv(K, BK)):
        ck = i_k * BK + tl.arange(0, BK)
        mk = ck < K
        m_qk = m_r[:, None] & mk[None, :]
        b_q = tl.load(q + rows[:, None] * G * K + ck[None, :], mask=m_qk, other=0.0)
        b_k = tl.load(k + rows[:, None] * G * K + ck[None, :], mask=m_qk, other=0.0)
        b_dh = tl.load(dh + ck[:, None] * V + cv[None, :], mask=mk[:, None] & mv[None, :], other=0.0)
        acc += _dot((b_k * w[:, None]).to(b_k.dtype), b_dh.to(b_k.dtype), PREC, F32)
        s += _dot(b_q, tl.trans(b_k), PREC, F32)
    b_do = tl.load(do + rows[:, None] * H * V + cv[None, :], mask=m_tv, other=0.0)
    acc += _dot_hilo(tl.trans(s * scale * _decay_mask(b_g, rows, T)), b_do, PREC, F32)
    tl.store(dv + rows[:, None] * H * V + cv[None, :], acc.to(dv.dtype.element_ty), mask=m_tv)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def _meta(q: torch.Tensor, v: torch.Tensor, BT: int) -> dict:
    B, T, G, K = q.shape
    H, V = v.shape[2], v.shape[3]
    return dict(
        B=B,
        T=T,
        G=G,
        H=H,
        K=K,
        V=V,
        NT=-(-T // BT),
        BK=max(16, min(64, triton.next_power_of_2(K))),
        BV=max(16, min(64, triton.next_power_of_2(V))),
        PREC="ieee" if q.dtype == torch.float32 else "tf32",
        # the interpreter's bf16 tl.dot is wrong (see _dot); a compile for a stand-in GPU (CPU tensors, no
        # interpreter) must build what the GPU runs, so this asks about the interpreter, not the tensor's device
        F32=q.dtype == torch.bfloat16 and interpreting(),
    )


def _fit(name: str, m: dict, q: torch.Tensor, blocks: tuple[str, ...], flags: tuple, launch) -> None:
    """:func:`launch_tiles` from the BK/BV of ``_meta``, keyed by the shapes and flags the fit depends on."""
    key = (m["K"], m["V"], m["G"], m["H"], str(q.dtype), m["PREC"], m["F32"], *flags)
    launch_tiles(f"ssd.{name}", key, {"BK": m["BK"], "BV": m["BV"]}, blocks, launch)


def _states(k, v, gc, h0, m, BT):
    """States at every chunk start [B, H, NT, K, V] and the final state [B, H, K, V], float32."""
    h = k.new_empty(m["B"], m["H"], m["NT"], m["K"], m["V"], dtype=torch.float32)
    ht = k.new_empty(m["B"], m["H"], m["K"], m["V"], dtype=torch.float32)
    _fit("_fwd_h", m, k, ("BV", "BK"), (BT, h0 is not None), lambda c: _fwd_h[
        (triton.cdiv(m["K"], c["BK"]), triton.cdiv(m["V"], c["BV"]), m["B"] * m["H"])](
        k, v, gc, h, h0 if h0 is not None else ht, ht, m["T"], m["G"], m["H"], m["K"], m["V"], BT,
        USE_H0=h0 is not None, PREC=m["PREC"], F32=m["F32"], **c,
    ))  # fmt: skip
    return h, ht


def _forward(q, k, v, g, h0, scale, BT):
    m = _meta(q, v, BT)
    gc = cumsum_chunks(g, BT)
    h, ht = _states(k, v, gc, h0, m, BT)
    o = torch.empty_like(v)
    grid = lambda c: (triton.cdiv(m["V"], c["BV"]), m["NT"], m["B"] * m["H"])  # noqa: E731
    _fit("_fwd_o", m, q, ("BV", "BK"), (BT,), lambda c: _fwd_o[grid(c)](
        q, k, v, gc, h, o, scale, m["T"], m["G"], m["H"], m["K"], m["V"], BT, PREC=m["PREC"], F32=m["F32"], **c
    ))  # fmt: skip
    return o, ht


def _backward(q, k, v, g, h0, ht, do, dht, scale, BT):
    m = _meta(q, v, BT)
    B, T, G, H, K, V, NT = m["B"], m["T"], m["G"], m["H"], m["K"], m["V"], m["NT"]
    gc = cumsum_chunks(g, BT)
    h, _ = _states(k, v, gc, h0, m, BT)  # recomputed rather than saved (memory)
    dh = q.new_empty(B, H, NT, K, V, dtype=torch.float32)
    dh0 = q.new_empty(B, H, K, V, dtype=torch.float32)
    _fit("_bwd_dh", m, q, ("BV", "BK"), (BT, dht is not None, h0 is not None), lambda c: _bwd_dh[
        (triton.cdiv(K, c["BK"]), triton.cdiv(V, c["BV"]), B * H)](
        q, do, gc, dh, dht if dht is not None else dh0, dh0, scale, T, G, H, K, V, BT,
        USE_DHT=dht is not None, USE_H0=h0 is not None, PREC=m["PREC"], F32=m["F32"], **c,
    ))  # fmt: skip
    dq_h = q.new_empty(B, T, H, K, dtype=torch.float32)
    dk_h = q.new_empty(B, T, H, K, dtype=torch.float32)
    parts: list[torch.Tensor] = []

    def dqk(c: dict) -> None:
        nk = triton.cdiv(K, c["BK"])
        dB = q.new_empty(nk, B, T, H, dtype=torch.float32)  # one decay term per K block, summed below
        _bwd_dqk[(nk, NT, B * H)](
            q, k, v, gc, h, dh, do, dq_h, dk_h, dB, scale, T, G, H, K, V, BT, PREC=m["PREC"], F32=m["F32"], **c
        )
        parts[:] = [dB]

    _fit("_bwd_dqk", m, q, ("BV", "BK"), (BT,), dqk)
    dB = parts[0]
    dv = torch.empty_like(v)
    _fit("_bwd_dv", m, q, ("BV", "BK"), (BT,), lambda c: _bwd_dv[(triton.cdiv(V, c["BV"]), NT, B * H)](
        q, k, gc, dh, do, dv, scale, T, G, H, K, V, BT, PREC=m["PREC"], F32=m["F32"], **c
    ))  # fmt: skip
    dq = dq_h.view(B, T, G, H // G, K).sum(3).to(q.dtype)
    dk = dk_h.view(B, T, G, H // G, K).sum(3).to(k.dtype)
    dB = dB.sum(0)
    if dht is not None:  # the final state holds exp(B_T): its gradient enters at the last token
        dB[:, -1] += (ht * dht.float()).sum((-1, -2))
    dg = dB.flip(1).cumsum(1).flip(1)
    return dq, dk, dv, dg.to(g.dtype), (dh0.to(h0.dtype) if h0 is not None else q.new_empty(0))


# ---------------------------------------------------------------------------------------------
# torch.library op (one op forward, one op backward; torch.compile sees them as opaque)
# ---------------------------------------------------------------------------------------------


@torch.library.custom_op("hybriddsl::ssd_fwd", mutates_args=())
def ssd_fwd_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    initial_state: torch.Tensor | None,
    scale: float,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns o [B, T, H, V] (v's dtype) and the final state [B, H, K, V] float32."""
    q, k, v, g, initial_state = contiguous(q, k, v, g, initial_state)
    h0 = initial_state.float() if initial_state is not None else None
    return _forward(q, k, v, g, h0, scale, chunk_size)


@ssd_fwd_op.register_fake
def _(q, k, v, g, initial_state, scale, chunk_size):
    B, T, G, K = q.shape
    return v.new_empty(v.shape), q.new_empty(B, v.shape[2], K, v.shape[3], dtype=torch.float32)


@torch.library.custom_op("hybriddsl::ssd_bwd", mutates_args=())
def ssd_bwd_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    initial_state: torch.Tensor | None,
    final_state: torch.Tensor,
    do: torch.Tensor,
    dht: torch.Tensor | None,
    scale: float,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns dq, dk, dv, dg and d initial_state (empty without it)."""
    q, k, v, g, initial_state, do, dht = contiguous(q, k, v, g, initial_state, do, dht)
    h0 = initial_state.float() if initial_state is not None else None
    return _backward(q, k, v, g, h0, final_state, do, dht, scale, chunk_size)


@ssd_bwd_op.register_fake
def _(q, k, v, g, initial_state, final_state, do, dht, scale, chunk_size):
    return (
        q.new_empty(q.shape),
        k.new_empty(k.shape),
        v.new_empty(v.shape),
        g.new_empty(g.shape),
        initial_state.new_empty(initial_state.shape) if initial_state is not None else q.new_empty(0),
    )


def _setup_context(ctx, inputs, output):
    q, k, v, g, initial_state, scale, chunk_size = inputs
    ctx.save_for_backward(q, k, v, g, initial_state, output[1])
    ctx.scale, ctx.chunk_size = scale, chunk_size


def _backward_fn(ctx, do, dht):
    q, k, v, g, initial_state, final_state = ctx.saved_tensors
    dq, dk, dv, dg, dh0 = ssd_bwd_op(q, k, v, g, initial_state, final_state, do, dht, ctx.scale, ctx.chunk_size)
    return dq, dk, dv, dg, (dh0 if initial_state is not None else None), None, None


ssd_fwd_op.register_autograd(_backward_fn, setup_context=_setup_context)


def ssd_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Triton SSD (shapes as :func:`hybriddsl.kernels.ssd.ssd`; arguments already checked). k and v are cast to
    q's dtype first (autograd casts their gradients back)."""
    o, final_state = ssd_fwd_op(q, k.to(q.dtype), v.to(q.dtype), g, initial_state, float(scale), int(chunk_size))
    return o.to(v.dtype), (final_state if output_final_state else None)
