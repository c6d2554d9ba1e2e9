"""The rwkv kind for the registry: options, cross-option checks, FLOP formula (no torch here).

The module itself is in :mod:`hybriddsl.layers.rwkv`, imported only when a layer is built."""

from __future__ import annotations

import math
from typing import Any

from hybriddsl.layer_spec import LayerSpec, Option
from hybriddsl.specs.refs import module_ref
from hybriddsl.tiles import CHUNK_SIZES


def validate(opts: dict[str, Any], hidden: int) -> str | None:
    """Cross-option checks, run before anything is allocated."""
    hs = opts["head_size"]
    if hidden % hs:
        divisors = [d for d in (64, 32, 16, 8) if hidden % d == 0] or [math.gcd(hidden, hs)]
        return (
            f"head_size ({hs}) must divide hidden ({hidden}): heads = hidden / head_size; "
            f"set head_size to a divisor of hidden, e.g. head_size = {divisors[0]}"
        )
    return None


def rwkv_flops(opts: dict[str, Any], hidden: int, params: int, seq_len: int) -> int:
    """FLOPs per token: ``2 params`` plus the WKV state update and read-out, ``4 head_size^2`` per head
    (= ``4 hidden head_size``)."""
    return int(2 * params + 4 * hidden * opts["head_size"])


SPECS = (
    LayerSpec(
        name="rwkv",
        aliases=("R",),
        letter="R",
        summary="RWKV-6 time mix: ddlerp token shift, data-dependent decay, bonus u (Peng et al. 2024)",
        factory=module_ref("hybriddsl.layers.rwkv", "RWKV6TimeMix"),
        options=(
            Option("head_size", int, 64, "width of a head (heads = hidden / head_size)", min=1),
            Option("mix_rank", int, 32, "rank of the ddlerp token-shift LoRAs", min=1),
            Option("decay_rank", int, 64, "rank of the decay LoRA", min=1),
            Option("chunk", int, 64, "chunk length of the kernel (its tile length)", choices=CHUNK_SIZES),
            Option("cmix", bool, True, "attach the RWKV-6 channel mix as its own residual block"),
        ),
        validate=validate,
        flops=rwkv_flops,
        companions=lambda o: [("rwkv_channel_mix", {})] if o["cmix"] else [],
        recurrent=True,
        color="#d1c4e9",
        key_options=("head_size",),
    ),
    LayerSpec(
        name="rwkv_channel_mix",
        aliases=(),
        letter="R",
        summary="RWKV-6 channel mix: token shift, sigmoid(r) * W_v relu(W_k x)^2 (Peng et al. 2024)",
        factory=module_ref("hybriddsl.layers.rwkv", "RWKV6ChannelMix"),
        options=(Option("mult", float, 3.5, "inner width as a multiple of hidden", min=0.01),),
        recurrent=True,
        color="#ede7f6",
        key_options=("mult",),
        internal=True,
    ),
)
