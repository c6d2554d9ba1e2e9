"""The RG-LRU's scan coefficients from its gate pre-activations, as one autograd function (Griffin's forward).

Same math as :func:`hybriddsl.layers.griffin.rglru_coeffs` (De et al. 2024, eq. 1-4, c = 8)::

    r, i = sigmoid(pre_r), sigmoid(pre_i)
    log a = k r,  k = -c softplus(-Λ)          a = exp(log a)
    b = sqrt(max(-expm1(2 log a), 1e-12)) i z   (b = i z at position 0 with ``reset``)

Why a function of its own: differentiated op by op, these ~15 elementwise passes over [B, T, width] cost more
than the scan and the gate matmuls together on a CPU (each op allocates, autograd saves and re-reads, the reset
position costs a ``cat`` and its slice backward). Here the forward writes ``a`` and ``b`` straight into
[B, T, width] buffers with in-place ops, and a hand-written backward (below) does the same for the gradients.

Layout: ``pre`` is [blocks, B*T, 2*blk] (per block: ``blk`` recurrence-gate columns, then ``blk`` input-gate
columns), as one ``baddbmm`` of block-diagonal gates produces it; dense gates are ``blocks = 1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

C = 8.0  # the paper's fixed scalar c
FLOOR = 1e-12  # floor of 1 - a^2 (keeps the derivative of its square root finite at a = 1)


def _blocked(x: torch.Tensor, blocks: int) -> torch.Tensor:
    """[B, T, width] contiguous -> the [blocks, B*T, blk] view that lines up with a gate half of ``pre``."""
    return x.view(-1, blocks, x.shape[-1] // blocks).transpose(0, 1)


class _Coeffs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre: torch.Tensor, z: torch.Tensor, lam: torch.Tensor, reset: bool):
        blocks, blk = pre.shape[0], pre.shape[2] // 2
        s = torch.sigmoid(pre)
        r, i = s[..., :blk], s[..., blk:]
        k = (-C * F.softplus(-lam.to(z.dtype))).view(blocks, 1, blk)
        a, mult, b = torch.empty_like(z), torch.empty_like(z), torch.empty_like(z)
        torch.mul(r, k, out=_blocked(a, blocks))  # log a
        torch.mul(a, 2.0, out=mult)
        mult.expm1_().neg_().clamp_min_(FLOOR).sqrt_()  # sqrt(1 - a^2), accurate for a near 1
        a.exp_()
        torch.mul(_blocked(mult, blocks), i, out=_blocked(b, blocks))
        b.mul_(z)
        if reset:  # position 0 starts a document: the multiplier there is 1
            b[:, 0] = i.unflatten(1, (z.shape[0], -1))[:, :, 0].transpose(0, 1).reshape_as(b[:, 0]) * z[:, 0]
        ctx.save_for_backward(s, z, lam, a, mult)
        ctx.reset = reset
        return a, b

    @staticmethod
    def backward(ctx, da: torch.Tensor, db: torch.Tensor):
        s, z, lam, a, mult = ctx.saved_tensors
        blocks, blk = s.shape[0], s.shape[2] // 2
        r, i = s[..., :blk], s[..., blk:]
        da, db = da.contiguous(), db.contiguous()

        def bl(x: torch.Tensor) -> torch.Tensor:
            return _blocked(x, blocks)

        dbz = db * z
        dm = torch.empty_like(z)  # dL/dmult
        torch.mul(bl(dbz), i, out=bl(dm))
        if ctx.reset:
            dm[:, 0] = 0
        # dlog a = a da - dmult a^2 / mult (d mult / d log a = -a^2 / mult); zero where the floor held mult, as
        # the clamp's derivative is
        u = dm.mul_(a).mul_(a).div_(mult).masked_fill_(mult <= FLOOR**0.5, 0.0)
        dlog = torch.mul(da, a).sub_(u)
        k = (-C * F.softplus(-lam.to(z.dtype))).view(blocks, 1, blk)
        dlam = (bl(dlog) * r).sum(1).reshape(lam.shape) * (C * torch.sigmoid(-lam.to(z.dtype)))
        dpre = torch.empty_like(s)
        dr, di = dpre[..., :blk], dpre[..., blk:]
        torch.mul(bl(dlog), k, out=dr)
        torch.ops.aten.sigmoid_backward.grad_input(dr, r, grad_input=dr)
        torch.mul(bl(dbz), bl(mult), out=di)  # dL/di = db mult z
        dz = torch.mul(db, mult)
        if ctx.reset:
            di.unflatten(1, (z.shape[0], -1))[:, :, 0] = bl(dbz).unflatten(1, (z.shape[0], -1))[:, :, 0]
            dz[:, 0] = db[:, 0]
        torch.ops.aten.sigmoid_backward.grad_input(di, i, grad_input=di)
        bl(dz).mul_(i)
        return dpre, dz, dlam.to(lam.dtype), None


def rglru_scan_coeffs(
    pre: torch.Tensor, z: torch.Tensor, lam: torch.Tensor, reset: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The scan's ``a`` and ``b`` of the RG-LRU from the gates' pre-activations.

    Args:
        pre: [blocks, B*T, 2*blk] gate pre-activations; per block the recurrence gate's ``blk`` columns, then
            the input gate's (``blocks * blk = width``).
        z: the RG-LRU's input [B, T, width].
        lam: Λ [width].
        reset: ``b = i z`` at position 0 (RecurrentGemma's document start).

    Returns:
        ``a``, ``b`` [B, T, width] contiguous, in float32 (float64 for float64 inputs).
    """
    dtype = torch.promote_types(z.dtype, torch.float32)
    return _Coeffs.apply(pre.to(dtype), z.to(dtype).contiguous(), lam, reset)
