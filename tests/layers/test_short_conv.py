"""The channels-last causal conv against ``nn.Conv1d`` (PyTorch's own depthwise conv, padded and cut to T)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hybriddsl.layers.short_conv import ShortConv, causal_conv


def conv1d_reference(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """x [B, T, C], w [C, K] -> [B, T, C] through F.conv1d in float64."""
    T, K = x.shape[1], w.shape[1]
    if T == 0:  # F.conv1d rejects an empty time axis
        return x.double().clone()
    y = F.conv1d(
        x.double().transpose(1, 2),
        w.double()[:, None],
        None if b is None else b.double(),
        padding=K - 1,
        groups=w.shape[0],
    )
    return y[..., :T].transpose(1, 2)


@pytest.mark.parametrize("T", [0, 1, 2, 3, 4, 9])
@pytest.mark.parametrize("K", [1, 2, 4])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_matches_conv1d(T: int, K: int, bias: bool) -> None:
    g = torch.Generator().manual_seed(T * 10 + K)
    x = torch.randn(2, T, 5, generator=g)
    w, b = torch.randn(5, K, generator=g), (torch.randn(5, generator=g) if bias else None)
    with torch.no_grad():
        y = causal_conv(x, w, b)
    assert y.shape == x.shape and y.is_contiguous()
    torch.testing.assert_close(y.double(), conv1d_reference(x, w, b), rtol=1e-5, atol=1e-5)


def test_strided_input() -> None:
    """A channel slice of a wider projection (how Mamba calls it) gives the same result as a contiguous copy."""
    wide = torch.randn(2, 7, 10)
    x = wide[..., 3:8]
    w, b = torch.randn(5, 4), torch.randn(5)
    torch.testing.assert_close(
        causal_conv(x, w, b).double(), conv1d_reference(x.contiguous(), w, b), rtol=1e-5, atol=1e-5
    )


def test_gradients_float64() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 3, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(causal_conv, (x, w, b))
    assert torch.autograd.gradgradcheck(causal_conv, (x, w, b))
    assert torch.autograd.gradcheck(lambda x, w: causal_conv(x, w, None), (x, w))


def test_gradients_match_conv1d() -> None:
    """float32 gradients of every input against autograd through F.conv1d."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 33, 8, generator=g, requires_grad=True)
    w = torch.randn(8, 4, generator=g, requires_grad=True)
    b = torch.randn(8, generator=g, requires_grad=True)
    dy = torch.randn(3, 33, 8, generator=g)
    ours = torch.autograd.grad(causal_conv(x, w, b), (x, w, b), dy)
    ref = torch.autograd.grad(conv1d_reference(x, w, b), (x, w, b), dy.double())
    for a, r in zip(ours, ref, strict=True):
        torch.testing.assert_close(a.double(), r.double(), rtol=1e-4, atol=1e-4)


def test_bfloat16_accumulates_in_float32() -> None:
    x = torch.randn(1, 16, 4).bfloat16()
    w, b = torch.randn(4, 4).bfloat16(), torch.randn(4).bfloat16()
    y = causal_conv(x, w, b)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.double(), conv1d_reference(x.float(), w.float(), b.float()), rtol=1e-2, atol=1e-2)


def test_module_forward_matches_its_steps() -> None:
    """ShortConv's whole-sequence forward against its own token-by-token step (the streaming path)."""
    conv = ShortConv(6, 4)
    x = torch.randn(2, 11, 6)
    buf = conv.init_state(2)
    steps = []
    for t in range(11):
        y, buf = conv.step(x[:, t], buf)
        steps.append(y)
    torch.testing.assert_close(conv(x), torch.stack(steps, 1), rtol=1e-5, atol=1e-5)


def test_compiled_form_matches() -> None:
    """The traced form (plain ops) gives the eager result."""
    conv = ShortConv(6, 4)
    x = torch.randn(2, 9, 6)
    compiled = torch.compile(conv, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), conv(x))
