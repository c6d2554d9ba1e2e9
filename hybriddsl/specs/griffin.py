"""The griffin kind for the registry: options, cross-option checks, FLOP formula (no torch here).

The module itself is in :mod:`hybriddsl.layers.griffin`, imported only when a layer is built."""

from __future__ import annotations

from typing import Any

from hybriddsl.layer_spec import LayerSpec, Option
from hybriddsl.specs.refs import module_ref


def validate(opts: dict[str, Any], hidden: int) -> str | None:
    """Cross-option checks, run before anything is allocated."""
    if opts["conv"] < 1:
        return f"conv (the temporal conv width) must be >= 1, got {opts['conv']}"
    w = opts["width"]
    if w is not None and w < 1:
        return f"width must be >= 1, got {w}"
    n = opts["gate_blocks"]
    if n is not None and (n < 1 or (w or hidden) % n):
        return f"gate_blocks ({n}) must divide the recurrent width ({w or hidden})"
    return None


SPEC = LayerSpec(
    name="griffin",
    aliases=("L", "lru", "rglru"),
    edifice=("griffin_lru",),
    letter="L",
    summary="Griffin recurrent block: gelu branch * RG-LRU over a short conv (De et al. 2024)",
    factory=module_ref("hybriddsl.layers.griffin", "GriffinBlock"),
    options=(
        Option(
            "width",
            int,
            None,
            "recurrent width (default hidden, RecurrentGemma's lru_width)",
            min=1,
            optional=True,
        ),
        Option("conv", int, 4, "temporal conv width", min=1),
        Option("mlp", bool, True, "attach Griffin's gated MLP (ffn geglu, mult 3) as its own residual block"),
        Option("gelu_tanh", bool, False, "tanh-approximated GELU on the y branch (RecurrentGemma)"),
        Option(
            "gate_blocks",
            int,
            None,
            "block-diagonal RG-LRU gates with this many blocks (RecurrentGemma: heads); default dense",
            min=1,
            optional=True,
        ),
        Option("reset", bool, False, "RG-LRU input multiplier 1 at position 0 (RecurrentGemma's reset)"),
    ),
    validate=validate,
    companions=lambda o: [("ffn", {"act": "geglu", "mult": 3.0})] if o["mlp"] else [],
    recurrent=True,
    color="#b3e5fc",
    key_options=("width",),
)
