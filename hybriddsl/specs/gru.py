"""The gru kind for the registry: options, cross-option checks, FLOP formula (no torch here).

The module itself is in :mod:`hybriddsl.layers.gru`, imported only when a layer is built."""

from __future__ import annotations

from hybriddsl.layer_spec import LayerSpec, Option
from hybriddsl.specs.refs import module_ref


def gru_flops(opts: dict, hidden: int, params: int, seq_len: int) -> int:
    """FLOPs per token: ``2 params`` for the matrix products plus about 10 elementwise ops per state unit."""
    size = opts["size"] or hidden
    return 2 * params + 10 * size


SPEC = LayerSpec(
    name="gru",
    aliases=(),  # "GRU" is the canonical name in another case: names are case-insensitive
    letter="GRU",
    summary="gated recurrent unit layer (Cho et al. 2014)",
    factory=module_ref("hybriddsl.layers.gru", "GRU"),
    options=(
        Option("size", int, None, "state width (default hidden; a projection maps it back)", min=1, optional=True),
        Option("bias", bool, True, "biases on the gates"),
    ),
    flops=gru_flops,
    recurrent=True,
    color="#c9d7f0",
    key_options=("size",),
)
