"""The parallel kind for the registry: options, cross-option checks, FLOP formula (no torch here).

The module itself is in :mod:`hybriddsl.layers.parallel`, imported only when a layer is built."""

from __future__ import annotations

from typing import Any

from hybriddsl.registry import LayerSpec, Option
from hybriddsl.specs.refs import module_ref


def _flops(opts: dict[str, Any], hidden: int, params: int, seq_len: int) -> int:
    from hybriddsl import registry
    from hybriddsl.passes.count import layer_cost

    total = 2 * params
    for branch in opts["branches"]:
        for b in branch:
            spec = registry.get(b["kind"])
            p, _ = layer_cost(b["kind"], b["opts"], hidden, seq_len)
            total += spec.flops(b["opts"], hidden, p, seq_len) - 2 * p
    return total


SPEC = LayerSpec(
    name="parallel",
    aliases=(),
    letter="P",
    summary="branches on the same input, combined by mean, learned gate or concat+projection (Hymba, Falcon-H1)",
    factory=module_ref("hybriddsl.layers.parallel", "Parallel"),
    options=(Option("mix", str, "mean", "how branch outputs combine", choices=("mean", "gate", "concat")),),
    flops=_flops,
    color="#e8e8ff",
    key_options=("branches", "mix"),
    internal=True,
)
