"""PyTorch reference for chunked gated linear attention (GLA, RWKV-6, Mamba-2/SSD).

Math (Yang et al. 2024, "Gated Linear Attention Transformers with Hardware-Efficient Training";
Peng et al. 2024, "Eagle and Finch" for the RWKV-6 bonus ``u``), per batch and head::

    S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T              S_t: [K, V], g_t <= 0 (log-decay)
    o_t = scale * q_t^T S_t                                 (no bonus)
    o_t = scale * (q_t^T S_{t-1} + ((q_t * u) . k_t) v_t)    (with bonus u: RWKV-6 reads the state
                                                             before token t is added)

A scalar decay per head (``g``: [B, T, H], Mamba-2/SSD) broadcasts over K.

Three functions:

- :func:`gla_naive`: the readable float32 loop over time (the definition tests compare against).
- :func:`gla_torch`: the fast path used on CPU. Time is cut into blocks; between blocks the state is
  passed in a short loop over blocks, not over tokens. Inside a block, two forms of the same math:
  when every channel decays by at most ``e^-FACTORED_MAX_RANGE`` over a block of ``_FACTORED_BLOCK`` tokens
  (GLA's and RWKV's usual gates), the scores are one matmul ``(q e^b) (k e^-b)^T`` per block (the factors stay
  below ``e^FACTORED_MAX_RANGE``, far from float32's overflow); otherwise blocks of ``_BLOCK`` tokens form the
  decay between every pair (i, j) in log space, ``exp(b_i - b_j)`` (``b`` the in-block cumulative log-decay),
  so no factor ever exceeds 1 however strong the decay, at the cost of a ``[.., _BLOCK, _BLOCK, K]`` tensor.
  Checking the decays costs one reduction and a host sync, skipped under ``torch.compile`` (pairwise form).
- :func:`gla_step`: one token with an explicit state, for step-by-step inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hybriddsl.kernels.checks import compute_dtype

# Block length of the PyTorch path: the pairwise log-space decay tensor is [.., _BLOCK, _BLOCK, K],
# i.e. _BLOCK times the size of q, which bounds its memory; 16 keeps it small.
_BLOCK = 16
# The factored form: blocks of 64 tokens, taken when no channel's log-decay over a block exceeds 30 in magnitude
# (factors up to e^30 ~ 1e13). Measured on 1 thread at (B1, T2048, H4, K V 256): ~6x faster fwd, ~5x fwd+bwd.
_FACTORED_BLOCK = 64
FACTORED_MAX_RANGE = 30.0


def gla_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    u: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The definition, a float32 loop over time.

    q, k: [B, T, H, K]; v: [B, T, H, V]; g: [B, T, H, K] or [B, T, H]; u: [H, K] or None;
    initial_state: [B, H, K, V]. Returns o: [B, T, H, V] (input dtype) and the final state
    [B, H, K, V] float32 (or None).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    qf, kf, vf = q.float(), k.float(), v.float()
    gf = g.float()
    if gf.dim() == 3:
        gf = gf.unsqueeze(-1).expand(B, T, H, K)
    S = q.new_zeros(B, H, K, V, dtype=torch.float32)
    if initial_state is not None:
        S = S + initial_state.float()
    o = []
    for t in range(T):
        kv = kf[:, t, :, :, None] * vf[:, t, :, None, :]  # [B, H, K, V]
        if u is None:
            S = gf[:, t].exp()[..., None] * S + kv
            o.append(torch.einsum("bhk,bhkv->bhv", qf[:, t], S) * scale)
        else:
            read = torch.einsum("bhk,bhkv->bhv", qf[:, t], S)
            bonus = (qf[:, t] * u.float() * kf[:, t]).sum(-1, keepdim=True) * vf[:, t]
            o.append((read + bonus) * scale)
            S = gf[:, t].exp()[..., None] * S + kv
    out = torch.stack(o, dim=1).to(q.dtype) if T > 0 else v.new_zeros(B, 0, H, V)
    return out, (S if output_final_state else None)


def gla_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    u: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Blocked PyTorch GLA (same shapes and results as :func:`gla_naive`), differentiable; computes in
    float32 (float64 for float64 inputs) and returns the final state in that dtype.

    Inside a block with in-block cumulative log-decay ``b`` (and ``bq = b``, or ``b - g`` with the bonus, since
    RWKV-6 reads the state before the current token)::

        A[i, j] = sum_k q_ik k_jk exp(bq_ik - b_jk)      j <= i  (j < i with u; u adds the diagonal)
        o_blk   = scale * (A v + (q * exp(bq)) S_start)
        S_end   = exp(b_last) * S_start + (k * exp(b_last - b))^T v

    ``A`` is one matmul ``(q e^bq) (k e^-b)^T`` per block of ``_FACTORED_BLOCK`` tokens when every channel's
    decay over a block stays within ``e^-FACTORED_MAX_RANGE``; otherwise it is formed pairwise in blocks of
    ``_BLOCK`` tokens, every exponent <= 0, so the path is safe for any decay strength.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    dtype = q.dtype
    ct = compute_dtype(q)
    c = _BLOCK
    N = max(1, -(-T // c))
    gf = g.to(ct)
    if gf.dim() == 3:
        gf = gf.unsqueeze(-1).expand(B, T, H, K)

    def blocks(x: torch.Tensor, c: int, N: int) -> torch.Tensor:  # [B, T, H, D] -> [B, H, N, c, D] float32
        x = F.pad(x.to(ct), (0, 0, 0, 0, 0, N * c - T))  # zero q/k/v/g in the padding: no effect
        return x.reshape(B, N, c, H, -1).permute(0, 3, 1, 2, 4)

    factored = False
    if not torch.compiler.is_compiling() and T > 1:
        cf = _FACTORED_BLOCK
        Nf = max(1, -(-T // cf))
        gb = blocks(gf, cf, Nf)
        b = gb.cumsum(-2)
        # the largest in-block decay range (b decreases from 0): the k factor e^-b is at most e^range
        factored = bool((-b[..., -1, :]).max() <= FACTORED_MAX_RANGE)
        if factored:
            c, N = cf, Nf
    if not factored:
        gb = blocks(gf, c, N)
        b = gb.cumsum(-2)  # in-block cumulative log-decay [B, H, N, c, K]
    qb_, kb, vb = blocks(q, c, N), blocks(k, c, N), blocks(v, c, N)
    bq = b if u is None else b - gb
    idx = torch.arange(c, device=q.device)
    mask = idx[:, None] >= idx[None, :] if u is None else idx[:, None] > idx[None, :]
    q_dec = qb_ * bq.exp()  # q e^bq, every factor <= 1: also reads the state entering the block
    if factored:  # A = (q e^bq)(k e^-b)^T, masked after the matmul (masked entries are finite, <= e^range)
        A = (q_dec @ (kb * (-b).exp()).transpose(-1, -2)).masked_fill(~mask, 0.0)
    else:
        # Pairwise decays in log space; masked pairs get -inf so their exponent never overflows.
        expo = bq[..., :, None, :] - b[..., None, :, :]  # [B, H, N, c, c, K]
        decay = torch.where(mask[:, :, None], expo, torch.full_like(expo, float("-inf"))).exp()
        A = (qb_[..., :, None, :] * kb[..., None, :, :] * decay).sum(-1)  # [B, H, N, c, c]
    if u is not None:
        bonus = (qb_ * u.to(ct)[None, :, None, None, :] * kb).sum(-1)  # [B, H, N, c]
        A = A + torch.diag_embed(bonus)
    o = A @ vb  # intra-block part

    # Inter-block: state passing in a loop over blocks (N = T / 16 steps of [K, V] updates).
    b_last = b[..., -1, :]  # [B, H, N, K]
    k_end = kb * (b_last[..., None, :] - b).exp()
    contrib = k_end.transpose(-1, -2) @ vb  # [B, H, N, K, V]
    S = q.new_zeros(B, H, K, V, dtype=ct)
    if initial_state is not None:
        S = S + initial_state.to(ct)
    starts = []
    for n in range(N):
        starts.append(S)
        S = b_last[:, :, n].exp()[..., None] * S + contrib[:, :, n]
    S_start = torch.stack(starts, dim=2)  # [B, H, N, K, V]
    o = o + q_dec @ S_start
    o = (o * scale).permute(0, 2, 3, 1, 4).reshape(B, N * c, H, V)[:, :T]
    return o.to(dtype), (S if output_final_state else None)


def gla_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    u: torch.Tensor | None = None,
    scale: float | None = None,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token. q, k: [B, H, K]; v: [B, H, V]; g: [B, H, K] or [B, H]; u: [H, K] or None;
    state: [B, H, K, V] float32 or None (zeros). Returns o: [B, H, V] (input dtype) and the new
    state [B, H, K, V] float32."""
    B, H, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    qf, kf, vf, gf = q.float(), k.float(), v.float(), g.float()
    if gf.dim() == 2:
        gf = gf.unsqueeze(-1).expand(B, H, K)
    S = q.new_zeros(B, H, K, V, dtype=torch.float32) if state is None else state.float()
    new = gf.exp()[..., None] * S + kf[..., :, None] * vf[..., None, :]
    if u is None:
        o = torch.einsum("bhk,bhkv->bhv", qf, new)
    else:
        bonus = (qf * u.float() * kf).sum(-1, keepdim=True) * vf
        o = torch.einsum("bhk,bhkv->bhv", qf, S) + bonus
    return (o * scale).to(q.dtype), new


# Names before the <family>_naive / <family>_torch scheme (issue 13), kept for callers on other branches.
naive_gla, chunk_gla_torch = gla_naive, gla_torch
