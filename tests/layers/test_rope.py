"""RoPE's rotation (layers/rope.py) against its rotate-half definition: values, gradients (its own backward turns
the gradient back) and second derivatives, with and without autograd, full and partial rotary widths."""

from __future__ import annotations

import pytest
import torch

from hybriddsl.layers.rope import apply_rope, rope_angles


def _definition(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoFormer's rotate-half form: x cos + rotate_half(x) sin, rotate_half(x) = (-x2, x1)."""
    r = cos.shape[-1]
    xr, rest = x[..., :r], x[..., r:]
    h = r // 2
    rot = torch.cat([-xr[..., h:], xr[..., :h]], -1)
    return torch.cat([xr * cos + rot * sin, rest], -1)


@pytest.mark.parametrize("rope_dim", [8, 4])
def test_rotation_values_and_gradients_match_the_definition(rope_dim):
    cos, sin = rope_angles(torch.arange(3, 10), rope_dim, 100.0, torch.float64)
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    want = _definition(x, cos, sin)
    got = apply_rope(x, cos, sin)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-14)
    torch.testing.assert_close(
        torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0], rtol=0, atol=1e-14
    )
    with torch.no_grad():  # the in-place path
        torch.testing.assert_close(apply_rope(x, cos, sin), want, rtol=0, atol=1e-14)
    assert torch.autograd.gradcheck(lambda t: apply_rope(t, cos, sin), (x,))
    assert torch.autograd.gradgradcheck(lambda t: apply_rope(t, cos, sin), (x,))


def test_rotation_of_a_strided_view_in_float32():
    """q as the attention layer makes it: a transposed view of the projection, float32 (computed in float32)."""
    cos, sin = rope_angles(torch.arange(16), 64, 10000.0)
    q = torch.randn(2, 16, 4, 64).transpose(1, 2)
    torch.testing.assert_close(apply_rope(q, cos, sin), _definition(q, cos, sin), rtol=1e-6, atol=1e-6)
