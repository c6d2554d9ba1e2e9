"""The mamba kind for the registry: options, cross-option checks, FLOP formula (no torch here).

The module itself is in :mod:`hybriddsl.layers.mamba`, imported only when a layer is built."""

from __future__ import annotations

from typing import Any

from hybriddsl.layer_spec import LayerSpec, Option
from hybriddsl.specs.refs import module_ref


def validate(opts: dict[str, Any], hidden: int) -> str | None:
    """Cross-option checks, run before anything is allocated."""
    for name, lo in (("state", 1), ("expand", 1), ("conv", 1)):
        v = opts[name]
        if v < lo:
            return f"{name} must be >= {lo}, got {v}"
    r = opts["dt_rank"]
    if r is not None and r < 1:
        return f"dt_rank must be >= 1 (or unset for ceil(hidden / 16)), got {r}"
    return None


def mamba_flops(opts: dict[str, Any], hidden: int, params: int, seq_len: int) -> int:
    """FLOPs per token: projections ``2 params`` plus the scan, about ``9 D_in N`` (discretize ``exp(Δ A)``
    and ``Δ u B``, the state update, the ``C`` read-out; the paper's section 3.3 count)."""
    d_inner = opts["expand"] * hidden
    return int(2 * params + 9 * d_inner * opts["state"])


SPEC = LayerSpec(
    name="mamba",
    aliases=("M", "ssm"),
    letter="M",
    summary="Mamba-1 selective SSM: input-dependent Δ, B, C, causal conv, SiLU gate (Gu & Dao 2023)",
    factory=module_ref("hybriddsl.layers.mamba", "Mamba"),
    options=(
        Option("state", int, 16, "SSM state size N per channel", min=1),
        Option("expand", int, 2, "inner width D_in as a multiple of hidden", min=1),
        Option("conv", int, 4, "width of the causal depthwise conv", min=1),
        Option("dt_rank", int, None, "rank of the Δ projection (default ceil(hidden / 16))", min=1, optional=True),
        Option("bias", bool, False, "biases on the in/out projections"),
        Option("conv_bias", bool, True, "bias on the conv"),
        Option("bc_norm", bool, False, "RMSNorm on the low-rank Δ input, B and C (Jamba)"),
        Option("bc_norm_eps", float, 1e-6, "epsilon of those norms", min=0.0),
    ),
    validate=validate,
    flops=mamba_flops,
    recurrent=True,
    color="#bbdefb",
    key_options=("state", "expand"),
)
