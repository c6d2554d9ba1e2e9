"""The ffn kind for the registry: options, cross-option checks, FLOP formula (no torch here).

The module itself is in :mod:`hybriddsl.layers.ffn`, imported only when a layer is built."""

from __future__ import annotations

from hybriddsl.layer_spec import LayerSpec, Option
from hybriddsl.specs.refs import module_ref

ACTS = ("gelu", "swiglu", "geglu", "geglu_tanh", "relu2")  # relu2: squared ReLU, ungated (Nemotron-H)
GATED = ("swiglu", "geglu", "geglu_tanh")  # activations that gate one half of ``up`` with the other

SPEC = LayerSpec(
    name="ffn",
    aliases=("F", "mlp", "-"),
    letter="F",
    summary="feed-forward MLP (GELU, SwiGLU, GeGLU or squared ReLU)",
    factory=module_ref("hybriddsl.layers.ffn", "FFN"),
    options=(
        Option("mult", float, 4.0, "inner width as a multiple of hidden", min=0.01),
        Option("inner", int, None, "inner width (overrides mult)", min=1, optional=True),
        Option(
            "act",
            str,
            "gelu",
            "activation (geglu_tanh: tanh-approximated GELU; relu2: squared ReLU, ungated)",
            choices=ACTS,
        ),
        Option("bias", bool, True, "biases on the projections"),
    ),
    color="#f5e6c8",
    key_options=("act", "mult"),
)
