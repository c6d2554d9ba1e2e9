"""The zamba_shared kind for the registry (no torch here): Zamba2's shared transformer block.

The module is in :mod:`hybriddsl.layers.zamba_shared`. It is used inside a ``shared`` statement
(``shared Z(...)@3,6``): one set of core weights, with per-use LoRA adapters and a per-use output linear. Unlike
other kinds it reads the embedding output ``x0`` as well as the residual stream, and its output does not join
the stream: it is added to the next layer's norm input only (see the layer's docstring)."""

from __future__ import annotations

from typing import Any

from hybriddsl.layer_spec import LayerSpec, Option
from hybriddsl.specs.refs import module_ref


def inner_width(opts: dict[str, Any], hidden: int) -> int:
    """The MLP's inner width: ``inner``, else ``4 * hidden`` (transformers' Zamba2 default)."""
    return opts["inner"] or 4 * hidden


def validate(opts: dict[str, Any], hidden: int) -> str | None:
    heads, kv = opts["heads"], opts["kv_heads"]
    if (2 * hidden) % heads:
        return f"heads ({heads}) must divide 2 x hidden ({2 * hidden}): the block attends over [stream, embeddings]"
    if kv is not None and heads % kv:
        return f"kv_heads ({kv}) must divide heads ({heads})"
    if opts["rope"] and (2 * hidden // heads) % 2:
        return f"rope needs an even head width, got {2 * hidden // heads}"
    if opts["attn_adapter"] and not opts["rank"]:
        return "attn_adapter needs rank >= 1 (the adapters' rank)"
    return None


def flops(opts: dict[str, Any], hidden: int, params: int, seq_len: int) -> int:
    """FLOPs per token of one use: ``2 params`` (an upper bound: only one use's adapters run) plus scores and
    weighted sum over the 2 x hidden wide heads (``(L+1)/2`` keys on average)."""
    return int(2 * params + 4 * (2 * hidden) * (max(seq_len, 1) + 1) / 2)


SPEC = LayerSpec(
    name="zamba_shared",
    aliases=("Z",),
    letter="Z",
    summary="Zamba2's shared attention + MLP block on [stream, embeddings], per-use LoRA adapters and linear "
    "(Glorioso et al. 2024)",
    factory=module_ref("hybriddsl.layers.zamba_shared", "ZambaShared"),
    options=(
        Option("heads", int, 4, "query heads (head width 2 x hidden / heads)", min=1),
        Option("kv_heads", int, None, "key/value heads (grouped-query; default = heads)", min=1, optional=True),
        Option("inner", int, None, "MLP inner width (default 4 x hidden)", min=1, optional=True),
        Option("act", str, "geglu", "gated MLP activation", choices=("geglu", "swiglu")),
        Option("bias", bool, False, "biases on the MLP projections (add_bias_linear)"),
        Option("rank", int, 0, "rank of the per-use LoRA adapters on the MLP's gate/up (0: none)", min=0),
        Option("attn_adapter", bool, False, "per-use LoRA adapters on q, k and v too (rank)"),
        Option("rope", bool, False, "rotary position embedding on q and k (use_mem_rope)"),
        Option("rope_theta", float, 10000.0, "RoPE base", min=1.0),
        Option("eps", float, 1e-5, "epsilon of the block's two RMSNorms", min=0.0),
        Option("uses", int, 1, "uses of the block (set by the compiler: one adapter set and linear each)", min=1),
    ),
    validate=validate,
    flops=flops,
    color="#e8c6f0",
    key_options=("heads", "rank"),
    side=True,
)
