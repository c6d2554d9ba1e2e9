"""Triton pieces shared by the chunked linear-attention kernels (``gla/triton.py``, ``ssd/triton.py``).

Both families cut time into chunks of ``BT`` tokens, carry a float32 chunk-local cumulative log-decay and multiply
16-bit tiles on tensor cores; what they have in common lives here once: the ``tl.dot`` wrappers (with the CPU
interpreter's bf16 work-around and the two-term split of float32 scores) and the chunk-local cumulative sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl


@triton.jit
def dot(a, b, PREC: tl.constexpr, F32: tl.constexpr):
    """tl.dot; with F32 both operands go to float32 first (the CPU interpreter multiplies bf16 tiles wrongly, so
    interpreter runs of bf16 inputs use it; operands are already rounded to bf16)."""
    if F32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=PREC)


@triton.jit
def dot_hilo(a, b, PREC: tl.constexpr, F32: tl.constexpr):
    """a (float32) @ b with a split into two tiles of b's dtype, a = hi + lo: two 16-bit dots keep about 16 bits
    of a (one bf16 rounding of the intra-chunk scores alone costs ~4e-3 of RMSE)."""
    if b.dtype == tl.float32:
        return dot(a, b, PREC, F32)
    a_hi = a.to(b.dtype)
    a_lo = (a - a_hi.to(tl.float32)).to(b.dtype)
    return dot(a_hi, b, PREC, F32) + dot(a_lo, b, PREC, F32)


def cumsum_chunks(g: torch.Tensor, BT: int) -> torch.Tensor:
    """Chunk-local cumulative sum over time of g ([B, T, H] or [B, T, H, K]) in float32, same shape."""
    B, T = g.shape[:2]
    NT = -(-T // BT)
    gf = g.float()
    pad = [0, 0] * (gf.dim() - 2) + [0, NT * BT - T]
    gp = F.pad(gf, pad).reshape(B, NT, BT, *gf.shape[2:]).cumsum(2)
    return gp.reshape(B, NT * BT, *gf.shape[2:])[:, :T].contiguous()
