"""Kolmogorov-Arnold network block (Liu et al. 2024, "KAN: Kolmogorov-Arnold Networks").

A KAN layer puts a learnable 1-D function on every edge ``i -> j`` and sums at the node::

    y_j = sum_i phi_ji(x_i),      phi_ji(x) = w_b[j,i] silu(x) + sum_m c[j,i,m] B_m(tanh x)

``B_m`` are the ``grid + order`` B-spline bases of degree ``order`` on a uniform grid of ``grid`` intervals over
[-1, 1], extended by ``order`` knots on each side (knots ``u_k = -1 + (k - order) h``, ``h = 2 / grid``,
``k = 0..grid + 2 order``), by the Cox-de Boor recursion::

    B_{k,0}(x) = [u_k <= x < u_{k+1}]
    B_{k,p}(x) = (x - u_k) / (u_{k+p} - u_k) B_{k,p-1}(x) + (u_{k+p+1} - x) / (u_{k+p+1} - u_{k+1}) B_{k+1,p-1}(x)

Choice: the spline branch reads ``tanh(x)``, not ``x`` (efficient-kan feeds ``x`` as is). Over [-1, 1] the bases
sum to one (partition of unity); squashing keeps every input there, so no input falls off the grid where every
basis is zero and its spline branch would be dead. The residual ``silu(x)`` branch sees ``x`` unchanged. The
paper's per-edge scale ``w_s`` is folded into the coefficients ``c`` (it is redundant with them).

The block is two KAN layers, ``hidden -> inner -> hidden``. Initialization follows the paper: ``w_b`` Xavier
uniform, ``c ~ N(0, 0.1^2)``, here divided by ``sqrt(fan_in)`` so the sum over inputs stays O(0.1) at any width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hybriddsl.layers.base import Mixer, options_from
from hybriddsl.specs.kan import SPEC, kan_flops  # noqa: F401 (the kind's spec, torch-free)


def knots(grid: int, order: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The ``grid + 2 order + 1`` uniform knots: [-1, 1] cut into ``grid`` intervals, ``order`` more per side."""
    h = 2.0 / grid
    return torch.arange(-order, grid + order + 1, device=device, dtype=dtype) * h - 1.0


def bspline_basis(x: torch.Tensor, grid: int, order: int) -> torch.Tensor:
    """B-spline bases of degree ``order``: x [...] -> [..., grid + order] (Cox-de Boor, vectorized over knots).

    Computed in float32 or wider; returns x's dtype.
    """
    xf = x.to(torch.promote_types(x.dtype, torch.float32)).unsqueeze(-1)
    u = knots(grid, order, x.device, xf.dtype)
    b = ((xf >= u[:-1]) & (xf < u[1:])).to(xf.dtype)  # degree 0: [..., grid + 2 order]
    for p in range(1, order + 1):
        left = (xf - u[: -(p + 1)]) / (u[p:-1] - u[: -(p + 1)]) * b[..., :-1]
        right = (u[p + 1 :] - xf) / (u[p + 1 :] - u[1:-p]) * b[..., 1:]
        b = left + right
    return b.to(x.dtype)


class KANLinear(nn.Module):
    """One KAN layer: x [..., in_features] -> [..., out_features].

    ``base_weight`` [out, in] scales ``silu(x_i)``; ``spline_weight`` [out, in, grid + order] holds the
    coefficients of each edge's spline.
    """

    def __init__(self, in_features: int, out_features: int, grid: int = 5, order: int = 3):
        super().__init__()
        self.grid, self.order = grid, order
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.spline_weight = nn.Parameter(torch.empty(out_features, in_features, grid + order))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.base_weight)
        nn.init.normal_(self.spline_weight, std=0.1 / math.sqrt(self.base_weight.shape[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        basis = bspline_basis(torch.tanh(x), self.grid, self.order)  # [..., in, G]
        spline = F.linear(basis.flatten(-2), self.spline_weight.flatten(1))
        return F.linear(F.silu(x), self.base_weight) + spline


@options_from(SPEC)
class KAN(Mixer):
    """Two KAN layers ``hidden -> inner -> hidden``, position-wise. x: [batch, seq, hidden] -> same."""

    def __init__(self, hidden_size: int, *, grid: int, order: int, inner: int | None):
        super().__init__()
        inner = inner or hidden_size
        self.layers = nn.Sequential(
            KANLinear(hidden_size, inner, grid, order), KANLinear(inner, hidden_size, grid, order)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
