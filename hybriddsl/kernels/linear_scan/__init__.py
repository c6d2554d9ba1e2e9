"""Diagonal linear scan ``h_t = a_t * h_{t-1} + b_t`` (the recurrence of Griffin's RG-LRU).

Dispatches to the Triton kernels (CUDA, or forced under ``TRITON_INTERPRET=1``) or to the chunked PyTorch loop
with a hand-written backward of :mod:`hybriddsl.kernels.linear_scan.reference` (``linear_scan_loop``).
"""

from __future__ import annotations

import torch

from hybriddsl.kernels.checks import check_device, check_state, empty_scan
from hybriddsl.kernels.dispatch import use_triton
from hybriddsl.kernels.linear_scan.reference import (
    linear_scan_loop,
    linear_scan_naive,
    linear_scan_step,
    linear_scan_torch,
)

__all__ = ["linear_scan", "linear_scan_step", "linear_scan_naive", "linear_scan_loop", "linear_scan_torch"]


def _check(a: torch.Tensor, b: torch.Tensor, initial_state: torch.Tensor | None) -> None:
    if a.dim() != 3:
        raise ValueError(f"linear_scan: a must be [B, T, D], got shape {tuple(a.shape)}")
    if a.shape != b.shape:
        raise ValueError(f"linear_scan: a {tuple(a.shape)} and b {tuple(b.shape)} must have the same shape")
    if not (a.is_floating_point() and b.is_floating_point()):
        raise ValueError(f"linear_scan: a and b must be floating point, got {a.dtype} and {b.dtype}")
    check_state("linear_scan", "initial_state", initial_state, (a.shape[0], a.shape[2]), layout="[B, D]")
    check_device("linear_scan", {"a": a, "b": b, "initial_state": initial_state})


def linear_scan(
    a: torch.Tensor,
    b: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run ``h_t = a_t * h_{t-1} + b_t`` over time, elementwise in channels.

    Args:
        a: decays ``[B, T, D]`` (Griffin: a_t = sigma(Λ)^(c r_t), in (0, 1)).
        b: inputs ``[B, T, D]``.
        initial_state: ``h_{-1}`` ``[B, D]`` (any float dtype; zeros when None).
        output_final_state: also return ``h_{T-1}``, e.g. to continue with :func:`linear_scan_step`.

    Returns:
        ``h`` ``[B, T, D]`` in ``b``'s dtype, and the final state ``[B, D]`` float32 (None unless
        ``output_final_state``). All accumulation is float32.

    Example:
        >>> a, b = torch.full((1, 3, 2), 0.5), torch.ones(1, 3, 2)
        >>> linear_scan(a, b)[0][0, :, 0]
        tensor([1.0000, 1.5000, 1.7500])
    """
    _check(a, b, initial_state)
    if a.shape[1] == 0:
        return empty_scan(b.shape, b, initial_state, (a.shape[0], a.shape[2]), output_final_state)
    if use_triton(a, b, initial_state, name="linear_scan"):
        from hybriddsl.kernels.linear_scan.triton import linear_scan_triton

        h, ht = linear_scan_triton(a, b, initial_state)
    elif torch.compiler.is_compiling():  # the loop's out= into strided views does not trace; the doubling scan does
        h, ht = linear_scan_torch(a, b, initial_state)
    else:
        h, ht = linear_scan_loop(a, b, initial_state)
    return h, (ht if output_final_state else None)
