"""The chunked (WY / UT transform) delta rule on the CPU as one autograd function with a hand-written backward.

Autograd through the chunk loop kept one small graph node per op and chunk, and ``select``'s backward wrote a
zero-filled full-size gradient per chunk and tensor (T / C of them: quadratic in T). Here the forward runs
under no autograd at all, the loop is two ``baddbmm`` per chunk, everything else is batched over all chunks,
and the backward walks the chunks once in reverse, again two ``baddbmm`` per chunk.

Layout: ``[N, Z, C, ...]`` (chunk, batch x head, step in the chunk), so that one chunk is a contiguous slice.
Per chunk, with ``G`` the cumulative log decay in the chunk, ``D_ij = exp(G_i - G_j)`` (i >= j, else 0),
``q`` already multiplied by ``scale`` and ``S`` the state entering the chunk::

    A  = (I + strict(diag(beta) (K K^T ∘ D)))^-1      u = A (beta ∘ V)      w = A (beta e^G ∘ K)
    U' = u - w S                                       o = (Q K^T ∘ D) U' + (e^G ∘ Q) S
    S_next = e^{G_C} S + (e^{G_C - G} ∘ K)^T U'

The math is :func:`hybriddsl.kernels.delta_rule.reference.delta_rule_torch`'s (its docstring derives it).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from hybriddsl.kernels.checks import needs_grad


def _tri_masks(c: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    causal = torch.ones(c, c, dtype=torch.bool, device=device).tril()
    return causal, causal.tril(-1)


def _decays(g: torch.Tensor | None, causal: torch.Tensor, dtype: torch.dtype):
    """G (cumulative), D [.., C, C] (0 above the diagonal), e^G, e^{G_C - G}, e^{G_C}; ones / None without g."""
    if g is None:
        return None, causal.to(dtype), None, None, None
    big_g = g.cumsum(-1)
    d = (big_g[..., :, None] - big_g[..., None, :]).masked_fill_(~causal, float("-inf")).exp_()
    g_last = big_g[..., -1:]
    return big_g, d, big_g.exp(), (g_last - big_g).exp_(), g_last.exp()


def _forward(q, k, v, beta, g, s0):
    n, z, c, dk = q.shape
    dv = v.shape[-1]
    causal, strict = _tri_masks(c, q.device)
    _, d, e_g, e_rev, e_last = _decays(g, causal, q.dtype)
    k_t = k.transpose(-1, -2)
    # A = (I + L)^-1 with L = strict(beta_i (k_i . k_j) D_ij); the solve reads only the strict lower part
    kk_d = (k @ k_t).mul_(d)
    lower = (kk_d * beta[..., None]).masked_fill_(~strict, 0.0)
    eye = torch.eye(c, dtype=q.dtype, device=q.device)
    # solved as A^T L^T = I: LAPACK works column-major, so L^T (a view) needs no copy and A comes out row-major
    a = torch.linalg.solve_triangular(
        lower.transpose(-1, -2), eye, upper=True, left=False, unitriangular=True
    ).transpose(-1, -2)
    bk = k * (beta if e_g is None else beta * e_g)[..., None]
    u = a @ (v * beta[..., None])
    w = a @ bk
    k_dec = k if e_rev is None else k * e_rev[..., None]
    k_dec_t = k_dec.transpose(-1, -2)
    # the only sequential part: U' and the state chunk after chunk (states[i] enters chunk i)
    states = q.new_empty(n + 1, z, dk, dv)
    states[0] = s0
    u_new = torch.empty_like(u)
    s_l, un_l = states.unbind(0), u_new.unbind(0)  # views, made once rather than indexed per chunk
    e_l = e_last[..., None].unbind(0) if e_last is not None else None
    for i, (u_i, w_i, kt_i) in enumerate(zip(u.unbind(0), w.unbind(0), k_dec_t.unbind(0), strict=True)):
        torch.baddbmm(u_i, w_i, s_l[i], alpha=-1.0, out=un_l[i])
        if e_l is None:
            torch.baddbmm(s_l[i], kt_i, un_l[i], out=s_l[i + 1])
        else:
            torch.mul(s_l[i], e_l[i], out=s_l[i + 1])
            s_l[i + 1].baddbmm_(kt_i, un_l[i])
    p = (q @ k_t).mul_(d)
    q_dec = q if e_g is None else q * e_g[..., None]
    o = (p @ u_new).view(n * z, c, dv).baddbmm_(q_dec.view(n * z, c, dk), states[:n].view(n * z, dk, dv))
    saved = (q, k, v, beta, d, a, u, u_new, w, states, p, kk_d, q_dec, k_dec, e_g, e_rev, e_last)
    return o.view(n, z, c, dv), states[n].clone(), saved


class _ChunkedDeltaRule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, beta, g, s0):
        q, k, v, beta, s0 = (x.contiguous() for x in (q, k, v, beta, s0))
        g = None if g is None else g.contiguous()
        o, s_final, saved = _forward(q, k, v, beta, g, s0)
        ctx.gated = g is not None
        ctx.save_for_backward(*(t for t in saved if t is not None))
        return o, s_final

    @staticmethod
    @once_differentiable  # no double backward: raise rather than return non-differentiable grads
    def backward(ctx, d_o, d_final):
        gated = ctx.gated
        q, k, v, beta, d, a, u, u_new, w, states, p, kk_d, q_dec, k_dec, *decays = ctx.saved_tensors
        e_g, e_rev, e_last = decays if gated else (None, None, None)
        n, z, c, dk = q.shape
        dv = v.shape[-1]
        _, strict = _tri_masks(c, q.device)
        if d_o is None:
            d_o = torch.zeros_like(u_new)
        d_o = d_o.contiguous()
        # dU' gets P^T dO from the outputs and K_dec dS_next from the next state; dS gets Q_dec^T dO,
        # e^{G_C} dS_next and -w^T dU'. Both direct terms are batched before the reverse loop.
        d_u = p.transpose(-1, -2) @ d_o
        d_states = q.new_empty(n + 1, z, dk, dv)
        torch.matmul(q_dec.transpose(-1, -2), d_o, out=d_states[:n])
        if d_final is None:
            d_states[n].zero_()
        else:
            d_states[n] = d_final
        w_t = w.transpose(-1, -2)
        ds_l, du_l, kd_l, wt_l = d_states.unbind(0), d_u.unbind(0), k_dec.unbind(0), w_t.unbind(0)
        e_l = e_last[..., None].unbind(0) if e_last is not None else None
        for i in range(n - 1, -1, -1):
            d_next = ds_l[i + 1]
            du_l[i].baddbmm_(kd_l[i], d_next)
            if e_l is None:
                ds_l[i].add_(d_next)
            else:
                ds_l[i].add_(d_next * e_l[i])
            ds_l[i].baddbmm_(wt_l[i], du_l[i], alpha=-1.0)
        s_in, d_next = states[:n], d_states[1:]
        d_k_dec = u_new @ d_next.transpose(-1, -2)
        d_q_dec = d_o @ s_in.transpose(-1, -2)
        d_p = d_o @ u_new.transpose(-1, -2)
        # through u = A (beta V), w = A (beta e^G K), A = T^-1: dX = A^T dY, dT = -A^T dA A^T. With
        # dw = -dU' S^T, write m = A^T dU' S^T = -d(beta e^G K); then dL = strict(m w^T - d(beta V) u^T).
        a_t = a.transpose(-1, -2)
        d_bv = a_t @ d_u
        m = a_t @ (d_u @ s_in.transpose(-1, -2))
        flat = (n * z, c, c)
        d_lower = (
            (m @ w_t)
            .view(flat)
            .baddbmm_(d_bv.view(n * z, c, dv), u.transpose(-1, -2).reshape(n * z, dv, c), alpha=-1.0)
        )
        d_lower = d_lower.view(n, z, c, c).masked_fill_(~strict, 0.0)
        t1 = d_lower * kk_d
        d_beta = t1.sum(-1) + (d_bv * v).sum(-1)
        d_bk_k = (m * k).sum(-1).neg_()
        d_beta.add_(d_bk_k if e_g is None else d_bk_k * e_g)
        d_v = d_bv * beta[..., None]
        d_g = None
        if gated:
            # G enters through D, e^G (Q_dec, beta e^G K), e^{G_C - G} (K_dec) and e^{G_C} (the state decay)
            d_d = torch.addcmul(d_p * p, t1, beta[..., None])  # (dL beta KK + dP QK) o D
            d_big_g = d_d.sum(-1) - d_d.sum(-2)
            d_big_g.add_((d_q_dec * q_dec).sum(-1)).add_(d_bk_k * beta * e_g)
            r = (d_k_dec * k_dec).sum(-1)
            d_big_g.sub_(r)
            d_last = r.sum(-1) + (s_in * d_next).sum((-1, -2)) * e_last[..., 0]
            d_big_g[..., -1] += d_last
            d_g = d_big_g.flip(-1).cumsum(-1).flip(-1)  # G = cumsum(g)
        d_kk = d_lower.mul_(d).mul_(beta[..., None])
        d_qk = d_p.mul_(d)
        beta_eg = beta if e_g is None else beta * e_g
        d_q = (d_qk @ k).add_(d_q_dec if e_g is None else d_q_dec.mul_(e_g[..., None]))
        d_k = (d_qk.transpose(-1, -2) @ q).view(n * z, c, dk)
        k3 = k.view(n * z, c, dk)
        d_k.baddbmm_(d_kk.view(flat), k3).baddbmm_(d_kk.view(flat).transpose(-1, -2), k3)
        d_k = d_k.view(n, z, c, dk)
        d_k.add_(d_k_dec if e_rev is None else d_k_dec * e_rev[..., None])
        d_k.addcmul_(m, beta_eg[..., None], value=-1.0)
        return d_q, d_k, d_v, d_beta, d_g, d_states[0]


# Chunks per block of the no-grad forward: a block of about this many [C, C] tiles (chunks x batch x heads) runs
# through every step before the next one starts, so its tensors stay in cache. Batched over all chunks at once
# (128 tiles at T = 2048 and 4 heads) the 64 x 64 matmuls ran at about 50 GFLOP/s against 130 for 32 tiles on
# the 2-core host of docs/benchmarks.md. The autograd path keeps the all-chunks form (its backward reads every
# chunk's saved tensors).
BLOCK_TILES = 32


def _forward_blocked(q, k, v, beta, g, s0):
    """:func:`_forward`'s output and final state, block of chunks by block of chunks (no saved tensors)."""
    n, z, c, _ = q.shape
    nb = max(1, BLOCK_TILES // z)
    if nb >= n:
        return _forward(q, k, v, beta, g, s0)[:2]
    o = q.new_empty(n, z, c, v.shape[-1])
    s = s0
    for i in range(0, n, nb):
        sl = slice(i, min(n, i + nb))
        o[sl], s = _forward(q[sl], k[sl], v[sl], beta[sl], None if g is None else g[sl], s)[:2]
    return o, s


def chunked_delta_rule_fn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None,
    s0: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The delta rule on chunked inputs, differentiable (hand-written backward).

    Args:
        q: ``[N, Z, C, K]`` already multiplied by the output scale; k: ``[N, Z, C, K]``; v: ``[N, Z, C, V]``;
        beta, g: ``[N, Z, C]`` (g: log decays, or None); s0: ``[Z, K, V]``. All contiguous, one float dtype;
        N chunks of C steps, Z = batch x heads.

    Returns:
        ``o`` ``[N, Z, C, V]`` and the final state ``[Z, K, V]``.
    """
    if needs_grad(q, k, v, beta, g, s0):
        return _ChunkedDeltaRule.apply(q, k, v, beta, g, s0)
    q, k, v, beta, s0 = (x.contiguous() for x in (q, k, v, beta, s0))
    return _forward_blocked(q, k, v, beta, None if g is None else g.contiguous(), s0)
