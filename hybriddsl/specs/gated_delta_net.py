"""The gated_delta_net kind for the registry: options, cross-option checks, FLOP formula (no torch here).

The module itself is in :mod:`hybriddsl.layers.gated_delta_net`, imported only when a layer is built."""

from __future__ import annotations

from hybriddsl.layer_spec import LayerSpec, Option
from hybriddsl.specs.delta_common import delta_flops, validate
from hybriddsl.specs.refs import module_ref
from hybriddsl.tiles import CHUNK_MIN

SPEC = LayerSpec(
    name="gated_delta_net",
    aliases=("GD", "gdn"),
    letter="GD",
    summary="Gated DeltaNet: delta rule with Mamba-2 decay and gated output norm (Yang et al. 2025)",
    factory=module_ref("hybriddsl.layers.gated_delta_net", "GatedDeltaNet"),
    options=(
        Option("heads", int, 4, "heads", min=1),
        Option("head_dim", int, None, "width of a q/k head (default hidden // heads)", min=1, optional=True),
        Option("expand_v", float, 1.0, "value width per head as a multiple of head_dim (paper: 2)", min=0.0),
        Option("conv", int, 4, "width of the short causal convs on q, k, v (0: none)", min=0),
        Option("chunk", int, 64, "chunk length of the delta-rule kernel (power of two >= 16)", min=CHUNK_MIN),
        Option("bias", bool, False, "biases on the q/k/v/gate/output projections"),
        Option(
            "v_heads",
            int,
            None,
            "value heads, a multiple of heads (each q/k head serves v_heads / heads; Qwen3-Next)",
            min=1,
            optional=True,
        ),
        Option("out_eps", float, 1e-5, "epsilon of the gated output RMSNorm", min=0.0),
    ),
    validate=validate,
    flops=delta_flops(7),
    recurrent=True,
    color="#a8d5a2",
    key_options=("heads", "expand_v"),
)
