"""The kan kind for the registry: options, cross-option checks, FLOP formula (no torch here).

The module itself is in :mod:`hybriddsl.layers.kan`, imported only when a layer is built."""

from __future__ import annotations

from hybriddsl.layer_spec import LayerSpec, Option
from hybriddsl.specs.refs import module_ref


def kan_flops(opts: dict, hidden: int, params: int, seq_len: int) -> int:
    """FLOPs per token: ``2 params`` for the weighted sums plus the bases: about ``6 (grid + 2 order)`` per
    degree and input (two divisions, products and a sum per knot) and a few for tanh/silu; approximate."""
    g, k = opts["grid"], opts["order"]
    inner = opts["inner"] or hidden
    per_input = 6 * (g + 2 * k) * k + 10
    return 2 * params + per_input * (hidden + inner)


SPEC = LayerSpec(
    name="kan",
    aliases=("K",),
    letter="K",
    summary="Kolmogorov-Arnold network block, B-spline edges (Liu et al. 2024)",
    factory=module_ref("hybriddsl.layers.kan", "KAN"),
    options=(
        Option("grid", int, 5, "grid intervals over [-1, 1] (Edifice's kan_grid_size)", min=1),
        Option("order", int, 3, "spline degree", min=1, max=8),
        Option("inner", int, None, "width between the two KAN layers (default hidden)", min=1, optional=True),
    ),
    flops=kan_flops,
    color="#d9c2e9",
    key_options=("grid", "order"),
)
