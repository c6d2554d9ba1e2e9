"""Hugging Face Jamba configs (``JambaConfig``, model_type ``jamba``; Lieber et al. 2024).

Decoder layer ``i`` (0-based) is attention when ``i % attn_layer_period == attn_layer_offset``, else a Mamba-1
layer (``mamba_d_state``, ``mamba_d_conv``, ``mamba_expand``, ``mamba_dt_rank``); then an MLP, which is a
mixture of experts (``num_experts``, ``num_experts_per_tok``) when ``num_experts > 1`` and
``i % expert_layer_period == expert_layer_offset``. MLPs and experts are gated (``hidden_act`` silu = SwiGLU)
of width ``intermediate_size``. Jamba has no positional encoding.
"""

from __future__ import annotations

import math
from typing import Any

from hybriddsl.interop.common import (
    ACT_BACK,
    ConvertError,
    HybText,
    as_int,
    ffn_inner,
    gated_act,
    hf_base,
    hf_settings,
    need,
    pairs,
    period_offset,
    reject_ties,
    sublayers,
    uniform,
)
from hybriddsl.ir import Graph

MODEL_TYPE = "jamba"
TARGET = "Hugging Face Jamba"


def detect(cfg: dict[str, Any]) -> bool:
    return cfg.get("model_type") == MODEL_TYPE or "attn_layer_period" in cfg


def from_config(cfg: dict[str, Any]) -> str:
    """JambaConfig dict -> .hyb text."""
    doc = HybText("converted from a Hugging Face Jamba config")
    hidden = hf_settings(doc, cfg, "Jamba")
    n = as_int(need(cfg, "num_hidden_layers", "Jamba"), "num_hidden_layers")
    ap, ao = as_int(cfg.get("attn_layer_period", 8), "period"), as_int(cfg.get("attn_layer_offset", 4), "offset")
    ep, eo = as_int(cfg.get("expert_layer_period", 2), "period"), as_int(cfg.get("expert_layer_offset", 1), "o")
    n_exp = as_int(cfg.get("num_experts", 16), "num_experts")
    inner = as_int(cfg.get("intermediate_size", 14336), "intermediate_size")
    act = ACT_BACK.get(cfg.get("hidden_act", "silu"))
    if act is None:
        doc.notes.append(f"hidden_act {cfg['hidden_act']!r} has no gated FFN here; SwiGLU used")
        act = "swiglu"
    dt_rank = cfg.get("mamba_dt_rank", "auto")
    doc.set("attention.heads", cfg.get("num_attention_heads"))
    doc.set("attention.kv_heads", cfg.get("num_key_value_heads"))
    doc.set("attention.ffn", False)  # Jamba's MLP/MoE is its own sub-layer
    doc.set("attention.window", cfg.get("sliding_window"))
    doc.set("mamba.state", cfg.get("mamba_d_state"))
    doc.set("mamba.conv", cfg.get("mamba_d_conv"))
    doc.set("mamba.expand", cfg.get("mamba_expand"))
    if dt_rank not in (None, "auto"):
        doc.set("mamba.dt_rank", as_int(dt_rank, "mamba_dt_rank"))
    doc.set("mamba.conv_bias", cfg.get("mamba_conv_bias"))
    doc.set("mamba.bias", cfg.get("mamba_proj_bias"))
    doc.set("ffn.act", act)
    doc.set("ffn.inner", inner)
    if n_exp > 1:
        mult = inner / hidden
        if math.ceil(hidden * mult) != inner:
            doc.notes.append(f"expert width {inner} is not a whole multiple of hidden; experts round it")
        doc.set("moe.experts", n_exp)
        doc.set("moe.top_k", cfg.get("num_experts_per_tok"))
        doc.set("moe.act", act)
        doc.set("moe.mult", mult)
    doc.notes.append("Jamba's Mamba layers also RMS-normalize dt, B and C (not modelled here)")
    for i in range(n):
        doc.stack.append("A" if i % ap == ao else "M")
        doc.stack.append("E" if n_exp > 1 and i % ep == eo else "F")
    return doc.render()


def to_config(graph: Graph) -> dict[str, Any]:
    """A compiled model -> JambaConfig fields; ConvertError where Jamba cannot say the model."""
    subs = sublayers(graph)
    reject_ties(subs, TARGET)
    layers = pairs(subs, ("mamba", "attention"), TARGET)
    hidden = graph.settings["hidden"]
    cfg = hf_base(graph, MODEL_TYPE, "JambaForCausalLM")
    attn = [m for m, _ in layers if m.kind == "attention"]
    mamba = [m for m, _ in layers if m.kind == "mamba"]
    moes = [f for _, f in layers if f.kind == "moe"]
    n = len(layers)
    flags = [m.kind == "attention" for m, _ in layers]
    po = period_offset(flags) if attn else (n + 1, n)  # no attention: a period longer than the stack
    if po is None:
        raise ConvertError(
            f"attention at layers {[i for i, f in enumerate(flags) if f]} (0-based) is not every k-th layer; "
            f"{TARGET} places attention at i % attn_layer_period == attn_layer_offset"
        )
    eflags = [f.kind == "moe" for _, f in layers]
    epo = period_offset(eflags) if moes else (1, 0)
    if epo is None:
        raise ConvertError(
            f"the MoE MLPs at layers {[i for i, f in enumerate(eflags) if f]} (0-based) are not every k-th "
            f"layer; {TARGET} places them at i % expert_layer_period == expert_layer_offset"
        )
    a = uniform(attn, ("heads", "kv_heads", "head_dim", "window", "qk_norm", "rope"), TARGET)
    if attn:
        if a["head_dim"] not in (None, hidden // a["heads"]):
            raise ConvertError(f"{attn[0].where()}: {TARGET}'s head width is hidden_size / num_attention_heads")
        if a["qk_norm"] or a["rope"]:
            raise ConvertError(f"{attn[0].where()}: {TARGET}'s attention has no QK-norm and no RoPE")
    m = uniform(mamba, ("state", "conv", "expand", "dt_rank", "bias", "conv_bias"), TARGET)
    ffns = [f for _, f in layers]
    inners = {ffn_inner(f.opts, hidden) for f in ffns}
    acts = {gated_act(f, TARGET) for f in ffns}
    if len(inners) > 1 or len(acts) > 1:
        raise ConvertError(
            f"{TARGET} has one intermediate_size and hidden_act for every MLP and expert; the model has widths "
            f"{sorted(inners)} and activations {sorted(acts)}"
        )
    e = uniform(moes, ("experts", "top_k"), TARGET)
    cfg.update(
        num_hidden_layers=n,
        num_attention_heads=a.get("heads") or 32,
        num_key_value_heads=(a.get("kv_heads") or a.get("heads")) if attn else 8,
        sliding_window=a.get("window"),
        intermediate_size=inners.pop(),
        hidden_act=acts.pop(),
        attn_layer_period=po[0],
        attn_layer_offset=po[1],
        expert_layer_period=epo[0],
        expert_layer_offset=epo[1],
        num_experts=e.get("experts") or 1,
        num_experts_per_tok=e.get("top_k") or 1,
        mamba_d_state=m.get("state", 16),
        mamba_d_conv=m.get("conv", 4),
        mamba_expand=m.get("expand", 2),
        mamba_dt_rank=m.get("dt_rank") or "auto",
        mamba_conv_bias=m.get("conv_bias", True),
        mamba_proj_bias=m.get("bias", False),
    )
    return cfg
