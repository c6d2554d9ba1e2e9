"""conv_silu_norm (the delta-rule layers' fused q/k/v features on the CPU) vs nn.Conv1d + SiLU + L2 norm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hybriddsl.layers.delta_features import conv_silu_norm, gated_head_norm


def _reference(x: torch.Tensor, weight: torch.Tensor, head_dim: int, eps: float) -> torch.Tensor:
    # PyTorch's own depthwise causal conv (pad both sides, keep the first T), SiLU, then x / sqrt(|x|^2 + eps)
    t, ch, size = x.shape[1], x.shape[2], weight.shape[-1]
    z = F.conv1d(x.transpose(1, 2), weight, padding=size - 1, groups=ch)[..., :t].transpose(1, 2)
    a = F.silu(z)
    if not head_dim:
        return a
    a4 = a.reshape(*a.shape[:2], -1, head_dim)
    return (a4 / torch.sqrt((a4 * a4).sum(-1, keepdim=True) + eps)).reshape(a.shape)


@pytest.mark.parametrize(("bsz", "t", "ch", "size", "head_dim"), [(2, 9, 6, 4, 3), (1, 5, 4, 2, 0), (3, 2, 8, 4, 4)])
def test_gradcheck_float64(bsz: int, t: int, ch: int, size: int, head_dim: int) -> None:
    gen = torch.Generator().manual_seed(t)
    x = torch.randn(bsz, t, ch, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(ch, 1, size, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: conv_silu_norm(x, w, head_dim, 1e-6), (x, w))


@pytest.mark.parametrize("head_dim", [0, 16])
def test_matches_conv1d_silu_l2norm(head_dim: int) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 70, 64, generator=gen, dtype=torch.float64)
    w = torch.randn(64, 1, 4, generator=gen, dtype=torch.float64)
    d_out = torch.randn(2, 70, 64, generator=gen, dtype=torch.float64)
    results = []
    for fn in (conv_silu_norm, _reference):
        xl, wl = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = fn(xl, wl, head_dim, 1e-6)
        results.append([y, *torch.autograd.grad((y * d_out).sum(), (xl, wl))])
    for ours, ref in zip(*results, strict=True):
        torch.testing.assert_close(ours, ref, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
def test_gated_head_norm_gradcheck_and_definition(gated: bool) -> None:
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 5, 3, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, generator=gen, dtype=torch.float64, requires_grad=True)
    gate = torch.randn(2, 5, 3, 6, generator=gen, dtype=torch.float64, requires_grad=True) if gated else None
    ins = (x, w, gate) if gated else (x, w)
    assert torch.autograd.gradcheck(lambda *a: gated_head_norm(*a, *(() if gated else (None,)), 1e-5), ins)
    # the definition: x / sqrt(mean(x^2) + eps) * w * silu(gate)
    ref = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5) * w
    if gated:
        ref = ref * gate * torch.sigmoid(gate)
    torch.testing.assert_close(gated_head_norm(x, w, gate, 1e-5), ref, atol=1e-12, rtol=1e-12)
