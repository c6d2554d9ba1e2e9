"""The delta_net kind for the registry: options, cross-option checks, FLOP formula (no torch here).

The module itself is in :mod:`hybriddsl.layers.delta_net`, imported only when a layer is built."""

from __future__ import annotations

from typing import Any

from hybriddsl.layer_spec import LayerSpec, Option
from hybriddsl.specs.delta_common import delta_flops
from hybriddsl.specs.delta_common import validate as delta_validate
from hybriddsl.specs.refs import module_ref
from hybriddsl.tiles import CHUNK_MIN

# What DeltaNet fixes where Gated DeltaNet has options: values as wide as keys, one value head per q/k head,
# fla's epsilon of the output norm.
FIXED: dict[str, Any] = {"expand_v": 1.0, "v_heads": None, "norm_eps": 1e-5}


def validate(opts: dict[str, Any], hidden: int) -> str | None:
    """The delta-rule checks shared with gated_delta_net, on DeltaNet's fixed value shape."""
    return delta_validate({**opts, **FIXED}, hidden)


def _flops(opts: dict[str, Any], hidden: int, params: int, seq_len: int) -> int:
    return delta_flops(6)({**opts, **FIXED}, hidden, params, seq_len)


SPEC = LayerSpec(
    name="delta_net",
    aliases=("D", "delta"),
    letter="D",
    summary="DeltaNet: linear attention with the delta rule (Yang et al. 2024)",
    factory=module_ref("hybriddsl.layers.delta_net", "DeltaNet"),
    options=(
        Option("heads", int, 4, "heads", min=1),
        Option("head_dim", int, None, "width of a head (default hidden // heads)", min=1, optional=True),
        Option("conv", int, 4, "width of the short causal convs on q, k, v (0: none)", min=0),
        Option("chunk", int, 64, "chunk length of the delta-rule kernel (power of two >= 16)", min=CHUNK_MIN),
        Option("bias", bool, False, "biases on the q/k/v/output projections"),
    ),
    validate=validate,
    flops=_flops,
    recurrent=True,
    color="#c9e4c5",
    key_options=("heads", "head_dim"),
)
