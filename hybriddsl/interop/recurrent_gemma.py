"""Hugging Face RecurrentGemma configs (``RecurrentGemmaConfig``, model_type ``recurrent_gemma``; Griffin, De et
al. 2024).

Layer ``i``'s temporal block is ``block_types[i % len(block_types)]``: ``"recurrent"`` (the Griffin RG-LRU block,
``lru_width`` wide, ``conv1d_width`` conv) or ``"attention"`` (local attention over ``attention_window_size``
tokens, ``num_attention_heads``, ``num_key_value_heads``, partial RoPE). Every layer then has a gated GELU MLP
whose two branches are ``intermediate_size // 2`` wide (transformers' RecurrentGemmaMlp).
"""

from __future__ import annotations

from typing import Any

from hybriddsl.interop.common import (
    ConvertError,
    HybText,
    as_int,
    cycle,
    ffn_inner,
    gated_act,
    hf_base,
    hf_settings,
    need,
    pairs,
    reject_ties,
    sublayers,
    uniform,
)
from hybriddsl.ir import Graph

MODEL_TYPE = "recurrent_gemma"
TARGET = "Hugging Face RecurrentGemma"
TYPES = {"recurrent": "L", "attention": "A"}


def detect(cfg: dict[str, Any]) -> bool:
    return cfg.get("model_type") == MODEL_TYPE or ("block_types" in cfg and "lru_width" in cfg)


def from_config(cfg: dict[str, Any]) -> str:
    """RecurrentGemmaConfig dict -> .hyb text."""
    doc = HybText("converted from a Hugging Face RecurrentGemma config")
    hidden = hf_settings(doc, cfg, "RecurrentGemma")
    n = as_int(need(cfg, "num_hidden_layers", "RecurrentGemma"), "num_hidden_layers")
    blocks = list(cfg.get("block_types") or ["recurrent", "recurrent", "attention"])
    for t in blocks:
        if t not in TYPES:
            raise ConvertError(f"block type {t!r}: RecurrentGemma blocks are recurrent or attention")
    heads = cfg.get("num_attention_heads")
    doc.set("attention.heads", heads)
    doc.set("attention.kv_heads", cfg.get("num_key_value_heads"))
    if cfg.get("head_dim") and heads and cfg["head_dim"] != hidden // heads:
        doc.set("attention.head_dim", cfg["head_dim"])
    doc.set("attention.window", cfg.get("attention_window_size", 2048))
    doc.set("attention.rope", True)
    doc.set("attention.ffn", False)  # every layer's MLP is written out
    doc.set("griffin.width", cfg.get("lru_width"))
    doc.set("griffin.conv", cfg.get("conv1d_width"))
    doc.set("griffin.mlp", False)
    doc.set("ffn.act", "geglu")
    doc.set("ffn.inner", as_int(cfg.get("intermediate_size", 3 * hidden), "intermediate_size") // 2)
    doc.notes.append("RoPE here rotates whole heads (RecurrentGemma: half); the logit soft-cap is not modelled")
    for i in range(n):
        doc.stack += [TYPES[blocks[i % len(blocks)]], "F"]
    return doc.render()


def to_config(graph: Graph) -> dict[str, Any]:
    """A compiled model -> RecurrentGemmaConfig fields; ConvertError where RecurrentGemma cannot say the model."""
    subs = sublayers(graph)
    reject_ties(subs, TARGET)
    layers = pairs(subs, ("griffin", "attention"), TARGET)
    hidden = graph.settings["hidden"]
    attn = [m for m, _ in layers if m.kind == "attention"]
    rec = [m for m, _ in layers if m.kind == "griffin"]
    a = uniform(attn, ("heads", "kv_heads", "head_dim", "window"), TARGET)
    r = uniform(rec, ("width", "conv"), TARGET)
    if attn and a["window"] is None:
        raise ConvertError(f"{attn[0].where()}: {TARGET}'s attention is local; give it a window (A(window=2048))")
    for _, f in layers:
        if f.kind != "ffn" or gated_act(f, TARGET) != "gelu":
            raise ConvertError(f"{f.where()}: {TARGET}'s MLP is a gated GELU FFN (FFN(act=geglu))")
    inners = {ffn_inner(f.opts, hidden) for _, f in layers}
    if len(inners) > 1:
        raise ConvertError(f"{TARGET} has one intermediate_size for every MLP; the model has {sorted(inners)}")
    types = ["attention" if m.kind == "attention" else "recurrent" for m, _ in layers]
    cfg = hf_base(graph, MODEL_TYPE, "RecurrentGemmaForCausalLM")
    cfg.update(
        num_hidden_layers=len(layers),
        block_types=cycle(types),
        intermediate_size=2 * inners.pop(),
        lru_width=r.get("width") or hidden,
        conv1d_width=r.get("conv", 4),
    )
    if a:
        cfg.update(
            num_attention_heads=a["heads"],
            num_key_value_heads=a["kv_heads"] or a["heads"],
            head_dim=a["head_dim"] or hidden // a["heads"],
            attention_window_size=a["window"],
        )
    return cfg
