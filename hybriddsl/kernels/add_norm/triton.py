"""Triton forward and backward of fused residual add + RMSNorm/LayerNorm.

Forward, one program per row (the row, D <= 16384, is held in registers):

    r = x + residual (stored, rounded to its dtype);  xhat = (r - mu) * rstd;  y = xhat * w + b

with mu = 0 for RMSNorm and rstd = 1 / sqrt(mean((r - mu)^2) + eps). Backward, with dy the
gradient of y and dr the gradient reaching r directly (through the next residual add):

    g = dy * w,   c1 = mean(xhat * g),   c2 = mean(g) (LayerNorm) or 0 (RMSNorm)
    dr_total = rstd * (g - xhat * c1 - c2) + dr,   dx = dresidual = dr_total
    dw = sum_rows dy * xhat,   db = sum_rows dy

mu and rstd are recomputed from the saved r (the row is loaded anyway), so the forward writes only
y and r. Each backward program walks a contiguous range of rows and keeps dw/db partial sums in
registers; one [programs, D] float32 buffer is then summed on the host side (a deterministic
two-stage reduction, no atomics). This is the structure of Apex's / fla's fused layer norm.

One ``torch.library`` op, ``hybriddsl::add_norm``, with ``hybriddsl::add_norm_bwd`` as its registered
backward and fake implementations for both.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hybriddsl.kernels.device import multiprocessor_count
from hybriddsl.kernels.dispatch import interpreting


@triton.jit
def _add_norm_fwd_kernel(
    X,
    RES,
    W,
    BIAS,
    Y,
    R,
    D,
    eps,
    HAS_RES: tl.constexpr,
    HAS_W: tl.constexpr,
    HAS_B: tl.constexpr,
    IS_RMS: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    mask = cols < D
    r = tl.load(X + row * D + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        r += tl.load(RES + row * D + cols, mask=mask, other=0.0).to(tl.float32)
    # round r first: y must be the norm of the r we return (as in the reference)
    r_out = r.to(R.dtype.element_ty)
    tl.store(R + row * D + cols, r_out, mask=mask)
    r = r_out.to(tl.float32)
    if IS_RMS:
        centered = r
    else:
        centered = tl.where(mask, r - tl.sum(r, axis=0) / D, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centered * centered, axis=0) / D + eps)
    y = centered * rstd
    if HAS_W:
        y = y * tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_B:
        y = y + tl.load(BIAS + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * D + cols, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _add_norm_bwd_kernel(
    R,
    W,
    DY,
    DR,
    DX,
    DRES,
    DW,
    DB,
    N,
    D,
    rows_per_program,
    eps,
    HAS_DR: tl.constexpr,
    HAS_RES: tl.constexpr,
    HAS_W: tl.constexpr,
    HAS_B: tl.constexpr,
    IS_RMS: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)
    mask = cols < D
    # int64 bounds make the loop variable int64, so row * D cannot overflow
    row_start = pid.to(tl.int64) * rows_per_program
    row_end = tl.minimum(row_start + rows_per_program, N)
    w = tl.full([BLOCK_D], 1.0, dtype=tl.float32)
    if HAS_W:
        w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK_D], dtype=tl.float32)
    db = tl.zeros([BLOCK_D], dtype=tl.float32)
    for row in range(row_start, row_end):
        offs = row * D + cols
        r = tl.load(R + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
        if IS_RMS:
            centered = r
        else:
            centered = tl.where(mask, r - tl.sum(r, axis=0) / D, 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(centered * centered, axis=0) / D + eps)
        xhat = centered * rstd
        if HAS_W:
            dw += dy * xhat
            g = dy * w
        else:
            g = dy
        if HAS_B:
            db += dy
        c1 = tl.sum(xhat * g, axis=0) / D
        if IS_RMS:
            dr = (g - xhat * c1) * rstd
        else:
            dr = (g - xhat * c1 - tl.sum(g, axis=0) / D) * rstd
        if HAS_DR:
            dr += tl.load(DR + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(DX + offs, dr.to(DX.dtype.element_ty), mask=mask)
        if HAS_RES:
            tl.store(DRES + offs, dr.to(DRES.dtype.element_ty), mask=mask)
    if HAS_W:
        tl.store(DW + pid * D + cols, dw, mask=mask)
    if HAS_B:
        tl.store(DB + pid * D + cols, db, mask=mask)


def _block_and_warps(d: int) -> tuple[int, int]:
    block = triton.next_power_of_2(d)
    if block > 16384:
        raise ValueError(f"add_norm: the Triton kernel handles D <= 16384, got D = {d}")
    return block, min(max(block // 256, 1), 16)


def _num_programs(n_rows: int, device: torch.device) -> int:
    if interpreting():
        return max(1, min(n_rows, 2))
    # a few programs per SM: enough parallelism, few partial sums (SMs from Triton's driver: a stand-in GPU too)
    return max(1, min(n_rows, 4 * multiprocessor_count()))


@torch.library.custom_op("hybriddsl::add_norm", mutates_args=())
def add_norm_op(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    is_rms: bool,
    residual_in_fp32: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton forward: ``x, residual`` ``[..., D]``, ``weight, bias`` ``[D]``; returns ``(y, r)``."""
    d = x.shape[-1]
    x2 = x.contiguous().view(-1, d)
    res2 = residual.contiguous().view(-1, d) if residual is not None else None
    y = torch.empty_like(x2)
    r = torch.empty(x2.shape, device=x.device, dtype=torch.float32 if residual_in_fp32 else x.dtype)
    block, warps = _block_and_warps(d)
    if x2.shape[0] > 0:
        _add_norm_fwd_kernel[(x2.shape[0],)](
            x2,
            res2 if res2 is not None else x2,
            weight.contiguous() if weight is not None else x2,
            bias.contiguous() if bias is not None else x2,
            y,
            r,
            d,
            eps,
            HAS_RES=res2 is not None,
            HAS_W=weight is not None,
            HAS_B=bias is not None,
            IS_RMS=is_rms,
            BLOCK_D=block,
            num_warps=warps,
        )
    return y.view(x.shape), r.view(x.shape)


@add_norm_op.register_fake
def _(x, residual, weight, bias, eps, is_rms, residual_in_fp32):
    r_dtype = torch.float32 if residual_in_fp32 else x.dtype
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(x.shape, dtype=r_dtype)


@torch.library.custom_op("hybriddsl::add_norm_bwd", mutates_args=())
def add_norm_bwd_op(
    dy: torch.Tensor,
    dr: torch.Tensor | None,
    r: torch.Tensor,
    weight: torch.Tensor | None,
    eps: float,
    is_rms: bool,
    has_residual: bool,
    has_bias: bool,
    x_dtype: torch.dtype,
    residual_dtype: torch.dtype,
    bias_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton backward: ``(dx, dresidual, dweight, dbias)``; a missing input's gradient is empty."""
    d = r.shape[-1]
    r2 = r.contiguous().view(-1, d)
    n = r2.shape[0]
    dy2 = dy.contiguous().view(-1, d)
    dr2 = dr.contiguous().view(-1, d) if dr is not None else None
    dx = torch.empty(r2.shape, device=r.device, dtype=x_dtype)
    dres = torch.empty(r2.shape if has_residual else (0,), device=r.device, dtype=residual_dtype)
    programs = _num_programs(n, r.device)
    has_w = weight is not None
    dw_part = torch.empty((programs, d) if has_w else (0,), device=r.device, dtype=torch.float32)
    db_part = torch.empty((programs, d) if has_bias else (0,), device=r.device, dtype=torch.float32)
    block, warps = _block_and_warps(d)
    if n > 0:
        _add_norm_bwd_kernel[(programs,)](
            r2,
            weight.contiguous() if has_w else r2,
            dy2,
            dr2 if dr2 is not None else dy2,
            dx,
            dres,
            dw_part,
            db_part,
            n,
            d,
            triton.cdiv(n, programs),
            eps,
            HAS_DR=dr2 is not None,
            HAS_RES=has_residual,
            HAS_W=has_w,
            HAS_B=has_bias,
            IS_RMS=is_rms,
            BLOCK_D=block,
            num_warps=warps,
        )
    elif has_w or has_bias:  # no rows: the partial sums are zero
        dw_part.zero_()
        db_part.zero_()
    dw = dw_part.sum(0).to(weight.dtype) if has_w else dw_part
    db = db_part.sum(0).to(bias_dtype) if has_bias else db_part
    return dx.view(r.shape), dres.view(r.shape) if has_residual else dres, dw, db


@add_norm_bwd_op.register_fake
def _(dy, dr, r, weight, eps, is_rms, has_residual, has_bias, x_dtype, residual_dtype, bias_dtype):
    d = r.shape[-1]
    dx = r.new_empty(r.shape, dtype=x_dtype)
    dres = r.new_empty(r.shape if has_residual else (0,), dtype=residual_dtype)
    dw = r.new_empty((d,), dtype=weight.dtype) if weight is not None else r.new_empty(0)
    db = r.new_empty((d,) if has_bias else (0,), dtype=bias_dtype if has_bias else torch.float32)
    return dx, dres, dw, db


def _setup_context(ctx, inputs, output) -> None:
    x, residual, weight, bias, eps, is_rms, _ = inputs
    ctx.save_for_backward(output[1], weight)
    ctx.eps, ctx.is_rms = eps, is_rms
    ctx.x_dtype = x.dtype
    ctx.has_residual, ctx.residual_dtype = (
        residual is not None,
        (residual if residual is not None else x).dtype,
    )
    ctx.has_bias, ctx.bias_dtype = bias is not None, (bias.dtype if bias is not None else torch.float32)


def _backward(ctx, dy, dr):
    r, weight = ctx.saved_tensors
    if dy is None:
        dy = torch.zeros(r.shape, device=r.device, dtype=ctx.x_dtype)
    dx, dres, dw, db = add_norm_bwd_op(
        dy,
        dr,
        r,
        weight,
        ctx.eps,
        ctx.is_rms,
        ctx.has_residual,
        ctx.has_bias,
        ctx.x_dtype,
        ctx.residual_dtype,
        ctx.bias_dtype,
    )
    return (
        dx,
        dres if ctx.has_residual else None,
        dw if weight is not None else None,
        db if ctx.has_bias else None,
        None,
        None,
        None,
    )


add_norm_op.register_autograd(_backward, setup_context=_setup_context)


def add_norm_triton(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    norm: str,
    residual_in_fp32: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the custom op (differentiable); arguments as in :func:`hybriddsl.kernels.add_norm.add_norm`."""
    return add_norm_op(x, residual, weight, bias, float(eps), norm == "rms", residual_in_fp32)
