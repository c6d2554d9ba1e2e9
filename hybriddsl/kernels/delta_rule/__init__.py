"""Chunked delta rule and gated delta rule (DeltaNet, Gated DeltaNet).

``S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T``, ``o_t = scale S_t^T q_t`` with
``alpha_t = exp(g_t)`` (1 without ``g``). Dispatches to the Triton kernels (CUDA, or forced under
``TRITON_INTERPRET=1``) or to the chunked PyTorch path of :mod:`hybriddsl.kernels.delta_rule.reference`.
"""

from __future__ import annotations

import torch

from hybriddsl.kernels.checks import check_chunk, check_device, check_floating, check_state, empty_scan
from hybriddsl.kernels.delta_rule.reference import delta_rule_naive, delta_rule_step, delta_rule_torch
from hybriddsl.kernels.dispatch import use_triton

__all__ = ["chunk_delta_rule", "delta_rule_step", "delta_rule_naive", "delta_rule_torch"]


def _check(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None,
    initial_state: torch.Tensor | None,
    chunk_size: int,
) -> None:
    name = "chunk_delta_rule"
    if q.dim() != 4:
        raise ValueError(f"{name}: q must be [B, T, H, K], got shape {tuple(q.shape)}")
    bsz, t_len, h, dk = q.shape
    if k.shape != q.shape:
        raise ValueError(f"{name}: k {tuple(k.shape)} must have q's shape {tuple(q.shape)}")
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"{name}: v must be [B, T, H, V] = [{bsz}, {t_len}, {h}, V], got {tuple(v.shape)}")
    if beta.shape != q.shape[:3]:
        raise ValueError(f"{name}: beta must be [B, T, H] = {tuple(q.shape[:3])}, got {tuple(beta.shape)}")
    if g is not None and g.shape != q.shape[:3]:
        raise ValueError(f"{name}: g must be [B, T, H] = {tuple(q.shape[:3])}, got {tuple(g.shape)}")
    check_floating(name, {"q": q, "k": k, "v": v, "beta": beta, "g": g})
    check_state(name, "initial_state", initial_state, (bsz, h, dk, v.shape[-1]))
    check_device(name, {"q": q, "k": k, "v": v, "beta": beta, "g": g, "initial_state": initial_state})
    check_chunk(name, chunk_size, None)


def chunk_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the (gated) delta rule over a sequence, chunk by chunk.

    Args:
        q, k: ``[B, T, H, K]``, already L2-normalized by the caller (not normalized here).
        v: ``[B, T, H, V]``.
        beta: writing strengths ``[B, T, H]`` in (0, 1).
        g: log decays ``[B, T, H]`` (<= 0; ``alpha_t = exp(g_t)``) for the gated delta rule, or None.
        scale: output scale, ``K ** -0.5`` when None.
        initial_state: ``[B, H, K, V]`` (any float dtype; zeros when None).
        output_final_state: also return the state after the last step, e.g. to go on with
            :func:`delta_rule_step`.
        chunk_size: steps per chunk, a power of two >= 16 (the Triton tile), checked on every path.

    Returns:
        ``o`` ``[B, T, H, V]`` in ``v``'s dtype and the final state ``[B, H, K, V]`` float32 (None
        unless ``output_final_state``). States and decays are float32 internally.

    Example:
        >>> q = k = torch.nn.functional.normalize(torch.ones(1, 2, 1, 4), dim=-1)
        >>> v, beta = torch.ones(1, 2, 1, 3), torch.full((1, 2, 1), 0.5)
        >>> chunk_delta_rule(q, k, v, beta, scale=1.0)[0][0, :, 0, 0]
        tensor([0.5000, 0.7500])
    """
    _check(q, k, v, beta, g, initial_state, chunk_size)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    bsz, t_len, h, dk = q.shape
    if t_len == 0 or bsz == 0:  # nothing to scan (the chunked paths size their tiles and blocks by T and B)
        return empty_scan(v.shape, v, initial_state, (bsz, h, dk, v.shape[-1]), output_final_state)
    if use_triton(q, k, v, beta, g, initial_state, name="chunk_delta_rule"):
        from hybriddsl.kernels.delta_rule.triton import delta_rule_triton

        o, ht = delta_rule_triton(q, k, v, beta, g, scale, initial_state, chunk_size)
    else:
        o, ht = delta_rule_torch(q, k, v, beta, g, scale, initial_state, chunk_size)
    return o, (ht if output_final_state else None)
