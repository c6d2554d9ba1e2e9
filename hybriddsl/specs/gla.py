"""The gla kind for the registry: options, cross-option checks, FLOP formula (no torch here).

The module itself is in :mod:`hybriddsl.layers.gla`, imported only when a layer is built."""

from __future__ import annotations

from typing import Any

from hybriddsl.layer_spec import LayerSpec, Option
from hybriddsl.specs.refs import module_ref
from hybriddsl.tiles import CHUNK_SIZES


def _widths(hidden: int, expand_k: float, expand_v: float) -> tuple[int, int]:
    return int(hidden * expand_k), int(hidden * expand_v)


def validate(opts: dict[str, Any], hidden: int) -> str | None:
    """Cross-option checks, run before anything is allocated."""
    heads = opts["heads"]
    ek, ev = opts["expand_k"], opts["expand_v"]
    kd, vd = _widths(hidden, ek, ev)
    if kd < heads or kd % heads:
        return f"heads ({heads}) must divide the key width expand_k * hidden = {ek} * {hidden} = {kd}"
    if vd < heads or vd % heads:
        return f"heads ({heads}) must divide the value width expand_v * hidden = {ev} * {hidden} = {vd}"
    return None


def gla_flops(opts: dict[str, Any], hidden: int, params: int, seq_len: int) -> int:
    """FLOPs per token: projections ``2 params`` plus the state update and read-out, ``4 dk dv`` per head
    (``k v^T`` and the decay on the state, ``q^T S``), i.e. ``4 key_width value_width / heads``."""
    kd, vd = _widths(hidden, opts["expand_k"], opts["expand_v"])
    return int(2 * params + 4 * kd * vd // opts["heads"])


SPEC = LayerSpec(
    name="gla",
    aliases=("G",),
    letter="G",
    summary="gated linear attention, per-key-dim data-dependent decay (Yang et al. 2024)",
    factory=module_ref("hybriddsl.layers.gla", "GLA"),
    options=(
        Option("heads", int, 4, "heads", min=1),
        Option("expand_k", float, 0.5, "key width as a multiple of hidden", min=0.0),
        Option("expand_v", float, 1.0, "value width as a multiple of hidden", min=0.0),
        Option("rank", int, 16, "rank of the low-rank decay projection", min=1),
        Option(
            "gate_norm",
            float,
            16.0,
            "divides logsigmoid of the decay logits (fla gate_logit_normalizer)",
            min=1e-6,
        ),
        Option("chunk", int, 64, "chunk length of the kernel (its tile length)", choices=CHUNK_SIZES),
    ),
    validate=validate,
    flops=gla_flops,
    recurrent=True,
    color="#c8e6c9",
    key_options=("heads", "expand_k"),
)
