"""The attention kind for the registry: options, cross-option checks, FLOP formula (no torch here).

The module itself is in :mod:`hybriddsl.layers.attention`, imported only when a layer is built."""

from __future__ import annotations

from typing import Any

from hybriddsl.layer_spec import LayerSpec, Option
from hybriddsl.specs.refs import module_ref


def validate(opts: dict[str, Any], hidden: int) -> str | None:
    """Cross-option checks, run before anything is allocated."""
    heads, kv, hd = opts["heads"], opts["kv_heads"], opts["head_dim"]
    if hd is None and hidden % heads:
        return f"heads ({heads}) must divide hidden ({hidden}), or set head_dim"
    if kv is not None and heads % kv:
        return f"kv_heads ({kv}) must divide heads ({heads})"
    d = hd if hd is not None else hidden // heads
    if opts["rope"] and d % 2:
        return f"rope needs an even head_dim, got {d}"
    rd = opts["rope_dim"]
    if rd is not None and (rd % 2 or rd > d or rd < 2):
        return f"rope_dim must be even and between 2 and head_dim ({d}), got {rd}"
    kind = opts["rope_scaling"]
    if kind != "none":
        if not opts["rope"]:
            return f"rope_scaling = {kind} scales RoPE: it needs rope = true"
        if not opts["rope_factor"] > 0:
            return f"rope_factor must be > 0, got {opts['rope_factor']}"
        if kind in ("llama3", "yarn") and opts["rope_original"] is None:
            return f"rope_scaling = {kind} needs rope_original (the pre-training context length)"
        if kind == "llama3" and not opts["rope_high_freq"] > opts["rope_low_freq"]:
            return "rope_high_freq must be larger than rope_low_freq"
    if opts["window"] is not None and not opts["causal"]:
        return "window needs causal attention (causal = true)"
    return None


def keys_per_query(seq_len: int, window: int | None, causal: bool = True) -> float:
    """Mean number of keys a query attends to in a sequence of ``seq_len``: mean of min(t, window), t=1..L."""
    L = max(seq_len, 1)
    if not causal:
        return float(L)
    w = L if window is None else min(window, L)
    return (w * (w + 1) / 2 + (L - w) * w) / L


def attention_flops(opts: dict[str, Any], hidden: int, params: int, seq_len: int) -> int:
    """FLOPs per token: projections ``2 params`` plus scores and weighted sum ``4 heads head_dim n`` where n
    is the mean number of keys a query sees: ``(L+1)/2`` for full causal attention, the exact causal average
    of ``min(t, window)`` with a window, ``L`` without causality. Softmax, norms and RoPE are left out."""
    heads = opts["heads"]
    d = opts["head_dim"] or hidden // heads
    n = keys_per_query(seq_len, opts["window"], opts["causal"])
    return int(2 * params + 4 * heads * d * n)


SPEC = LayerSpec(
    name="attention",
    aliases=("A", "attn", "*"),
    letter="A",
    summary="causal softmax attention, GQA / sliding window / RoPE / QK-norm (Vaswani et al. 2017)",
    factory=module_ref("hybriddsl.layers.attention", "Attention"),
    options=(
        Option("heads", int, 4, "query heads", min=1),
        Option("kv_heads", int, None, "key/value heads (grouped-query; default = heads)", min=1, optional=True),
        Option("head_dim", int, None, "width of a head (default hidden // heads)", min=1, optional=True),
        Option("window", int, None, "sliding causal window, counting the current token", min=1, optional=True),
        Option("qk_norm", bool, False, "RMSNorm on every q and k head"),
        Option("rope", bool, False, "rotary position embedding on q and k"),
        Option("rope_theta", float, 10000.0, "RoPE base", min=1.0),
        Option("bias", bool, False, "biases on the projections"),
        Option("dropout", float, 0.0, "dropout on attention probabilities (training only)", min=0.0, max=1.0),
        Option("chunk", int, None, "evaluate queries in blocks of this size (memory)", min=1, optional=True),
        Option("ffn", bool, True, "attach an FFN residual block after attention (Edifice)"),
        Option("causal", bool, True, "causal mask"),
        Option("qk_eps", float, 1e-6, "epsilon of the q/k RMSNorms (qk_norm)", min=0.0),
        Option(
            "rope_dim",
            int,
            None,
            "channels of a head RoPE turns (partial RoPE; default head_dim)",
            min=2,
            optional=True,
        ),
        Option("out_gate", bool, False, "sigmoid gate on the heads' output from the input (Qwen3-Next)"),
        Option("out_bias", bool, None, "bias on the output projection (default: as bias)", optional=True),
        Option(
            "rope_scaling",
            str,
            "none",
            "RoPE context extension, as transformers' rope_type (layers/rope.py)",
            choices=("none", "linear", "llama3", "yarn"),
        ),
        Option("rope_factor", float, 1.0, "RoPE scaling factor (linear, llama3, yarn)", min=0.0),
        Option(
            "rope_original",
            int,
            None,
            "pre-training context length (original_max_position_embeddings; llama3, yarn)",
            min=1,
            optional=True,
        ),
        Option("rope_low_freq", float, 1.0, "llama3 low_freq_factor", min=0.0),
        Option("rope_high_freq", float, 4.0, "llama3 high_freq_factor", min=0.0),
        Option("rope_beta_fast", float, 32.0, "yarn beta_fast (rotations where extrapolation ends)", min=0.0),
        Option("rope_beta_slow", float, 1.0, "yarn beta_slow (rotations where interpolation starts)", min=0.0),
        Option(
            "rope_mscale",
            float,
            None,
            "yarn factor on cos/sin (attention_factor; default 0.1 ln(rope_factor) + 1)",
            min=0.0,
            optional=True,
        ),
        Option("rope_truncate", bool, True, "yarn: round the correction range to whole dimensions"),
    ),
    validate=validate,
    flops=attention_flops,
    companions=lambda o: [("ffn", {})] if o["ffn"] else [],
    color="#f4b6b6",
    key_options=("heads", "kv_heads", "window"),
)
