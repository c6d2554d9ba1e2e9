"""The per-token parts of the delta-rule layers on the CPU, each one autograd function with a hand-written backward:
the q / k / v features (causal depthwise conv, SiLU and, for q and k, the per-head L2 norm) and the gated per-head
output RMSNorm.

Composed from ``nn.Conv1d``, ``F.silu`` and :func:`~hybriddsl.layers.delta_common.l2norm`, this part cost about
as much as the chunked delta rule itself at hidden 256: the conv runs over ``[B, C, T]``, so its output and every
gradient were transposed views that the elementwise ops and their backwards walked with strides, and autograd kept
five intermediates per tensor. Here everything stays ``[B, T, C]`` and contiguous: the conv is ``K`` fused
multiply-adds of shifted slices, and the backward is one pass per step of the chain.

Math, per channel ``c`` and time ``t`` (``w`` the conv weight ``[C, 1, K]``, ``x`` zero before ``t = 0``)::

    z_t = sum_j w_j x_{t - K + 1 + j},    a_t = silu(z_t),    n_t = a_t / sqrt(|a_t|^2 + eps)  (per head, optional)

exactly the layers' ``l2norm(silu(conv(x)))`` (PyTorch's ``Conv1d`` is a cross-correlation: tap ``K - 1`` is the
current step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


def _lags(size: int, t_len: int) -> list[tuple[int, int]]:
    """(tap j, lag K - 1 - j) of the taps before the current one whose lag is inside the sequence."""
    return [(j, size - 1 - j) for j in range(size - 1) if size - 1 - j < t_len]


class _ConvSiluNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, head_dim, eps):
        bsz, t_len, ch = x.shape
        w = weight.reshape(ch, -1).t().contiguous()  # [K, C]
        size = w.shape[0]
        # tap j reads x shifted by K - 1 - j steps; the shifted-in steps are zeros, so they are left out
        z = torch.mul(x, w[size - 1]).contiguous()
        for j, lag in _lags(size, t_len):
            z[:, lag:].addcmul_(x[:, : t_len - lag], w[j])
        a = F.silu(z)
        if head_dim:
            a4 = a.view(bsz, t_len, ch // head_dim, head_dim)
            r = a4.square().sum(-1, keepdim=True).add_(eps).rsqrt_()
            out = a4.mul(r).view(bsz, t_len, ch)
            ctx.save_for_backward(x, w, z, r, out)
        else:
            out = a
            ctx.save_for_backward(x, w, z)
        ctx.head_dim, ctx.weight_shape = head_dim, weight.shape
        return out

    @staticmethod
    @once_differentiable  # no double backward: raise rather than return non-differentiable grads
    def backward(ctx, d_out):
        x, w, z, *norm = ctx.saved_tensors
        bsz, t_len, ch = z.shape
        size = w.shape[0]
        d_out = d_out.contiguous()
        if ctx.head_dim:
            r, out = norm
            shape = (bsz, t_len, ch // ctx.head_dim, ctx.head_dim)
            n4, dn4 = out.view(shape), d_out.view(shape)
            # n = a r, r = (|a|^2 + eps)^-1/2:  da = r (dn - n <n, dn>)
            d_a = torch.addcmul(dn4, n4, (dn4 * n4).sum(-1, keepdim=True), value=-1.0).mul_(r).view(z.shape)
        else:
            d_a = d_out
        d_z = torch.ops.aten.silu_backward(d_a, z)
        d_x = d_w = None
        lags = _lags(size, t_len)
        if ctx.needs_input_grad[0]:
            d_x = d_z * w[size - 1]
            for j, lag in lags:
                d_x[:, : t_len - lag].addcmul_(d_z[:, lag:], w[j])
        if ctx.needs_input_grad[1]:
            d_w = z.new_zeros(size, ch)
            d_w[size - 1] = (x * d_z).sum((0, 1))
            for j, lag in lags:
                d_w[j] = (x[:, : t_len - lag] * d_z[:, lag:]).sum((0, 1))
            d_w = d_w.t().reshape(ctx.weight_shape)
        return d_x, d_w, None, None


def conv_silu_norm(x: torch.Tensor, weight: torch.Tensor, head_dim: int = 0, eps: float = 1e-6) -> torch.Tensor:
    """``l2norm(silu(conv(x)))`` per head of ``head_dim`` channels (``head_dim = 0``: ``silu(conv(x))``).

    Args:
        x: ``[B, T, C]`` float32 or float64; weight: the depthwise ``Conv1d`` weight ``[C, 1, K]`` (no bias).

    Returns:
        ``[B, T, C]``, x's dtype.
    """
    return _ConvSiluNorm.apply(x, weight, head_dim, eps)


class _GatedHeadNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, gate, eps):
        x = x.contiguous()
        r = x.square().mean(-1, keepdim=True).add_(eps).rsqrt_()
        n = x * r
        y = n * weight
        if gate is not None:
            gate = gate.contiguous()
            s = F.silu(gate)
            y.mul_(s)
            ctx.save_for_backward(weight, r, n, gate, s)
        else:
            ctx.save_for_backward(weight, r, n)
        return y

    @staticmethod
    @once_differentiable  # no double backward: raise rather than return non-differentiable grads
    def backward(ctx, d_y):
        weight, r, n, *gated = ctx.saved_tensors
        d_y = d_y.contiguous()
        t = d_y * n  # d(n w s) / d(w s)
        d_gate = None
        if gated:
            gate, s = gated
            d_ws = t.mul(s)
            if ctx.needs_input_grad[2]:
                d_gate = torch.ops.aten.silu_backward(t.mul_(weight), gate)
            d_n = d_y * s
            d_n.mul_(weight)
        else:
            d_ws, d_n = t, d_y * weight
        d_w = d_ws.reshape(-1, weight.shape[0]).sum(0) if ctx.needs_input_grad[1] else None
        # n = x r, r = (mean(x^2) + eps)^-1/2:  dx = r (dn - n mean(dn n))
        d_x = torch.addcmul(d_n, n, (d_n * n).mean(-1, keepdim=True), value=-1.0).mul_(r)
        return d_x, d_w, d_gate, None


def gated_head_norm(x: torch.Tensor, weight: torch.Tensor, gate: torch.Tensor | None, eps: float) -> torch.Tensor:
    """``x / sqrt(mean(x^2) + eps) * weight * silu(gate)`` over the last dim (no gate: without the last factor):
    :class:`~hybriddsl.layers.base.GatedRMSNorm` with one group, for float32 / float64 on the CPU.

    Args:
        x: ``[..., D]``; weight: ``[D]``; gate: x's shape or None.
    """
    return _GatedHeadNorm.apply(x, weight, gate, eps)
