"""kan: the B-spline basis against a scalar Cox-de Boor recursion, the block against a per-edge sum, shared checks.

check_trains needs memory (predict the token two steps back), which a position-wise block cannot have; the
position-wise learning test here fits a fixed random teacher instead.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hybriddsl.layers.kan import KAN, SPEC, KANLinear, bspline_basis
from tests.layers.checks import check_causal, check_dtypes, check_gradcheck, check_step_matches_forward


def cox_de_boor(k: int, p: int, x: float, u: list[float]) -> float:
    """B_{k,p}(x) on knots u, by the textbook recursion (0/0 terms taken as 0)."""
    if p == 0:
        return 1.0 if u[k] <= x < u[k + 1] else 0.0
    out = 0.0
    if u[k + p] != u[k]:
        out += (x - u[k]) / (u[k + p] - u[k]) * cox_de_boor(k, p - 1, x, u)
    if u[k + p + 1] != u[k + 1]:
        out += (u[k + p + 1] - x) / (u[k + p + 1] - u[k + 1]) * cox_de_boor(k + 1, p - 1, x, u)
    return out


def knots_by_hand(grid: int, order: int) -> list[float]:
    h = 2.0 / grid
    return [-1.0 + (i - order) * h for i in range(grid + 2 * order + 1)]


@pytest.mark.parametrize("grid,order", [(5, 3), (3, 1), (7, 2), (4, 4)], ids=["G5-K3", "G3-K1", "G7-K2", "G4-K4"])
def test_basis_matches_cox_de_boor(grid, order):
    u = knots_by_hand(grid, order)
    xs = torch.linspace(u[0] - 0.3, u[-1] + 0.3, 97, dtype=torch.float64)
    got = bspline_basis(xs, grid, order)
    assert got.shape == (97, grid + order)
    ref = torch.tensor(
        [[cox_de_boor(k, order, float(x), u) for k in range(grid + order)] for x in xs], dtype=torch.float64
    )
    assert (got - ref).abs().max() < 1e-12


@pytest.mark.parametrize("grid,order", [(5, 3), (2, 1), (8, 5)], ids=["G5-K3", "G2-K1", "G8-K5"])
def test_partition_of_unity(grid, order):
    x = torch.rand(1000, dtype=torch.float64) * 2 - 1  # [-1, 1)
    b = bspline_basis(x, grid, order)
    assert (b >= 0).all()
    assert torch.allclose(b.sum(-1), torch.ones_like(x), atol=1e-12)


@torch.no_grad()
def reference_kan_linear(m: KANLinear, x: torch.Tensor) -> torch.Tensor:
    """y_j = sum_i w_b[j,i] silu(x_i) + sum_i sum_m c[j,i,m] B_m(tanh x_i), edge by edge, float64."""
    u = knots_by_hand(m.grid, m.order)
    n_out, n_in = m.base_weight.shape
    flat = x.double().reshape(-1, n_in)
    out = torch.zeros(flat.shape[0], n_out, dtype=torch.float64)
    for r in range(flat.shape[0]):
        for i in range(n_in):
            xi = float(flat[r, i])
            silu = xi / (1 + math.exp(-xi))
            bases = [cox_de_boor(k, m.order, math.tanh(xi), u) for k in range(m.grid + m.order)]
            for j in range(n_out):
                c = m.spline_weight[j, i].tolist()
                out[r, j] += float(m.base_weight[j, i]) * silu + sum(cm * bm for cm, bm in zip(c, bases))
    return out.reshape(*x.shape[:-1], n_out)


def test_block_matches_per_edge_sum():
    torch.manual_seed(0)
    m = KAN(4, grid=4, order=2, inner=3)
    x = torch.randn(2, 3, 4) * 1.5
    ref = reference_kan_linear(m.layers[1], reference_kan_linear(m.layers[0], x))
    with torch.no_grad():
        assert (m(x).double() - ref).abs().max() < 1e-5


def test_param_count():
    h, inner, g, k = 16, 24, 5, 3
    m = KAN(h, grid=g, order=k, inner=inner)
    # every edge: one base weight and grid + order spline coefficients; two layers h->inner->h
    assert sum(p.numel() for p in m.parameters()) == 2 * h * inner * (1 + g + k)


@pytest.mark.parametrize("opts", [dict(), dict(grid=3, order=2, inner=8)], ids=["G5-K3", "G3-K2-I8"])
def test_shared_checks(opts):
    check_step_matches_forward(KAN(16, **opts), 16, seq=9)
    check_causal(KAN(16, **opts), 16)
    check_gradcheck(KAN(4, **{**opts, "inner": 3}), 4)
    check_dtypes(KAN(16, **opts), 16)


def test_learns_a_pointwise_function():
    """A KAN block fits a fixed random tanh teacher; the MSE falls below a quarter of the start."""
    torch.manual_seed(0)
    h = 8
    teacher = nn.Sequential(nn.Linear(h, 16), nn.Tanh(), nn.Linear(16, h))
    m = KAN(h, grid=5, order=3)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(150):
        x = torch.randn(64, 4, h)
        with torch.no_grad():
            y = teacher(x)
        loss = (m(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.25 * sum(losses[:5]) / 5


def test_bad_options():
    assert SPEC.option("grid").check(0) == "option 'grid' must be >= 1, got 0"
    assert SPEC.option("order").check(0) == "option 'order' must be >= 1, got 0"
    assert SPEC.option("inner").check("wide") == "option 'inner' takes an integer, got 'wide'"
