"""The moe kind for the registry: options, cross-option checks, FLOP formula (no torch here).

The module itself is in :mod:`hybriddsl.layers.moe`, imported only when a layer is built."""

from __future__ import annotations

from typing import Any

from hybriddsl.registry import LayerSpec, Option
from hybriddsl.specs.refs import module_ref


def validate(opts: dict[str, Any], hidden: int) -> str | None:
    """top_k within the experts; capacity-based dropping is not offered."""
    e, k = opts.get("experts", 8), opts.get("top_k", 2)
    if k > e:
        return f"top_k ({k}) must be <= experts ({e})"
    if opts.get("capacity") is not None:
        return (
            "capacity (token dropping) is not supported: every token goes to its top-k experts; "
            "dropping would make a token's output depend on the other tokens of the batch, breaking "
            "causality and step-by-step decoding. Leave capacity unset"
        )
    return None


def moe_flops(opts: dict[str, Any], hidden: int, params: int, seq_len: int) -> int:
    """FLOPs per token: the router plus ``top_k`` of the ``experts`` FFNs (2 FLOPs per weight used)."""
    e, k = opts.get("experts", 8), opts.get("top_k", 2)
    router = hidden * e
    per_expert = (params - router) // e
    return 2 * (router + k * per_expert)


SPEC = LayerSpec(
    name="moe",
    aliases=("E",),
    letter="E",
    summary="mixture-of-experts FFN, top-k router (Shazeer et al. 2017; Switch / Mixtral)",
    factory=module_ref("hybriddsl.layers.moe", "MoE"),
    options=(
        Option("experts", int, 8, "number of expert FFNs", min=1),
        Option("top_k", int, 2, "experts per token", min=1),
        Option("mult", float, 4.0, "expert inner width as a multiple of hidden", min=0.01),
        Option("act", str, "gelu", "expert activation", choices=("gelu", "swiglu", "geglu")),
        Option("capacity", float, None, "expert capacity factor (unsupported: leave unset)", optional=True),
        Option("aux_weight", float, 0.01, "weight of the load-balancing loss on module.aux_loss", min=0.0),
        Option("bias", bool, False, "biases in the experts"),
    ),
    validate=validate,
    flops=moe_flops,
    color="#f0d0a0",
    key_options=("experts", "top_k"),
)
