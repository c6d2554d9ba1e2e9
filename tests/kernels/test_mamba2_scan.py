"""The fused Mamba-2 CPU scan (kernels/ssd/mamba2_scan.py: silu, Δ, SSD and D skip per block, hand-written
backward) against the same math written as plain PyTorch ops around the loop-over-time ``ssd_naive``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hybriddsl.kernels.ssd import chunked, ssd_naive
from hybriddsl.kernels.ssd.mamba2_scan import mamba2_scan


def reference(u, dt, dt_bias, A_log, D, dims, limits):
    """The definition: silu, split, Δ = clamp(softplus(δ + b)), the SSD loop, the D skip."""
    H, P, G, N = dims
    B, T = u.shape[:2]
    x, Bm, C = F.silu(u).split([H * P, G * N, G * N], -1)
    x, Bm, C = x.reshape(B, T, H, P), Bm.reshape(B, T, G, N), C.reshape(B, T, G, N)
    delta = F.softplus(dt + dt_bias)
    lo, hi = limits
    if lo > 0 or hi is not None:
        delta = delta.clamp(min=lo, max=hi)
    o, _ = ssd_naive(C, Bm, x * delta[..., None], -torch.exp(A_log) * delta, 1.0)
    return o + x * D[:, None]


def inputs(B, T, dims, dtype, seed=0, dt_shift=0.0):
    H, P, G, N = dims
    gen = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)
    u, dt = rnd(B, T, H * P + 2 * G * N), rnd(B, T, H) + dt_shift
    dt_bias, A_log, D = rnd(H), rnd(H), rnd(H)
    return [t.to(dtype).requires_grad_(True) for t in (u, dt, dt_bias, A_log, D)]


# (B, T, (H, P, G, N), limits): one group for 4 heads, two groups, a single head; T over chunks of 16 not a
# multiple; dt limits as Nemotron-H (min only) and both.
CASES = [
    (2, 37, (4, 3, 1, 5), (0.0, None)),
    (2, 37, (4, 3, 2, 5), (1e-3, 0.5)),
    (1, 20, (1, 2, 1, 3), (0.1, None)),
]


@pytest.mark.parametrize("tiles", [1, 4, 64])
@pytest.mark.parametrize("case", CASES, ids=["G1R4", "G2R2-limits", "H1-min"])
def test_gradcheck(monkeypatch, tiles, case):
    """float64 gradcheck of the hand-written backward (every input: u, δ, b_dt, A_log, D), across block sizes."""
    monkeypatch.setattr(chunked, "BLOCK_TILES", tiles)
    B, T, dims, limits = case
    args = inputs(B, T, dims, torch.float64, dt_shift=-1.0)
    assert torch.autograd.gradcheck(lambda *a: mamba2_scan(*a, dims, limits, 16), tuple(args), atol=1e-7)


@pytest.mark.parametrize("dt_shift", [-12.0, 0.0, 6.0], ids=["decay-near1", "mid", "decay-near0"])
@pytest.mark.parametrize("case", CASES, ids=["G1R4", "G2R2-limits", "H1-min"])
def test_float32_against_float64_reference(case, dt_shift):
    """float32 fused scan against the float64 definition, output and every gradient; δ shifted so Δ A runs
    from about -1e-5 (decay near 1) to about -6 e^A per token (near 0)."""
    B, T, dims, limits = case
    ref_args = inputs(B, T, dims, torch.float64, seed=1, dt_shift=dt_shift)
    args = [t.detach().float().requires_grad_(True) for t in ref_args]
    y_ref = reference(*ref_args, dims, limits)
    y = mamba2_scan(*args, dims, limits, 16)
    assert y.dtype == torch.float32
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    g_ref = torch.autograd.grad((y_ref * w).sum(), ref_args)
    g = torch.autograd.grad((y.double() * w).sum(), args)
    scale = lambda t: t.abs().max().item() + 1e-6
    assert (y.double() - y_ref).abs().max().item() <= 1e-4 * scale(y_ref)
    for name, r, got in zip(["du", "ddt", "dbias", "dA_log", "dD"], g_ref, g):
        assert (got.double() - r).abs().max().item() <= 1e-3 * scale(r), name


def test_no_grad_equals_grad_path():
    dims, limits = (4, 3, 2, 5), (0.0, None)
    args = inputs(2, 40, dims, torch.float32)
    y = mamba2_scan(*args, dims, limits, 16)
    with torch.no_grad():
        y2 = mamba2_scan(*args, dims, limits, 16)
    assert torch.equal(y.detach(), y2)
