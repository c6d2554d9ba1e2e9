"""Fused residual add + RMSNorm/LayerNorm: ``r = x + residual; y = norm(r) * weight + bias``.

Dispatches to the Triton kernels (CUDA, or forced under ``TRITON_INTERPRET=1``) or to
``F.rms_norm`` / ``F.layer_norm`` (:mod:`hybriddsl.kernels.add_norm.reference`).
"""

from __future__ import annotations

import torch

from hybriddsl.kernels.add_norm.reference import add_norm_naive, add_norm_torch
from hybriddsl.kernels.checks import check_device, check_floating
from hybriddsl.kernels.dispatch import use_triton

__all__ = ["add_norm", "add_norm_torch", "add_norm_naive", "MAX_TRITON_DIM"]

# One row lives in registers as float32: beyond this the kernel would spill, so the reference runs.
MAX_TRITON_DIM = 16384


def _check(x, residual, weight, bias, norm) -> None:
    if norm not in ("rms", "layer"):
        raise ValueError(f"add_norm: norm must be 'rms' or 'layer', got {norm!r}")
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError(f"add_norm: x must be [..., D] with D >= 1, got shape {tuple(x.shape)}")
    check_floating("add_norm", {"x": x})
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"add_norm: residual {tuple(residual.shape)} must match x {tuple(x.shape)}")
    check_device("add_norm", {"x": x, "residual": residual, "weight": weight, "bias": bias})
    d = x.shape[-1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.shape != (d,):
            raise ValueError(f"add_norm: {name} must be [D] = [{d}], got {tuple(t.shape)}")


def add_norm(
    x: torch.Tensor,
    residual: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    norm: str = "rms",
    residual_in_fp32: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual add then normalization, in one pass over memory.

    Args:
        x: block output ``[..., D]``.
        residual: the residual stream ``[..., D]`` (None: ``r = x``, e.g. the first block).
        weight: ``[D]`` scale (None: no scale), e.g. ``nn.RMSNorm(D).weight``; it gets a gradient.
        bias: ``[D]`` shift (None: no shift), e.g. ``nn.LayerNorm(D).bias``.
        eps: added to the mean square (``"rms"``) or the biased variance (``"layer"``).
        norm: ``"rms"`` (RMSNorm) or ``"layer"`` (LayerNorm).
        residual_in_fp32: return ``r`` in float32 (else in x's dtype).

    Returns:
        ``(y, r)``: ``y = norm(r) * weight + bias`` ``[..., D]`` in x's dtype, and
        ``r = x + residual`` ``[..., D]`` (float32 if ``residual_in_fp32`` else x's dtype).
        Both are differentiable: the gradient reaching ``r`` through the next residual add flows
        back into ``x`` and ``residual``.

    Example:
        >>> y, r = add_norm(torch.ones(2, 4), torch.ones(2, 4))
        >>> r[0], y[0]
        (tensor([2., 2., 2., 2.]), tensor([1.0000, 1.0000, 1.0000, 1.0000]))
    """
    _check(x, residual, weight, bias, norm)
    args = (x, residual, weight, bias)
    # No rows: nothing to launch; the PyTorch path returns the empty y and r (the same on every device).
    if x.numel() > 0 and x.shape[-1] <= MAX_TRITON_DIM and use_triton(*args, name="add_norm"):
        from hybriddsl.kernels.add_norm.triton import add_norm_triton

        return add_norm_triton(x, residual, weight, bias, eps, norm, residual_in_fp32)
    return add_norm_torch(x, residual, weight, bias, eps, norm, residual_in_fp32)
