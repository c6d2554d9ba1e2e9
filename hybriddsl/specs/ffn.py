"""The ffn kind for the registry: options, cross-option checks, FLOP formula (no torch here).

The module itself is in :mod:`hybriddsl.layers.ffn`, imported only when a layer is built."""

from __future__ import annotations

from hybriddsl.registry import LayerSpec, Option
from hybriddsl.specs.refs import module_ref

SPEC = LayerSpec(
    name="ffn",
    aliases=("F", "mlp", "-"),
    letter="F",
    summary="feed-forward MLP (GELU or SwiGLU)",
    factory=module_ref("hybriddsl.layers.ffn", "FFN"),
    options=(
        Option("mult", float, 4.0, "inner width as a multiple of hidden", min=0.01),
        Option("inner", int, None, "inner width (overrides mult)", min=1, optional=True),
        Option("act", str, "gelu", "activation", choices=("gelu", "swiglu", "geglu")),
        Option("bias", bool, True, "biases on the projections"),
    ),
    color="#f5e6c8",
    key_options=("act", "mult"),
)
