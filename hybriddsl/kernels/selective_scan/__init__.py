"""Mamba-1 selective scan (Gu & Dao 2023, "Mamba", Alg. 2): the public functions.

:func:`selective_scan` runs the fused Triton kernels (discretization, D skip, z gate, softplus and
bias inside the kernel) when :func:`hybriddsl.kernels.dispatch.use_triton` says so, else a PyTorch
path from :mod:`.reference` (chunked for small states, the plain loop for large ones).
:func:`selective_scan_step` advances one token.

Example::

    y, h = selective_scan(u, delta, A, B, C, D, z, delta_bias, output_final_state=True)  # prefill
    y1, h = selective_scan_step(u1, delta1, A, B1, C1, D, z1, delta_bias, True, h)     # decode
"""

from __future__ import annotations

import torch

from hybriddsl.kernels.checks import check_device, empty_scan, needs_grad
from hybriddsl.kernels.dispatch import use_triton
from hybriddsl.kernels.selective_scan.reference import (
    selective_scan_inference,
    selective_scan_loop,
    selective_scan_naive,
    selective_scan_torch,
)
from hybriddsl.kernels.selective_scan.reference import selective_scan_step as _step_reference

Tensor = torch.Tensor

__all__ = [
    "selective_scan",
    "selective_scan_step",
    "selective_scan_naive",
    "selective_scan_torch",
    "selective_scan_inference",
    "selective_scan_loop",
]


def _check_shape(name: str, t: Tensor | None, shape: tuple[int, ...]) -> None:
    if t is not None and tuple(t.shape) != shape:
        raise ValueError(f"selective_scan: {name} must have shape {list(shape)}, got {list(t.shape)}")


def _check_A(fn: str, A: Tensor, Dm: int) -> int:
    """Check A against u's channel count Dm; returns the state size N."""
    if A.dim() != 2 or A.shape[0] != Dm:
        raise ValueError(f"{fn}: A must be [Dm={Dm}, N], got shape {list(A.shape)}")
    if A.is_complex():
        raise ValueError("selective_scan: complex A is not supported (Mamba-1 real variant only)")
    return A.shape[1]


def _check_args(u: Tensor, tensors: dict[str, tuple[Tensor | None, tuple[int, ...]]]) -> None:
    """Every given tensor has its expected shape (all shapes first), then sits on u's device."""
    for name, (t, shape) in tensors.items():
        _check_shape(name, t, shape)
    check_device("selective_scan", {"u": u} | {name: t for name, (t, _) in tensors.items()})


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Selective scan over a whole sequence (channels-last).

    Args:
        u, delta: [batch, T, Dm] (bf16/fp16/fp32).
        A: [Dm, N] float32, negative (A = -exp(A_log)).
        B, C: [batch, T, N], shared across channels.
        D, delta_bias: [Dm] or None.
        z: [batch, T, Dm] gate or None (y *= silu(z)).
        delta_softplus: apply softplus to ``delta + delta_bias``.
        initial_state: [batch, Dm, N] or None (zeros).
        output_final_state: also return the state after the last token.

    Returns:
        (y [batch, T, Dm] in u's dtype, final state [batch, Dm, N] float32 or None).
    """
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be [batch, T, Dm], got shape {list(u.shape)}")
    batch, T, Dm = u.shape
    N = _check_A("selective_scan", A, Dm)
    _check_args(
        u,
        {
            "delta": (delta, (batch, T, Dm)),
            "B": (B, (batch, T, N)),
            "C": (C, (batch, T, N)),
            "D": (D, (Dm,)),
            "z": (z, (batch, T, Dm)),
            "delta_bias": (delta_bias, (Dm,)),
            "initial_state": (initial_state, (batch, Dm, N)),
        },
    )
    check_device("selective_scan", {"u": u, "A": A})
    if T == 0:
        return empty_scan((batch, 0, Dm), u, initial_state, (batch, Dm, N), output_final_state)
    if use_triton(u, delta, A, B, C, D, z, delta_bias, initial_state, name="selective_scan"):
        from hybriddsl.kernels.selective_scan.triton import selective_scan_triton

        return selective_scan_triton(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, output_final_state
        )
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, output_final_state)
    if torch.compiler.is_compiling():  # a graph: T / 32 chunked steps trace smaller than T per-token ops
        return selective_scan_torch(*args)
    if not needs_grad(u, delta, A, B, C, D, z, delta_bias, initial_state):
        # Inference (torch.no_grad() or no input needing a gradient): one in-place op per token, no graph.
        # Measured on 1 thread, batch 2, T 256, Dm 512, N 16: 4x faster than the chunked scan, 1.8x than the loop.
        return selective_scan_inference(*args)
    # Training on CPU: the in-place loop with its hand-written backward. Measured on 1 thread, fwd+bwd, T 256..2048,
    # Dm 512..2048, N 16: 4-5x faster than autograd through the chunked (log-depth) scan, 2-16x than the plain loop.
    return selective_scan_loop(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, output_final_state)


def selective_scan_step(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    state: Tensor,
) -> tuple[Tensor, Tensor]:
    """One token of the scan (decode). u, delta, z: [batch, Dm]; A: [Dm, N]; B, C: [batch, N];
    D, delta_bias: [Dm] or None; state: [batch, Dm, N]. Returns (y [batch, Dm] in u's dtype,
    new state [batch, Dm, N] float32). A single step is a handful of elementwise ops, so it runs
    in PyTorch on every device."""
    if u.dim() != 2:
        raise ValueError(f"selective_scan_step: u must be [batch, Dm], got shape {list(u.shape)}")
    batch, Dm = u.shape
    N = _check_A("selective_scan_step", A, Dm)
    _check_args(
        u,
        {
            "delta": (delta, (batch, Dm)),
            "B": (B, (batch, N)),
            "C": (C, (batch, N)),
            "D": (D, (Dm,)),
            "z": (z, (batch, Dm)),
            "delta_bias": (delta_bias, (Dm,)),
            "state": (state, (batch, Dm, N)),
        },
    )
    return _step_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, state)
