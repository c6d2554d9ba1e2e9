"""The short causal depthwise convolution over time that Mamba, Mamba-2, DeltaNet and Griffin put before their mixer.

Definition (``K`` taps, weight ``w`` [C, K], as ``nn.Conv1d(C, C, K, groups=C, padding=K - 1)`` cut to the first
``T`` outputs)::

    y[b, t, c] = bias[c] + sum_k w[c, k] * x[b, t - (K - 1 - k), c]        (x = 0 before t = 0)

On the CPU it runs channels-last as ``K`` shifted multiply-adds over ``[batch, T, C]``, with a hand-written backward
(:class:`_CausalConv`): no transpose to channels-first and back, and a contiguous output. Measured on one thread,
[1, 2048, 512] float32, interleaved with ``nn.Conv1d`` (mkldnn): 1.7x faster forward, 1.65x forward + backward
(``benchmarks/cpu_layers.py`` has the layer-level numbers). On other devices ``nn.Conv1d`` (cuDNN) stays.
"""

from __future__ import annotations

import torch
from torch import nn

from hybriddsl.kernels.checks import compute_dtype, needs_grad

Tensor = torch.Tensor


def _shifted_sum(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """The forward, written in place into a fresh output. x: [batch, T, C]; w: [C, K]; b: [C] or None."""
    K = w.shape[1]
    y = x * w[:, K - 1]
    if b is not None:
        y += b
    for k in range(K - 1):
        s = K - 1 - k  # tap k reads the input s steps back
        y[:, s:].addcmul_(x[:, :-s], w[:, k])
    return y


class _CausalConv(torch.autograd.Function):
    """:func:`causal_conv` with its backward: ``dx[t - s] += g[t] w[:, K-1-s]``, ``dw[:, k] = sum_{b,t} g[t]
    x[t - s]`` (one multiply and one reduction per tap), ``dbias = sum_{b,t} g``. The backward is written with
    differentiable ops, so double backward works."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        return _shifted_sum(x, w, b)

    @staticmethod
    def backward(ctx, g: Tensor):
        x, w = ctx.saved_tensors
        K = w.shape[1]
        dx = g * w[:, K - 1]
        dws = [None] * K
        dws[K - 1] = (g * x).sum((0, 1))
        for k in range(K - 1):
            s = K - 1 - k
            dx[:, :-s] += g[:, s:] * w[:, k]
            dws[k] = (g[:, s:] * x[:, :-s]).sum((0, 1))
        db = g.sum((0, 1)) if ctx.has_bias else None
        return dx, torch.stack(dws, 1), db


def causal_conv(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
    """Causal depthwise conv, channels-last. x: [batch, T, C]; w: [C, K]; b: [C] or None -> [batch, T, C].

    float16/bfloat16 inputs are computed in float32 and returned in their own dtype (``nn.Conv1d`` accumulates
    in float32 too)."""
    cdt = compute_dtype(x)
    out_dtype = x.dtype
    x, w = x.to(cdt), w.to(cdt)
    b = b.to(cdt) if b is not None else None
    if torch.compiler.is_compiling():  # traced: plain ops, which the compiler fuses into one loop
        T, K = x.shape[1], w.shape[1]
        xp = nn.functional.pad(x, (0, 0, K - 1, 0))
        y = sum(xp[:, k : k + T] * w[:, k] for k in range(K))
        y = y + b if b is not None else y
    elif needs_grad(x, w, b):
        y = _CausalConv.apply(x, w, b)
    else:
        y = _shifted_sum(x, w, b)
    return y.to(out_dtype)


class ShortConv(nn.Module):
    """Causal depthwise 1-D convolution over time (Mamba, DeltaNet, Griffin), with a rolling state for step().

    ``forward``: [batch, seq, channels] -> same. ``step``: [batch, channels] with state [batch, channels, size-1].
    The weight lives in an ``nn.Conv1d`` (``conv.weight`` [C, 1, K], ``conv.bias`` [C]): the layout and state_dict
    keys of mamba_ssm and transformers.
    """

    def __init__(self, channels: int, size: int, bias: bool = True):
        super().__init__()
        self.size = size
        self.conv = nn.Conv1d(channels, channels, size, groups=channels, padding=size - 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" and not torch.compiler.is_compiling():
            t = x.shape[1]
            return self.conv(x.transpose(1, 2))[..., :t].transpose(1, 2)
        return causal_conv(x, self.conv.weight[:, 0], self.conv.bias)

    def init_state(self, batch: int, device=None, dtype=None) -> Tensor:
        w = self.conv.weight
        return torch.zeros(batch, w.shape[0], self.size - 1, device=device or w.device, dtype=dtype or w.dtype)

    def step(self, x: Tensor, buf: Tensor, inplace: bool = False) -> tuple[Tensor, Tensor]:
        """x: [batch, channels]; buf holds the previous size-1 inputs, oldest first.

        ``inplace=True`` shifts ``buf`` in place (a streaming caller keeps its state tensors) and returns it.
        """
        window = torch.cat([buf, x.unsqueeze(-1)], dim=-1)  # [batch, channels, size]
        y = (window * self.conv.weight.squeeze(1)).sum(-1)
        if self.conv.bias is not None:
            y = y + self.conv.bias
        if inplace:  # window is a fresh tensor, so this copy never reads what it overwrites
            return y, buf.copy_(window[..., 1:])
        return y, window[..., 1:]
