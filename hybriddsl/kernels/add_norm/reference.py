"""PyTorch reference for the fused residual add + normalization of pre-norm blocks.

    r = x + residual                       (r = x without a residual)
    y = norm(r) * weight + bias            norm = RMSNorm or LayerNorm over the last dim D

RMSNorm (Zhang & Sennrich 2019, arXiv:1910.07467): r / sqrt(mean(r^2) + eps).
LayerNorm (Ba et al. 2016, arXiv:1607.06450): (r - mean(r)) / sqrt(var(r) + eps), biased variance.
``r`` is returned too: it is the residual stream the next block adds to (Megatron / flash-attn's
``dropout_add_layer_norm`` / fla's ``prenorm`` pattern).

Dtypes: ``r`` is rounded to its output dtype (float32 with ``residual_in_fp32``, else x's dtype)
before it is normalized, so that ``y`` is exactly the norm of the returned ``r``; the norm runs in
float32 and ``y`` is cast to x's dtype.

- :func:`add_norm_naive`: the formulas written out in float32 (the readable definition).
- :func:`add_norm_torch`: the fast path used on CPU: ``F.rms_norm`` / ``F.layer_norm`` of r.

There is no ``*_step``: the op has no state across tokens, so one token is just ``D``-vectors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def residual_sum(x: torch.Tensor, residual: torch.Tensor | None, residual_in_fp32: bool) -> torch.Tensor:
    """``r = x + residual`` summed in float32 and rounded to float32 or x's dtype.

    (float64 inputs stay float64 throughout, so that gradcheck can run on this path.)
    """
    acc = _acc_dtype(x)
    r = x.to(acc) if residual is None else x.to(acc) + residual.to(acc)
    return r if residual_in_fp32 else r.to(x.dtype)


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def add_norm_naive(
    x: torch.Tensor,
    residual: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    norm: str = "rms",
    residual_in_fp32: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition written out in float32; shapes as in :func:`add_norm_torch`."""
    r = residual_sum(x, residual, residual_in_fp32)
    rf = r.to(_acc_dtype(x))
    if norm == "rms":
        y = rf / torch.sqrt(rf.pow(2).mean(-1, keepdim=True) + eps)
    else:
        centered = rf - rf.mean(-1, keepdim=True)
        y = centered / torch.sqrt(centered.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.to(rf.dtype)
    if bias is not None:
        y = y + bias.to(rf.dtype)
    return y.to(x.dtype), r


def add_norm_torch(
    x: torch.Tensor,
    residual: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    norm: str = "rms",
    residual_in_fp32: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``F.rms_norm`` / ``F.layer_norm`` of ``r = x + residual`` (differentiable by autograd).

    Args:
        x, residual: ``[..., D]``.
        weight, bias: ``[D]`` or None.
        eps: added to the mean square (rms) or variance (layer).
        norm: ``"rms"`` or ``"layer"``.
        residual_in_fp32: keep ``r`` in float32 (else x's dtype).

    Returns:
        ``y`` ``[..., D]`` in x's dtype and ``r`` ``[..., D]``.
    """
    r = residual_sum(x, residual, residual_in_fp32)
    rf, d = r.to(_acc_dtype(x)), (x.shape[-1],)
    w = None if weight is None else weight.to(rf.dtype)
    if norm == "rms":
        y = F.rms_norm(rf, d, w, eps)
        if bias is not None:
            y = y + bias.to(rf.dtype)
    else:
        y = F.layer_norm(rf, d, w, None if bias is None else bias.to(rf.dtype), eps)
    return y.to(x.dtype), r


# Names before the <family>_naive / <family>_torch scheme (issue 13), kept for callers on other branches.
naive_add_norm, add_norm_reference = add_norm_naive, add_norm_torch
