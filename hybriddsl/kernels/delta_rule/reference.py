"""PyTorch reference for the (gated) delta rule.

Math (Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule over Sequence Length",
arXiv:2406.06484; Yang et al. 2025, "Gated Delta Networks", arXiv:2412.06464), per batch and head,
with the state ``S`` a ``[K, V]`` matrix and ``alpha_t = exp(g_t)`` (``alpha_t = 1`` without ``g``):

    S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,      o_t = scale * S_t^T q_t.

Three functions:

- :func:`delta_rule_naive`: the definition, a float32 Python loop over time (written to be read).
- :func:`delta_rule_torch`: the fast path used on CPU. Write the update as
  ``S_t = alpha_t S_{t-1} + k_t u'_t^T`` with ``u'_t = beta_t (v_t - alpha_t S_{t-1}^T k_t)``. Inside a
  chunk of ``C`` steps starting from state ``S_0``, with ``G_i`` the cumulative log decay in the chunk
  and ``D_ij = exp(G_i - G_j)`` (i >= j), the ``u'`` solve the unit lower-triangular system
  ``(I + L) U' = beta V - beta e^G K S_0`` with ``L_ij = beta_i D_ij k_i.k_j`` (i > j). So with
  ``A = (I + L)^{-1}`` (the UT transform of the WY representation), ``u = A (beta V)`` and
  ``w = A (beta e^G K)`` are computed for all chunks at once, and only
  ``U' = u - w S_0`` and ``S_C = e^{G_C} S_0 + (e^{G_C - G} K)^T U'`` run chunk after chunk (T / C steps,
  two matmuls each); ``o = scale (e^G Q S_0 + (QK^T ⊙ D ⊙ causal) U')`` is again batched over the chunks.
  Every exponent is ``G_i - G_j <= 0`` (masked to 0 above the diagonal before ``exp``), so nothing
  overflows however long the sequence. The backward is hand-written
  (:mod:`hybriddsl.kernels.delta_rule.chunked`): one reverse pass over the chunks, the rest batched.
- :func:`delta_rule_step`: one token with an explicit state, for step-by-step inference.
"""

from __future__ import annotations

import torch

from hybriddsl.kernels.checks import compute_dtype
from hybriddsl.kernels.delta_rule.chunked import chunked_delta_rule_fn


def delta_rule_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition, looped over time in float32.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; beta: ``[B, T, H]``; g: log decays ``[B, T, H]``
        or None; scale: defaults to ``K ** -0.5``; initial_state: ``[B, H, K, V]`` or None (zeros).

    Returns:
        ``o`` ``[B, T, H, V]`` float32 and the final state ``[B, H, K, V]`` float32.
    """
    cd = compute_dtype(q)
    bsz, t_len, h, dk = q.shape
    scale = dk**-0.5 if scale is None else scale
    q, k, v, beta = q.to(cd), k.to(cd), v.to(cd), beta.to(cd)
    s = q.new_zeros(bsz, h, dk, v.shape[-1]) if initial_state is None else initial_state.to(cd)
    eye = torch.eye(dk, dtype=cd)
    out = []
    for t in range(t_len):
        kt, vt, bt = k[:, t], v[:, t], beta[:, t, :, None, None]
        alpha = 1.0 if g is None else torch.exp(g[:, t].to(cd))[..., None, None]
        # S_t = alpha (I - beta k k^T) S_{t-1} + beta k v^T, literally
        proj = eye - bt * kt[..., :, None] * kt[..., None, :]
        s = alpha * (proj @ s) + bt * kt[..., :, None] * vt[..., None, :]
        out.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t], s))
    return torch.stack(out, dim=1), s


def delta_rule_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked (WY / UT transform) delta rule in PyTorch, differentiable (a hand-written backward,
    :mod:`hybriddsl.kernels.delta_rule.chunked`).

    Shapes as :func:`delta_rule_naive`. Returns ``o`` ``[B, T, H, V]`` in ``v``'s dtype and the final
    state ``[B, H, K, V]`` float32 (float64 for float64 inputs).
    """
    cd = compute_dtype(q)
    bsz, t_len, h, dk = q.shape
    dv = v.shape[-1]
    scale = dk**-0.5 if scale is None else scale
    c = chunk_size
    n = -(-t_len // c)
    pad = n * c - t_len

    def chunks_first(x: torch.Tensor) -> torch.Tensor:
        # [B, T, H, ...] -> [N, B*H, C, ...]; padded steps have k = v = beta = g = 0: identity updates
        x = x.to(cd)
        if pad:
            x = torch.nn.functional.pad(x, (0, 0) * (x.dim() - 2) + (0, pad))
        x = x.reshape(bsz, n, c, h, *x.shape[3:]).transpose(2, 3).transpose(0, 1)
        return x.reshape(n, bsz * h, c, *x.shape[4:]).contiguous()

    s0 = q.new_zeros(bsz, h, dk, dv, dtype=cd) if initial_state is None else initial_state.to(cd)
    o, s = chunked_delta_rule_fn(
        chunks_first(q) * scale,
        chunks_first(k),
        chunks_first(v),
        chunks_first(beta),
        None if g is None else chunks_first(g),
        s0.reshape(bsz * h, dk, dv),
    )
    o = o.reshape(n, bsz, h, c, dv).permute(1, 0, 3, 2, 4).reshape(bsz, n * c, h, dv)[:, :t_len]
    return o.to(v.dtype), s.reshape(bsz, h, dk, dv)


def delta_rule_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token: q, k ``[B, H, K]``, v ``[B, H, V]``, beta and g ``[B, H]``, state ``[B, H, K, V]``.

    Returns ``o`` ``[B, H, V]`` in ``v``'s dtype and the new state ``[B, H, K, V]`` float32
    (float64 for float64 inputs).
    """
    cd = compute_dtype(q)
    bsz, h, dk = q.shape
    scale = dk**-0.5 if scale is None else scale
    q, k, v, beta = q.to(cd), k.to(cd), v.to(cd), beta.to(cd)
    s = q.new_zeros(bsz, h, dk, v.shape[-1]) if state is None else state.to(cd)
    if g is not None:
        s = torch.exp(g.to(cd))[..., None, None] * s
    # alpha (I - beta k k^T) S + beta k v^T = S' + beta k (v - S'^T k)^T with S' = alpha S
    err = v - torch.einsum("bhk,bhkv->bhv", k, s)
    s = s + beta[..., None, None] * k[..., :, None] * err[..., None, :]
    o = scale * torch.einsum("bhk,bhkv->bhv", q, s)
    return o.to(v.dtype), s


# Names before the <family>_naive / <family>_torch scheme (issue 13), kept for callers on other branches.
naive_delta_rule, chunked_delta_rule = delta_rule_naive, delta_rule_torch
