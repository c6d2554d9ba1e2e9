"""torch.compile(fullgraph=True) of a lowered model gives eager's outputs and gradients.

The model mixes mamba, attention, gla, a shared block and fused add+norm nodes (reference kernel path on CPU).
Backend ``aot_eager`` traces forward and backward through AOTAutograd like inductor does, without inductor's C++
compilation (which takes ~2 minutes on a 2-core CPU; it was run once and matched, see docs/interop.md).
"""

from __future__ import annotations

import pytest
import torch

from hybriddsl import api

SRC = """
hidden = 32, norm = rmsnorm
heads = 2
M A(ffn=false) G(chunk=16) M
shared A(ffn=false)@2
"""


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = api.parse_and_build(SRC, embed_dim=16, output="sequence")
    kinds = {m.graph[n]["kind"] for n in m.graph.mixers()}
    assert {"mamba", "attention", "gla"} <= kinds
    assert any(st.op == "add_norm" for st in m.plan)  # fused add+norm nodes are in the plan
    assert any(m.graph[n]["role"] == "shared" for n in m.graph.mixers())
    return m


def test_fullgraph_forward_and_backward_match_eager(model):
    torch._dynamo.reset()
    x = torch.randn(2, 16, 16)
    x_eager, x_comp = x.clone().requires_grad_(), x.clone().requires_grad_()
    w = torch.randn(2, 16, 32)  # a non-trivial upstream gradient

    y_eager = model(x_eager)
    (y_eager * w).sum().backward()
    g_eager = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    y_comp = compiled(x_comp)
    (y_comp * w).sum().backward()

    torch.testing.assert_close(y_comp, y_eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x_comp.grad, x_eager.grad, rtol=1e-5, atol=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, g_eager[name], rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    model.zero_grad(set_to_none=True)
