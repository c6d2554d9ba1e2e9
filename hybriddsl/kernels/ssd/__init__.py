"""SSD: gated linear attention with a scalar decay per head (Mamba-2; GLA / simple GLA with per-head decays).

Math (Dao & Gu 2024, "Transformers are SSMs", arXiv:2405.21060), per batch and head ``h``, with head ``h``
reading the q/k group ``h // (H / G)`` (Mamba-2's B/C groups; ``G = H`` for plain multi-head)::

    S_t = exp(g_t) S_{t-1} + k_t v_t^T          g_t <= 0: one log-decay per token and head
    o_t = scale * q_t^T S_t

:func:`ssd` runs the Triton kernels (``triton.py``: :func:`ssd_triton`) when
:func:`hybriddsl.kernels.dispatch.use_triton` says so, else the chunked PyTorch path :func:`ssd_torch`.
:func:`ssd_naive` is the loop-over-time definition; :func:`ssd_step` advances one token.

Example (Mamba-2: q = C, k = B, v = Δ x, g = Δ A)::

    o, S = ssd(C, B, dt[..., None] * x, dt * A, scale=1.0, output_final_state=True)   # prefill
    o1, S = ssd_step(C1, B1, dt1[..., None] * x1, dt1 * A, scale=1.0, state=S)         # decode
"""

from __future__ import annotations

import torch

from hybriddsl.kernels.checks import CHUNK_SIZES, check_floating, check_state
from hybriddsl.kernels.dispatch import use_triton
from hybriddsl.kernels.ssd.reference import ssd_naive, ssd_torch
from hybriddsl.kernels.ssd.reference import ssd_step as _ssd_step_ref

__all__ = ["ssd", "ssd_step", "ssd_naive", "ssd_torch", "CHUNK_SIZES"]


def _check(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    state: torch.Tensor | None,
    lead: int,
    name: str,
) -> None:
    """Shape, dtype and device checks shared by the chunked (lead = 2: B, T) and one-token (lead = 1: B) calls."""
    n = lead + 2
    lay = "[B, T, " if lead == 2 else "[B, "
    if q.dim() != n or k.shape != q.shape:
        raise ValueError(
            f"{name}: q and k must both be {lay}G, K] of the same shape, got {tuple(q.shape)}, {tuple(k.shape)}"
        )
    if v.dim() != n or v.shape[:lead] != q.shape[:lead]:
        raise ValueError(
            f"{name}: v must be {lay}H, V] with q's leading dims {tuple(q.shape[:lead])}, got {tuple(v.shape)}"
        )
    G, H = q.shape[-2], v.shape[-2]
    if G < 1 or H % G:
        raise ValueError(f"{name}: the q/k groups G = {G} must divide the heads of v, H = {H}")
    if g.shape != v.shape[:-1]:
        raise ValueError(
            f"{name}: g must be {lay}H] = {tuple(v.shape[:-1])} (one log-decay per head), got {tuple(g.shape)}"
        )
    check_floating(name, {"q": q, "k": k, "v": v, "g": g, "state": state})
    for label, t in (("k", k), ("v", v), ("g", g), ("state", state)):
        if t is not None and t.device != q.device:
            raise ValueError(f"{name}: {label} is on {t.device} but q is on {q.device} (all inputs on one device)")
    check_state(name, "initial_state" if lead == 2 else "state", state, (q.shape[0], H, q.shape[-1], v.shape[-1]))


def ssd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SSD over a whole sequence, chunk by chunk.

    Args:
        q, k: [B, T, G, K] (G groups, each shared by H / G heads). v: [B, T, H, V].
        g: log-decay (<= 0) [B, T, H], one per token and head.
        scale: multiplies q (default K ** -0.5; Mamba-2 uses 1).
        initial_state: [B, H, K, V] (float32 preferred) or None (zeros).
        output_final_state: also return the state after the last token.
        chunk_size: 16, 32 or 64, the tile length of both the Triton kernels and the PyTorch path.

    Returns:
        o: [B, T, H, V] in v's dtype (empty for T = 0); final state [B, H, K, V] float32 (float64 for
        float64 inputs), or None.
    """
    _check(q, k, v, g, initial_state, 2, "ssd")
    if chunk_size not in CHUNK_SIZES:
        raise ValueError(f"ssd: chunk_size must be one of {CHUNK_SIZES}, got {chunk_size}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if q.shape[1] > 0 and use_triton(q, k, v, g, initial_state, name="ssd"):
        from hybriddsl.kernels.ssd.triton import ssd_triton

        return ssd_triton(q, k, v, g, scale, initial_state, output_final_state, chunk_size)
    if q.shape[0] == 0:  # an empty batch: the definition handles it; the blocked path sizes blocks by the batch
        return ssd_naive(q, k, v, g, scale, initial_state, output_final_state)
    return ssd_torch(q, k, v, g, scale, initial_state, output_final_state, chunk_size)


def ssd_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token of :func:`ssd` with an explicit state (PyTorch on every device: one token is memory-bound).

    q, k: [B, G, K]; v: [B, H, V]; g: [B, H]; state: [B, H, K, V] or None (zeros). Returns o: [B, H, V]
    (v's dtype) and the new state [B, H, K, V] float32 (float64 for float64 inputs).
    """
    _check(q, k, v, g, state, 1, "ssd_step")
    return _ssd_step_ref(q, k, v, g, scale, state)
