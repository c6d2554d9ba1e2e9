"""Mamba-2's conv and scan on the CPU in one pass of blocks: conv, silu, Δ, the SSD and the D skip per block.

From the input projection's ``u`` [B, T, H P + 2 G N] (before the conv) and the raw ``δ`` [B, T, H]::

    [x, B, C] = silu(causal_conv(u))    x: [H, P]; B, C: [G, N]   (the conv of layers/short_conv.py)
    Δ = clamp(softplus(δ + b_dt), dt_min, dt_max),   g = -exp(A_log) Δ
    y = SSD(q = C, k = B, v = Δ x, g, scale 1) + D x           (:mod:`hybriddsl.kernels.ssd.chunked`)

Computed block by block (the blocks of ``chunked.py``), every elementwise step on a block while it is in cache
(the conv reads the K - 1 tokens before its block); the backward recomputes the block's conv, silu, Δ and
decays and accumulates the projection's gradient in one buffer (no split/cat of the x, B, C gradients, no
full-size conv, silu, ``Δ x`` or skip tensors). What the layer does as separate PyTorch ops, fused here for the
CPU's slow memory; :class:`hybriddsl.layers.mamba2.Mamba2` uses it for eager CPU calls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hybriddsl.kernels.checks import needs_grad
from hybriddsl.kernels.ssd import chunked

Tensor = torch.Tensor


class _Dims:
    """The layout of one call: heads H of P channels, G groups of state N, chunk c, blocks of nb chunks."""

    def __init__(self, u: Tensor, H: int, P: int, G: int, N: int, chunk: int):
        self.B, self.T, self.width = u.shape
        self.H, self.P, self.G, self.N, self.R, self.c = H, P, G, N, H // G, chunk
        self.Z = self.B * G
        _, self.nb, self.blocks = chunked._blocks(self.T, chunk, self.Z)
        self.L = self.nb * chunk

    def span(self, i: int) -> tuple[int, int]:
        return i * self.L, min(self.T, (i + 1) * self.L)


def _padded(x: Tensor, t0: int, t1: int, L: int, dtype: torch.dtype, add: Tensor | None = None) -> Tensor:
    """x[:, t0:t1] (+ add) as a fresh [B, L, ...] in ``dtype``, zero past t1 - t0."""
    out = x.new_zeros(x.shape[0], L, *x.shape[2:], dtype=dtype) if t1 - t0 < L else None
    if out is None:
        out = x[:, t0:t1].to(dtype, copy=True)
    else:
        out[:, : t1 - t0] = x[:, t0:t1]
    return out if add is None else out.add_(add)


def _to_block(x: Tensor, d: _Dims, *tail: int) -> Tensor:
    """[B, L, G, *tail] -> [B G nb, c, *tail] (a copy, or a view of x when G = 1)."""
    return x.movedim(2, 1).reshape(d.Z * d.nb, d.c, *tail)


def _from_block(x: Tensor, d: _Dims) -> Tensor:
    """[B G nb, c, *tail] -> the view [B, L, G, *tail]."""
    return x.view(d.B, d.G, d.L, *x.shape[2:]).movedim(1, 2)


class _Block:
    """One block's recomputable inputs: silu(u), Δ (and what the backward needs), the SSD operands."""

    def __init__(self, u, conv_w, conv_b, dt, dt_bias, A, limits, d: _Dims, i: int, ct, grad: bool):
        t0, t1 = d.span(i)
        n = t1 - t0
        # the causal conv of the block: its input with the K - 1 tokens before it (zeros before t = 0)
        K = conv_w.shape[1]
        lo = max(0, t0 - (K - 1))
        self.xin = u.new_zeros(d.B, d.L + K - 1, d.width, dtype=ct)
        self.halo = (K - 1) - (t0 - lo)
        self.xin[:, self.halo : K - 1 + n] = u[:, lo:t1]
        self.lo = lo
        pre = self.xin[:, K - 1 :] * conv_w[:, K - 1]
        if conv_b is not None:
            pre += conv_b
        for k in range(K - 1):
            pre.addcmul_(self.xin[:, k : k + d.L], conv_w[:, k])
        self.pre = pre
        xs = F.silu(self.pre) if grad else F.silu(self.pre, inplace=True)
        self.xs = xs
        self.draw = _padded(dt, t0, t1, d.L, ct, add=dt_bias)  # δ + b_dt
        delta = F.softplus(self.draw)
        lo, hi = limits
        self.keep = None
        if lo > 0 or hi is not None:
            if grad:  # clamp's gradient passes where lo <= softplus <= hi
                self.keep = (delta >= lo) & (delta <= hi if hi is not None else True)
            delta = delta.clamp(min=lo, max=hi)
        if n < d.L:  # padding: no decay and no input, so no effect on any real token (or on dA_log / db_dt)
            delta[:, n:] = 0
        self.delta = delta.view(d.B, d.L, d.G, d.R)
        HP, GN = d.H * d.P, d.G * d.N
        self.x = xs[..., :HP].view(d.B, d.L, d.G, d.R, d.P)
        self.Bm = xs[..., HP : HP + GN].view(d.B, d.L, d.G, d.N)
        self.Cm = xs[..., HP + GN :].view(d.B, d.L, d.G, d.N)
        self.g = self.delta * A.view(d.G, d.R)
        self.qn, self.kn = _to_block(self.Cm, d, d.N), _to_block(self.Bm, d, d.N)
        self.vn = _to_block(self.x * self.delta.unsqueeze(-1), d, d.R, d.P)
        self.bn = torch.cumsum(_to_block(self.g, d, d.R), 1)  # not in place: a view of g when G = 1
        self.t0, self.t1 = t0, t1


def _forward(u, conv_w, conv_b, dt, dt_bias, A, D, limits, d: _Dims, ct, starts: Tensor | None) -> Tensor:
    y = u.new_empty(d.B, d.T, d.G, d.R, d.P, dtype=ct)
    S = u.new_zeros(d.Z, d.N, d.R * d.P, dtype=ct)
    Dv = D.view(d.G, d.R, 1)
    for i in range(d.blocks):
        blk = _Block(u, conv_w, conv_b, dt, dt_bias, A, limits, d, i, ct, grad=False)
        S0 = starts[i] if starts is not None else u.new_empty(d.Z, d.nb, d.N, d.R * d.P, dtype=ct)
        on, S = chunked.block_forward(blk.qn, blk.kn, blk.vn, blk.bn, S, S0, 1.0)
        n = blk.t1 - blk.t0
        torch.addcmul(_from_block(on, d)[:, :n], blk.x[:, :n], Dv, out=y[:, blk.t0 : blk.t1])
    return y


class Mamba2Scan(torch.autograd.Function):
    """:func:`mamba2_scan` with its backward (first-order only)."""

    @staticmethod
    def forward(ctx, u, conv_w, conv_b, dt, dt_bias, A_log, D, dims, limits, chunk):
        H, P, G, N = dims
        d = _Dims(u, H, P, G, N, chunk)
        ct = torch.float64 if u.dtype == torch.float64 else torch.float32
        A = -torch.exp(A_log.to(ct))
        starts = u.new_empty(d.blocks, d.Z, d.nb, N, d.R * P, dtype=ct)
        cb = None if conv_b is None else conv_b.to(ct)
        y = _forward(u, conv_w.to(ct), cb, dt, dt_bias.to(ct), A, D.to(ct), limits, d, ct, starts)
        ctx.save_for_backward(u, conv_w, conv_b, dt, dt_bias, A_log, D, starts)
        ctx.meta = (d, limits)
        return y.view(d.B, d.T, H, P).to(u.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        u, conv_w, conv_b, dt, dt_bias, A_log, D, starts = ctx.saved_tensors
        d, limits = ctx.meta
        ct = starts.dtype
        A, Dv = -torch.exp(A_log.to(ct)), D.to(ct).view(d.G, d.R, 1)
        bias = dt_bias.to(ct)
        w, cb = conv_w.to(ct), None if conv_b is None else conv_b.to(ct)
        K = w.shape[1]
        dw = torch.zeros_like(w)
        dcb = None if conv_b is None else torch.zeros_like(cb)
        du, ddt = torch.zeros_like(u, dtype=ct), torch.empty_like(dt, dtype=ct)
        dA = torch.zeros(d.G, d.R, dtype=ct)
        dD, dbias = torch.zeros(d.G, d.R, dtype=ct), torch.zeros(d.H, dtype=ct)
        dS = u.new_zeros(d.Z, d.N, d.R * d.P, dtype=ct)
        HP, GN = d.H * d.P, d.G * d.N
        dy5 = dy.view(d.B, d.T, d.G, d.R, d.P)
        for i in range(d.blocks - 1, -1, -1):
            blk = _Block(u, w, cb, dt, bias, A, limits, d, i, ct, grad=True)
            t0, t1 = blk.t0, blk.t1
            n = t1 - t0
            dyb = _padded(dy5, t0, t1, d.L, ct)
            dqn, dkn, dvn, dgn, dS = chunked.block_backward(
                blk.qn, blk.kn, blk.vn, blk.bn, _to_block(dyb, d, d.R, d.P), starts[i], dS, 1.0
            )
            dxs = torch.empty_like(blk.xs)
            dx = dxs[..., :HP].view(d.B, d.L, d.G, d.R, d.P)
            dv = _from_block(dvn, d)
            torch.mul(dv, blk.delta.unsqueeze(-1), out=dx)
            dx.addcmul_(dyb, Dv)
            dD += (dyb * blk.x).sum((0, 1, 4))
            dxs[..., HP : HP + GN].view(d.B, d.L, d.G, d.N).copy_(_from_block(dkn, d))
            dxs[..., HP + GN :].view(d.B, d.L, d.G, d.N).copy_(_from_block(dqn, d))
            dxs[:, n:] = 0  # padding: nothing flows back from it
            dpre = torch.ops.aten.silu_backward(dxs, blk.pre)
            # the conv: tap k of output t read xin[t + k]
            dxin = torch.zeros_like(blk.xin)
            for k in range(K):
                dxin[:, k : k + d.L].addcmul_(dpre, w[:, k])
                dw[:, k] += (dpre * blk.xin[:, k : k + d.L]).sum((0, 1))
            if dcb is not None:
                dcb += dpre.sum((0, 1))
            du[:, blk.lo : t1] += dxin[:, blk.halo : K - 1 + n]
            dg = _from_block(dgn, d)  # [B, L, G, R]
            dA += (dg * blk.g).sum((0, 1))  # g = -exp(A_log) Δ: dg/dA_log = g
            ddelta = (dv * blk.x).sum(-1).add_(dg * A.view(d.G, d.R))
            if blk.keep is not None:
                ddelta = ddelta * blk.keep.view(ddelta.shape)
            dd = ddelta.view(d.B, d.L, d.H)[:, :n] * torch.sigmoid(blk.draw[:, :n])  # softplus' = sigmoid
            ddt[:, t0:t1] = dd
            dbias += dd.sum((0, 1))
        return (
            du.to(u.dtype),
            dw.to(conv_w.dtype),
            None if dcb is None else dcb.to(conv_b.dtype),
            ddt.to(dt.dtype),
            dbias.to(dt_bias.dtype),
            dA.view(d.H).to(A_log.dtype),
            dD.view(d.H).to(D.dtype),
            None,
            None,
            None,
        )


def mamba2_scan(
    u: Tensor,
    conv_w: Tensor,
    conv_b: Tensor | None,
    dt: Tensor,
    dt_bias: Tensor,
    A_log: Tensor,
    D: Tensor,
    dims: tuple[int, int, int, int],
    limits: tuple[float, float | None],
    chunk: int,
) -> Tensor:
    """Mamba-2's conv and SSD from the input projection. u: [B, T, H P + 2 G N] (before the conv); conv_w: [H P +
    2 G N, K] and conv_b (or None) the causal depthwise conv (:mod:`hybriddsl.layers.short_conv`); dt: [B, T, H] (before
    softplus); dt_bias, A_log, D: [H]; dims = (H, P, G, N); limits = (dt_min, dt_max or None); chunk: tokens
    per chunk. Returns y [B, T, H, P] (u's dtype): the scan output plus the D skip, before the gate."""
    d = _Dims(u, *dims, chunk)
    if needs_grad(u, conv_w, conv_b, dt, dt_bias, A_log, D):
        return Mamba2Scan.apply(u, conv_w, conv_b, dt, dt_bias, A_log, D, dims, limits, chunk)
    ct = torch.float64 if u.dtype == torch.float64 else torch.float32
    A = -torch.exp(A_log.to(ct))
    cb = None if conv_b is None else conv_b.to(ct)
    y = _forward(u, conv_w.to(ct), cb, dt, dt_bias.to(ct), A, D.to(ct), limits, d, ct, None)
    return y.view(d.B, d.T, d.H, d.P).to(u.dtype)
