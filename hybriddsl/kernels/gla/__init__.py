"""Chunked gated linear attention: GLA (per-key decay), Mamba-2/SSD (scalar decay), RWKV-6 (bonus u).

Math (Yang et al. 2024, GLA; Peng et al. 2024, RWKV-6 "Eagle and Finch")::

    S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T
    o_t = scale * q_t^T S_t                                 (u is None)
    o_t = scale * (q_t^T S_{t-1} + ((q_t * u) . k_t) v_t)    (with the RWKV-6 bonus u)

:func:`chunk_gla` runs the Triton kernels (``triton.py``) on CUDA and the blocked PyTorch path
(``reference.py``) elsewhere, as chosen by :func:`hybriddsl.kernels.dispatch.use_triton`; a scalar decay per
head without ``u`` (simple GLA) goes to the SSD kernels, :func:`hybriddsl.kernels.ssd.ssd`.
:func:`gla_step` advances one token (inference after a chunked prefill).
"""

from __future__ import annotations

import torch

from hybriddsl.kernels.checks import CHUNK_SIZES, check_chunk, check_device, check_state, empty_scan
from hybriddsl.kernels.dispatch import use_triton
from hybriddsl.kernels.gla.reference import gla_naive, gla_torch
from hybriddsl.kernels.gla.reference import gla_step as _gla_step_ref

__all__ = ["chunk_gla", "gla_step", "gla_naive", "gla_torch", "MAX_CHUNK"]

MAX_CHUNK = CHUNK_SIZES[-1]  # the largest chunk the Triton kernels tile (chunk_size: a power of two in [16, 64])


def _check(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    u: torch.Tensor | None,
    state: torch.Tensor | None,
    lead: int,
    name: str,
) -> None:
    """Shape checks shared by the chunked (lead = 2: B, T) and one-token (lead = 1: B) calls."""
    n = lead + 2
    if q.dim() != n or k.shape != q.shape:
        raise ValueError(
            f"{name}: q and k must both be {n}-D of the same shape, got {tuple(q.shape)}, {tuple(k.shape)}"
        )
    if v.dim() != n or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"{name}: v must be {tuple(q.shape[:-1])} + (V,), got {tuple(v.shape)}")
    if g.shape != q.shape and g.shape != q.shape[:-1]:
        raise ValueError(
            f"{name}: g must be {tuple(q.shape)} (per-key decay) or {tuple(q.shape[:-1])} "
            f"(scalar decay per head), got {tuple(g.shape)}"
        )
    H, K = q.shape[-2], q.shape[-1]
    if u is not None and u.shape != (H, K):
        raise ValueError(f"{name}: u must be [H, K] = {(H, K)}, got {tuple(u.shape)}")
    check_state(name, "state", state, (q.shape[0], H, K, v.shape[-1]))
    check_device(name, {"q": q, "k": k, "v": v, "g": g, "u": u, "state": state})


def chunk_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    u: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked gated linear attention over a whole sequence.

    Args:
        q, k: [B, T, H, K]. v: [B, T, H, V].
        g: log-decay (<= 0), [B, T, H, K] (per key dim: GLA, RWKV-6) or [B, T, H] (per head: Mamba-2).
        u: optional RWKV-6 bonus [H, K]; with it o_t reads the state before token t plus the bonus.
        scale: multiplies q (default K ** -0.5).
        initial_state: [B, H, K, V] (float32 preferred) or None (zeros).
        output_final_state: also return the state after the last token.
        chunk_size: tile length of the Triton kernels (16, 32 or 64), checked on every path; the PyTorch path
            does not depend on it.

    Returns:
        o: [B, T, H, V] in the input dtype; final state [B, H, K, V] float32, or None.
    """
    _check(q, k, v, g, u, initial_state, 2, "chunk_gla")
    check_chunk("chunk_gla", chunk_size, MAX_CHUNK)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    B, T, H, K = q.shape
    if T == 0 or B == 0:  # nothing to scan (the chunked paths size their tiles and blocks by T and B)
        return empty_scan(v.shape, v, initial_state, (B, H, K, v.shape[-1]), output_final_state)
    if g.dim() == 3 and u is None:  # a scalar decay per head: the SSD kernels (one masked matmul per chunk)
        from hybriddsl.kernels.ssd import ssd

        o, state = ssd(q, k, v, g, scale, initial_state, output_final_state, chunk_size)
        return o.to(q.dtype), state
    if use_triton(q, k, v, g, u, initial_state, name="chunk_gla"):
        from hybriddsl.kernels.gla.triton import gla_triton

        return gla_triton(q, k, v, g, u, scale, initial_state, output_final_state, chunk_size)
    return gla_torch(q, k, v, g, u, scale, initial_state, output_final_state)


def gla_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    u: torch.Tensor | None = None,
    scale: float | None = None,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token of :func:`chunk_gla` with an explicit state (PyTorch; a single token is memory-bound).

    q, k: [B, H, K]; v: [B, H, V]; g: [B, H, K] or [B, H]; u: [H, K] or None;
    state: [B, H, K, V] float32 or None (zeros). Returns o: [B, H, V] (input dtype) and the new
    state [B, H, K, V] float32.
    """
    _check(q, k, v, g, u, state, 1, "gla_step")
    return _gla_step_ref(q, k, v, g, u, scale, state)
