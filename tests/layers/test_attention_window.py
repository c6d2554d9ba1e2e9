"""Sliding-window attention's fast paths (hybriddsl/layers/window_attention.py) against the dense-mask reference:
outputs and gradients of the function (chunked SDPA, flex_attention with a block mask: eager here, compiled on a
GPU), and the attention layer's forward, gradients and steps with the fast path on."""

from __future__ import annotations

import pytest
import torch

from hybriddsl.kernels.testing import assert_close
from hybriddsl.layers import window_attention as wa
from hybriddsl.layers.attention import Attention

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


def _qkv(b, hq, hk, t, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, t, d, generator=g, dtype=torch.float64, requires_grad=True) for h in (hq, hk, hk)]


CASES = [  # (T, window, q heads, kv heads): windows below, at and across the chunk block, GQA, window 1
    (200, 7, 2, 2),
    (300, 64, 4, 2),
    (257, 100, 4, 1),
    (700, 600, 2, 2),  # window above the 512 block: a block sees keys from two blocks back
    (40, 1, 2, 2),
    (50, 64, 2, 2),  # the whole sequence inside the window: plain causal
    (1000, 300, 2, 1),  # more than three blocks of a window above 64: the per-block path
]


@pytest.mark.parametrize("case", CASES, ids=[f"T{t}-w{w}-H{a}/{b}" for t, w, a, b in CASES])
def test_chunked_path_matches_the_dense_mask(case):
    _compare(case, "chunked", "cpu", torch.float64, 1e-12)


DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.skipif(wa._flex() is None, reason="this torch has no flex_attention")
@pytest.mark.parametrize("case", CASES[1:2] if DEV == "cpu" else CASES, ids=lambda c: f"T{c[0]}-w{c[1]}-H{c[2]}/{c[3]}")
def test_flex_path_matches_the_dense_mask(case):
    """On a GPU: compiled flex_attention, forward and backward in float32. On CPU flex_attention runs eagerly (the
    block mask's logic is the same) and has no backward, so only outputs are compared there."""
    tol = 1e-12 if DEV == "cpu" else 2e-3  # compiled flex may multiply float32 in tf32 (10-bit mantissa) on a GPU
    _compare(case, "flex", DEV, torch.float64 if DEV == "cpu" else torch.float32, tol, grads=DEV == "cuda")


def _compare(case, impl, device, dtype, tol, grads=True):
    t, window, hq, hk = case
    q, k, v = (x.detach().to(device, dtype).requires_grad_(grads) for x in _qkv(2, hq, hk, t, 16))
    cot = torch.randn(2, hq, t, 16, generator=torch.Generator().manual_seed(9), dtype=dtype).to(device)
    outs = {}
    for name in ("dense", impl):
        o = wa.sliding_window_attention(q, k, v, window, name, enable_gqa=hq != hk)
        outs[name] = (o.detach(), *(torch.autograd.grad((o * cot).sum(), (q, k, v)) if grads else ()))
    for label, ref, got in zip(("o", "dq", "dk", "dv"), outs["dense"], outs[impl]):
        assert_close(label, ref, got, tol)


def test_dense_mask_is_the_definition():
    # the reference itself against the formula: softmax over t - window < s <= t
    q, k, v = (x.detach() for x in _qkv(1, 1, 1, 9, 4))
    o = wa.sliding_window_attention(q, k, v, 3, "dense")
    for t in range(9):
        s = list(range(max(0, t - 2), t + 1))
        w = torch.softmax(q[0, 0, t] @ k[0, 0, s].T / 2.0, -1)
        assert torch.allclose(o[0, 0, t], w @ v[0, 0, s])


@pytest.fixture
def impl():
    old = wa.IMPL
    yield
    wa.IMPL = old


def test_layer_fast_path_matches_dense_forward_gradients_and_steps(impl):
    torch.manual_seed(0)
    layer = Attention(32, heads=4, kv_heads=2, window=24, rope=True).double()
    x = torch.randn(2, 150, 32, dtype=torch.float64, requires_grad=True)
    cot = torch.randn(2, 150, 32, dtype=torch.float64)
    runs = {}
    for name in ("dense", "auto"):  # auto: chunked on CPU, flex on a GPU
        wa.IMPL = name
        layer.zero_grad()
        y = layer(x)
        grads = torch.autograd.grad((y * cot).sum(), [x, *layer.parameters()])
        runs[name] = (y.detach(), *grads)
    for i, (ref, got) in enumerate(zip(runs["dense"], runs["auto"])):
        assert_close(f"output/grad {i}", ref, got, 1e-10)
    state = layer.init_state(2, dtype=torch.float64)
    steps = []
    with torch.no_grad():
        for t in range(150):
            y_t, state = layer.step(x[:, t].detach(), state)
            steps.append(y_t)
    assert_close("steps", runs["auto"][0], torch.stack(steps, 1), 1e-10)


def test_bad_impl_raises():
    q, k, v = (x.detach() for x in _qkv(1, 1, 1, 4, 4))
    with pytest.raises(ValueError, match="impl must be one of"):
        wa.sliding_window_attention(q, k, v, 2, "sparse")
