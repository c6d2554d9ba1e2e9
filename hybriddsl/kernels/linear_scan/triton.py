"""Triton forward and backward of the diagonal linear scan h_t = a_t * h_{t-1} + b_t.

Math (Griffin RG-LRU recurrence, De et al. 2024, arXiv:2402.19427): with L the loss and
g_t = dL/dh_t (total, through later states),

    g_t = dh_t + a_{t+1} g_{t+1},   g_{T-1} = dh_{T-1} + dL/dh_final
    db_t = g_t,   da_t = g_t h_{t-1},   d h_init = a_0 g_0.

The backward is the same scan run in reverse with the decays shifted by one step.

Kernels: one program per (batch, block of channels); it walks time in ``[BLOCK_T, BLOCK_D]`` tiles.
Inside a tile ``tl.associative_scan`` composes the pairs (a, b) -> (a1 a2, a2 b1 + b2) in parallel,
then the carried state is applied: h = H_local + A_cum * carry. The whole tile's loads are issued at
once, so the kernel is memory bound and should approach copy bandwidth (each element is read
once and written once). Accumulation is float32; h is stored in the input dtype, the final state in
float32.

One ``torch.library`` op, ``hybriddsl::linear_scan``, with its backward ``hybriddsl::linear_scan_bwd``
registered through ``register_autograd`` and fake implementations for both, so ``torch.compile``
sees one opaque op with its gradient.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hybriddsl.kernels.dispatch import interpreting


@triton.jit
def _combine(a1, b1, a2, b2):
    # (a1, b1) is the earlier segment: applying it then (a2, b2) gives h -> a2 (a1 h + b1) + b2
    return a1 * a2, a2 * b1 + b2


def _configs() -> list[triton.Config]:
    if interpreting():  # one small config: the interpreter would otherwise run every candidate
        return [triton.Config({"BLOCK_T": 16, "BLOCK_D": 32}, num_warps=4)]
    return [
        triton.Config({"BLOCK_T": bt, "BLOCK_D": bd}, num_warps=w, num_stages=s)
        for bt, bd, w, s in [
            (16, 64, 4, 2),
            (32, 64, 4, 2),
            (64, 64, 4, 2),
            (32, 32, 2, 2),
            (64, 32, 4, 2),
            (16, 128, 4, 2),
            (32, 128, 8, 2),
        ]
    ]


@triton.autotune(configs=_configs(), key=["T", "D"])
@triton.jit
def _linear_scan_fwd_kernel(A, B, H0, H, HT, T, D, HAS_H0: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    i_b = tl.program_id(0)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    offs_t = tl.arange(0, BLOCK_T)
    base = i_b.to(tl.int64) * T * D
    if HAS_H0:
        h = tl.load(H0 + i_b * D + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BLOCK_D], dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):
        t = t0 + offs_t
        mask = (t < T)[:, None] & mask_d[None, :]
        offs = base + t.to(tl.int64)[:, None] * D + offs_d[None, :]
        # steps past T are the identity (a=1, b=0), so the tile's last row is the state at T-1
        a = tl.load(A + offs, mask=mask, other=1.0).to(tl.float32)
        b = tl.load(B + offs, mask=mask, other=0.0).to(tl.float32)
        cum_a, local_h = tl.associative_scan((a, b), 0, _combine)
        hs = local_h + cum_a * h[None, :]
        tl.store(H + offs, hs.to(H.dtype.element_ty), mask=mask)
        h = tl.sum(tl.where((offs_t == BLOCK_T - 1)[:, None], hs, 0.0), axis=0)
    tl.store(HT + i_b * D + offs_d, h, mask=mask_d)


@triton.autotune(configs=_configs(), key=["T", "D"])
@triton.jit
def _linear_scan_bwd_kernel(
    A,
    H,
    H0,
    DH,
    DHT,
    DA,
    DB,
    DH0,
    T,
    D,
    HAS_H0: tl.constexpr,
    HAS_DHT: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    i_b = tl.program_id(0)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    offs_r = tl.arange(0, BLOCK_T)
    base = i_b.to(tl.int64) * T * D
    if HAS_DHT:
        g = tl.load(DHT + i_b * D + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    else:
        g = tl.zeros([BLOCK_D], dtype=tl.float32)
    h0 = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_H0:
        h0 = tl.load(H0 + i_b * D + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    for i in range(0, tl.cdiv(T, BLOCK_T)):
        # row r of the tile is time t = T-1 - i*BLOCK_T - r: walking rows walks time backwards
        t = T - 1 - i * BLOCK_T - offs_r
        valid = t >= 0
        mask = valid[:, None] & mask_d[None, :]
        offs = base + t.to(tl.int64)[:, None] * D + offs_d[None, :]
        dh = tl.load(DH + offs, mask=mask, other=0.0).to(tl.float32)
        # a_{t+1} carries g_{t+1} back to t; at t = T-1 the carry is dL/dh_final itself (decay 1)
        a_next = tl.load(A + offs + D, mask=mask & (t + 1 < T)[:, None], other=1.0).to(tl.float32)
        cum_a, local_g = tl.associative_scan((a_next, dh), 0, _combine)
        gs = local_g + cum_a * g[None, :]
        h_prev = tl.load(H + offs - D, mask=mask & (t >= 1)[:, None], other=0.0).to(tl.float32)
        if HAS_H0:
            h_prev = tl.where((t == 0)[:, None], h0[None, :], h_prev)
        tl.store(DB + offs, gs.to(DB.dtype.element_ty), mask=mask)
        tl.store(DA + offs, (gs * h_prev).to(DA.dtype.element_ty), mask=mask)
        # rows before t = 0 are identity steps, so the last row is g at the tile's earliest time
        g = tl.sum(tl.where((offs_r == BLOCK_T - 1)[:, None], gs, 0.0), axis=0)
    if HAS_H0:
        a0 = tl.load(A + base + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        tl.store(DH0 + i_b * D + offs_d, a0 * g, mask=mask_d)


def _grid(bsz: int, d: int):
    return lambda meta: (bsz, triton.cdiv(d, meta["BLOCK_D"]))


@torch.library.custom_op("hybriddsl::linear_scan", mutates_args=())
def linear_scan_op(
    a: torch.Tensor, b: torch.Tensor, initial_state: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton scan: ``a, b`` ``[B, T, D]``, ``initial_state`` ``[B, D]`` or None.

    Returns ``h`` ``[B, T, D]`` (``b``'s dtype) and the final state ``[B, D]`` float32.
    """
    a, b = a.contiguous(), b.contiguous()
    bsz, t, d = a.shape
    h = torch.empty_like(b)
    ht = torch.empty(bsz, d, device=a.device, dtype=torch.float32)
    h0 = None if initial_state is None else initial_state.contiguous().float()
    _linear_scan_fwd_kernel[_grid(bsz, d)](a, b, h0 if h0 is not None else ht, h, ht, t, d, HAS_H0=h0 is not None)
    return h, ht


@linear_scan_op.register_fake
def _(a, b, initial_state):
    return torch.empty_like(b), a.new_empty(a.shape[0], a.shape[2], dtype=torch.float32)


@torch.library.custom_op("hybriddsl::linear_scan_bwd", mutates_args=())
def linear_scan_bwd_op(
    a: torch.Tensor,
    h: torch.Tensor,
    initial_state: torch.Tensor | None,
    dh: torch.Tensor,
    dht: torch.Tensor | None,
    b_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton backward: returns ``(da, db, d_initial_state)``; the last is empty without an initial state."""
    a, h, dh = a.contiguous(), h.contiguous(), dh.contiguous()
    bsz, t, d = a.shape
    da = torch.empty_like(a)
    db = torch.empty(a.shape, device=a.device, dtype=b_dtype)
    has_h0 = initial_state is not None
    dh0 = a.new_empty((bsz, d) if has_h0 else (0,), dtype=torch.float32)
    h0 = initial_state.contiguous().float() if has_h0 else dh0
    dht_arg = dht.contiguous().float() if dht is not None else dh0
    _linear_scan_bwd_kernel[_grid(bsz, d)](
        a, h, h0, dh, dht_arg, da, db, dh0, t, d, HAS_H0=has_h0, HAS_DHT=dht is not None
    )
    return da, db, dh0


@linear_scan_bwd_op.register_fake
def _(a, h, initial_state, dh, dht, b_dtype):
    shape0 = (a.shape[0], a.shape[2]) if initial_state is not None else (0,)
    return torch.empty_like(a), a.new_empty(a.shape, dtype=b_dtype), a.new_empty(shape0, dtype=torch.float32)


def _setup_context(ctx, inputs, output) -> None:
    a, b, initial_state = inputs
    ctx.save_for_backward(a, output[0], initial_state)
    ctx.b_dtype = b.dtype
    ctx.init_dtype = None if initial_state is None else initial_state.dtype


def _backward(ctx, dh, dht):
    a, h, initial_state = ctx.saved_tensors
    if dh is None:
        dh = torch.zeros_like(h)
    da, db, dh0 = linear_scan_bwd_op(a, h, initial_state, dh, dht, ctx.b_dtype)
    return da, db, (dh0.to(ctx.init_dtype) if initial_state is not None else None)


linear_scan_op.register_autograd(_backward, setup_context=_setup_context)


def linear_scan_triton(
    a: torch.Tensor, b: torch.Tensor, initial_state: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the custom op (differentiable): ``h`` ``[B, T, D]`` and final state ``[B, D]`` float32."""
    return linear_scan_op(a, b, initial_state)
