"""Empty batches and empty sequences through the layers whose CPU paths size blocks, chunks or dispatch from the
input: an empty output of the input's shape, forward and backward, as ``nn.Linear`` gives for an empty batch."""

from __future__ import annotations

import pytest
import torch

from hybriddsl import registry


@pytest.mark.parametrize(
    "kind", ["mamba", "mamba2", "griffin", "moe", "ffn", "attention", "gla", "rwkv", "delta_net", "gated_delta_net"]
)
@pytest.mark.parametrize("shape", [(0, 5), (1, 0), (2, 1)])
def test_empty_and_tiny_inputs(kind: str, shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    m = registry.get(kind).factory(64)
    x = torch.randn(*shape, 64, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape
    y.sum().backward()
    if x.numel():  # an empty input may get no gradient at all (nothing flows), but never a wrong-shaped one
        assert x.grad is not None
    assert x.grad is None or x.grad.shape == x.shape
    with torch.no_grad():
        torch.testing.assert_close(m(x), y.detach())
