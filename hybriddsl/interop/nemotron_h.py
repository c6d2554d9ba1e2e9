"""Hugging Face Nemotron-H configs (``NemotronHConfig``, model_type ``nemotron_h``; NVIDIA 2025).

The layer layout is ``hybrid_override_pattern``, Megatron-LM's letters (``M`` Mamba-2, ``*`` attention, ``-``
MLP, ``E`` MoE), one residual layer per letter. Mamba-2 sizes: ``ssm_state_size``, ``mamba_num_heads``,
``mamba_head_dim``, ``mamba_n_groups``, ``mamba_d_conv``, ``mamba_expand``; attention: ``num_attention_heads``,
``num_key_value_heads``, ``head_dim``; the MLP is ungated, ``intermediate_size`` wide, ``mlp_hidden_act``.
"""

from __future__ import annotations

from typing import Any

from hybriddsl.interop.common import (
    ConvertError,
    HybText,
    as_int,
    ffn_inner,
    hf_base,
    hf_settings,
    need,
    reject_ties,
    sublayers,
    uniform,
)
from hybriddsl.interop.megatron import KIND_LETTER, TOKENS, parse_pattern
from hybriddsl.ir import Graph

MODEL_TYPE = "nemotron_h"
TARGET = "Hugging Face Nemotron-H"
EPS = "layer_norm_epsilon"


def detect(cfg: dict[str, Any]) -> bool:
    return cfg.get("model_type") == MODEL_TYPE or "hybrid_override_pattern" in cfg


def from_config(cfg: dict[str, Any]) -> str:
    """NemotronHConfig dict -> .hyb text."""
    pattern = need(cfg, "hybrid_override_pattern", "Nemotron-H")
    kinds = parse_pattern(pattern)
    doc = HybText(f'converted from a Hugging Face Nemotron-H config (hybrid_override_pattern "{pattern}")')
    hidden = hf_settings(doc, cfg, "Nemotron-H", EPS)
    n = cfg.get("num_hidden_layers")
    if n is not None and as_int(n, "num_hidden_layers") != len(kinds):
        raise ConvertError(f"num_hidden_layers is {n} but hybrid_override_pattern has {len(kinds)} letters")
    heads = cfg.get("num_attention_heads")
    doc.set("attention.heads", heads)
    doc.set("attention.kv_heads", cfg.get("num_key_value_heads"))
    if cfg.get("head_dim") and heads and cfg["head_dim"] != hidden // heads:
        doc.set("attention.head_dim", cfg["head_dim"])
    doc.set("attention.window", cfg.get("sliding_window"))
    doc.set("attention.ffn", False)  # the '-' letters are the MLPs
    doc.set("mamba2.state", cfg.get("ssm_state_size"))
    doc.set("mamba2.head_dim", cfg.get("mamba_head_dim"))
    doc.set("mamba2.groups", cfg.get("mamba_n_groups"))
    doc.set("mamba2.conv", cfg.get("mamba_d_conv"))
    expand = cfg.get("mamba_expand")
    if cfg.get("mamba_num_heads") and cfg.get("mamba_head_dim"):
        width = cfg["mamba_num_heads"] * cfg["mamba_head_dim"]
        if width % hidden == 0:
            expand = width // hidden  # the HF model sizes the SSM by heads x head_dim, not by mamba_expand
        else:
            doc.notes.append(f"Mamba width {width} is not a multiple of hidden {hidden}; mamba_expand used")
    doc.set("mamba2.expand", expand)
    act = cfg.get("mlp_hidden_act", "relu2")
    if act != "gelu":
        doc.notes.append(f"mlp_hidden_act {act!r} has no equivalent here; the MLPs use GELU")
    doc.set("ffn.act", "gelu")
    doc.set("ffn.inner", cfg.get("intermediate_size"))
    doc.set("ffn.bias", cfg.get("mlp_bias"))
    if "moe" in kinds:
        doc.set("moe.experts", cfg.get("n_routed_experts"))
        doc.set("moe.top_k", cfg.get("num_experts_per_tok"))
        if cfg.get("moe_intermediate_size"):
            doc.set("moe.mult", cfg["moe_intermediate_size"] / hidden)
        doc.notes.append("Nemotron-H's shared experts and router groups are not modelled")
    doc.stack = [TOKENS["mamba2" if k == "mamba" else k] for k in kinds]
    return doc.render()


def to_config(graph: Graph) -> dict[str, Any]:
    """A compiled model -> NemotronHConfig fields; ConvertError where Nemotron-H cannot say the model."""
    subs = sublayers(graph)
    reject_ties(subs, TARGET)
    hidden = graph.settings["hidden"]
    letters = []
    for s in subs:
        if s.role == "shared":
            raise ConvertError(f"{s.where()}: {TARGET} has no shared blocks")
        if s.kind == "mamba":
            raise ConvertError(f"{s.where()}: {TARGET}'s Mamba layers are Mamba-2 (write M2 / mamba2)")
        if s.kind not in KIND_LETTER:
            raise ConvertError(f"{s.where()}: {TARGET} has no '{s.kind}' layer (it has mamba2, attention, ffn and moe)")
        letters.append(KIND_LETTER[s.kind])
    by = {k: [s for s in subs if s.kind == k] for k in ("attention", "mamba2", "ffn", "moe")}
    a = uniform(by["attention"], ("heads", "kv_heads", "head_dim", "window"), TARGET)
    m = uniform(by["mamba2"], ("state", "head_dim", "groups", "conv", "expand"), TARGET)
    f = uniform(by["ffn"], ("act", "bias"), TARGET)
    e = uniform(by["moe"], ("experts", "top_k", "mult"), TARGET)
    inners = {ffn_inner(s.opts, hidden) for s in by["ffn"]}
    if len(inners) > 1:
        raise ConvertError(f"{TARGET} has one intermediate_size for every MLP; the model has {sorted(inners)}")
    if f and f["act"] != "gelu":
        raise ConvertError(f"{by['ffn'][0].where()}: {TARGET}'s MLP is ungated (act=gelu), not {f['act']}")
    cfg = hf_base(graph, MODEL_TYPE, "NemotronHForCausalLM", EPS)
    cfg.update(num_hidden_layers=len(letters), hybrid_override_pattern="".join(letters))
    if a:
        cfg.update(
            num_attention_heads=a["heads"],
            num_key_value_heads=a["kv_heads"] or a["heads"],
            head_dim=a["head_dim"] or hidden // a["heads"],
            sliding_window=a["window"],
        )
    if m:
        cfg.update(
            ssm_state_size=m["state"],
            mamba_head_dim=m["head_dim"],
            mamba_num_heads=m["expand"] * hidden // m["head_dim"],
            mamba_n_groups=m["groups"],
            mamba_d_conv=m["conv"],
            mamba_expand=m["expand"],
        )
    if f:
        cfg.update(intermediate_size=inners.pop(), mlp_hidden_act="gelu", mlp_bias=f["bias"])
    if e:
        cfg.update(
            n_routed_experts=e["experts"],
            num_experts_per_tok=e["top_k"],
            moe_intermediate_size=ffn_inner(by["moe"][0].opts, hidden),
        )
    return cfg
