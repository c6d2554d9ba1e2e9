"""The fused Mamba-2 CPU scan (kernels/ssd/mamba2_scan.py: conv, silu, Δ, SSD and D skip per block, hand-written
backward) against the same math written as plain PyTorch ops (``F.conv1d``) around the loop-over-time
``ssd_naive``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hybriddsl.kernels.ssd import chunked, ssd_naive
from hybriddsl.kernels.ssd.mamba2_scan import mamba2_scan


def reference(u, conv_w, conv_b, dt, dt_bias, A_log, D, dims, limits):
    """The definition: causal depthwise conv, silu, split, Δ = clamp(softplus(δ + b)), the SSD loop, the D skip."""
    H, P, G, N = dims
    B, T = u.shape[:2]
    width, K = conv_w.shape
    pre = F.conv1d(u.transpose(1, 2), conv_w[:, None], conv_b, padding=K - 1, groups=width)[..., :T].transpose(1, 2)
    x, Bm, C = F.silu(pre).split([H * P, G * N, G * N], -1)
    x, Bm, C = x.reshape(B, T, H, P), Bm.reshape(B, T, G, N), C.reshape(B, T, G, N)
    delta = F.softplus(dt + dt_bias)
    lo, hi = limits
    if lo > 0 or hi is not None:
        delta = delta.clamp(min=lo, max=hi)
    o, _ = ssd_naive(C, Bm, x * delta[..., None], -torch.exp(A_log) * delta, 1.0)
    return o + x * D[:, None]


def inputs(B, T, dims, dtype, seed=0, dt_shift=0.0, conv=4, conv_bias=True):
    """u, conv weight [width, conv] and bias (or None), δ, b_dt, A_log, D: leaves in ``dtype``."""
    H, P, G, N = dims
    width = H * P + 2 * G * N
    gen = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)
    u, dt = rnd(B, T, width), rnd(B, T, H) + dt_shift
    conv_w, conv_b = rnd(width, conv) * 0.5, rnd(width) if conv_bias else None
    dt_bias, A_log, D = rnd(H), rnd(H), rnd(H)
    return [None if t is None else t.to(dtype).requires_grad_(True) for t in (u, conv_w, conv_b, dt, dt_bias, A_log, D)]


# (B, T, (H, P, G, N), limits, conv, conv_bias): one group for 4 heads, two groups, a single head; T over chunks
# of 16 not a multiple; dt limits as Nemotron-H (min only) and both; conv widths 4, 2 and 1, with and without bias.
CASES = [
    (2, 37, (4, 3, 1, 5), (0.0, None), 4, True),
    (2, 37, (4, 3, 2, 5), (1e-3, 0.5), 2, False),
    (1, 20, (1, 2, 1, 3), (0.1, None), 1, True),
]


@pytest.mark.parametrize("tiles", [1, 4, 64])
@pytest.mark.parametrize("case", CASES, ids=["G1R4", "G2R2-limits", "H1-min"])
def test_gradcheck(monkeypatch, tiles, case):
    """float64 gradcheck of the hand-written backward (every input: u, conv weight and bias, δ, b_dt, A_log, D),
    across block sizes (the conv reads across block boundaries)."""
    monkeypatch.setattr(chunked, "BLOCK_TILES", tiles)
    B, T, dims, limits, conv, conv_bias = case
    args = inputs(B, T, dims, torch.float64, dt_shift=-1.0, conv=conv, conv_bias=conv_bias)
    given = [a for a in args if a is not None]

    def fn(*a):
        a = list(a)
        full = [a.pop(0) if x is not None else None for x in args]
        return mamba2_scan(*full, dims, limits, 16)

    assert torch.autograd.gradcheck(fn, tuple(given), atol=1e-7)


@pytest.mark.parametrize("dt_shift", [-12.0, 0.0, 6.0], ids=["decay-near1", "mid", "decay-near0"])
@pytest.mark.parametrize("case", CASES, ids=["G1R4", "G2R2-limits", "H1-min"])
def test_float32_against_float64_reference(case, dt_shift):
    """float32 fused scan against the float64 definition, output and every gradient; δ shifted so Δ A runs
    from about -1e-5 (decay near 1) to about -6 e^A per token (near 0)."""
    B, T, dims, limits, conv, conv_bias = case
    ref_args = inputs(B, T, dims, torch.float64, seed=1, dt_shift=dt_shift, conv=conv, conv_bias=conv_bias)
    args = [None if t is None else t.detach().float().requires_grad_(True) for t in ref_args]
    y_ref = reference(*ref_args, dims, limits)
    y = mamba2_scan(*args, dims, limits, 16)
    assert y.dtype == torch.float32
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    names = [n for n, t in zip(["du", "dconv_w", "dconv_b", "ddt", "dbias", "dA_log", "dD"], args) if t is not None]
    g_ref = torch.autograd.grad((y_ref * w).sum(), [t for t in ref_args if t is not None])
    g = torch.autograd.grad((y.double() * w).sum(), [t for t in args if t is not None])
    scale = lambda t: t.abs().max().item() + 1e-6
    assert (y.double() - y_ref).abs().max().item() <= 1e-4 * scale(y_ref)
    for name, r, got in zip(names, g_ref, g):
        assert (got.double() - r).abs().max().item() <= 1e-3 * scale(r), name


def test_no_grad_equals_grad_path():
    dims, limits = (4, 3, 2, 5), (0.0, None)
    args = inputs(2, 40, dims, torch.float32)
    y = mamba2_scan(*args, dims, limits, 16)
    with torch.no_grad():
        y2 = mamba2_scan(*args, dims, limits, 16)
    assert torch.equal(y.detach(), y2)
