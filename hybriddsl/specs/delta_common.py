"""Checks and the FLOP formula shared by delta_net and gated_delta_net (no torch here)."""

from __future__ import annotations

from typing import Any


def validate(opts: dict[str, Any], hidden: int) -> str | None:
    """Cross-option checks shared by delta_net and gated_delta_net, run before anything is allocated."""
    heads, hd = opts.get("heads", 4), opts.get("head_dim")
    if heads < 1:
        return f"heads must be >= 1, got {heads}"
    if hd is None and hidden % heads:
        return f"heads ({heads}) must divide hidden ({hidden}), or set head_dim"
    d = hd if hd is not None else hidden // heads
    ev = float(opts.get("expand_v", 1.0))
    if ev * d != int(ev * d) or ev * d < 1:
        return f"expand_v ({ev:g}) times head_dim ({d}) must be a whole number of channels >= 1"
    c = opts.get("chunk", 64)
    if c < 16 or c & (c - 1):
        return f"chunk must be a power of two >= 16 (a tile length of the delta-rule kernel), got {c}"
    return None


def delta_flops(per_entry: int):
    """FLOP formula: ``2 params`` plus ``per_entry`` FLOPs per entry of each head's [K, V] memory per token.

    The recurrent form reads ``S^T k`` (2 KV), writes the rank-one update (2 KV) and reads ``S^T q`` (2 KV):
    6 per entry; the gated rule also scales ``S`` by ``alpha`` (1 more). Norms and activations are left out.
    """

    def flops(opts: dict[str, Any], hidden: int, params: int, seq_len: int) -> int:
        heads = opts.get("heads", 4)
        d = opts.get("head_dim") or hidden // heads
        dv = int(d * float(opts.get("expand_v", 1.0)))
        return int(2 * params + per_entry * heads * d * dv)

    return flops
