"""Checks and the FLOP formula shared by delta_net and gated_delta_net (no torch here)."""

from __future__ import annotations

from typing import Any

from hybriddsl.tiles import CHUNK_MIN


def validate(opts: dict[str, Any], hidden: int) -> str | None:
    """Cross-option checks shared by delta_net and gated_delta_net, run before anything is allocated."""
    heads, hd = opts["heads"], opts["head_dim"]
    if heads < 1:
        return f"heads must be >= 1, got {heads}"
    if hd is None and hidden % heads:
        return f"heads ({heads}) must divide hidden ({hidden}), or set head_dim"
    d = hd if hd is not None else hidden // heads
    ev = float(opts["expand_v"])
    if ev * d != int(ev * d) or ev * d < 1:
        return f"expand_v ({ev:g}) times head_dim ({d}) must be a whole number of channels >= 1"
    vh = opts["v_heads"]
    if vh is not None and (vh < heads or vh % heads):
        return f"v_heads ({vh}) must be a multiple of heads ({heads}): each q/k head serves v_heads / heads value heads"
    c = opts["chunk"]
    if c < CHUNK_MIN or c & (c - 1):
        return f"chunk must be a power of two >= {CHUNK_MIN} (a tile length of the delta-rule kernel), got {c}"
    return None


def delta_flops(per_entry: int):
    """FLOP formula: ``2 params`` plus ``per_entry`` FLOPs per entry of each head's [K, V] memory per token.

    The recurrent form reads ``S^T k`` (2 KV), writes the rank-one update (2 KV) and reads ``S^T q`` (2 KV):
    6 per entry; the gated rule also scales ``S`` by ``alpha`` (1 more). Norms and activations are left out.
    """

    def flops(opts: dict[str, Any], hidden: int, params: int, seq_len: int) -> int:
        heads = opts["heads"]
        d = opts["head_dim"] or hidden // heads
        dv = int(d * float(opts["expand_v"]))
        return int(2 * params + per_entry * (opts["v_heads"] or heads) * d * dv)

    return flops
