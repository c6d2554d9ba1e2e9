"""The FFN's gated activations (layers/ffn.py) against their definitions: outputs and every gradient, in float64,
through the layer's own backward for the gated half-product."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hybriddsl.layers.ffn import FFN


@pytest.mark.parametrize("act", ["swiglu", "geglu", "geglu_tanh", "gelu", "relu2"])
def test_ffn_outputs_and_gradients_match_the_definition(act):
    torch.manual_seed(0)
    m = FFN(8, act=act, mult=2.0, bias=True).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)

    def definition(x):
        h = m.up(x)
        if act == "gelu":
            return m.down(F.gelu(h))
        if act == "relu2":
            return m.down(F.relu(h) ** 2)
        a, b = h.chunk(2, -1)  # W1's rows first
        a = F.silu(a) if act == "swiglu" else F.gelu(a, approximate="tanh" if act == "geglu_tanh" else "none")
        return m.down(a * b)

    y, want = m(x), definition(x)
    torch.testing.assert_close(y, want, rtol=0, atol=1e-14)
    g = torch.randn_like(y)
    params = [x, *m.parameters()]
    for got, ref in zip(torch.autograd.grad(y, params, g), torch.autograd.grad(want, params, g)):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-13)
    assert torch.autograd.gradcheck(m, (x,))
    with torch.no_grad():  # the in-place inference path
        torch.testing.assert_close(m(x), want, rtol=0, atol=1e-14)
