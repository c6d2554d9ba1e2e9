"""Hugging Face Qwen3-Next configs (``Qwen3NextConfig``, model_type ``qwen3_next``; Qwen team 2025).

``layer_types[i]`` is ``"linear_attention"`` (Gated DeltaNet: ``linear_num_key_heads`` x
``linear_key_head_dim``, ``linear_num_value_heads`` x ``linear_value_head_dim``, ``linear_conv_kernel_dim``) or
``"full_attention"`` (``num_attention_heads``, ``num_key_value_heads``, ``head_dim``, QK-norm, partial RoPE).
Every layer then has an MLP: a sparse MoE (``num_experts``, ``num_experts_per_tok``, ``moe_intermediate_size``)
when ``num_experts > 0``, ``(i + 1) % decoder_sparse_step == 0`` and ``i`` is not in ``mlp_only_layers``, else a
dense SwiGLU MLP of ``intermediate_size``.
"""

from __future__ import annotations

from typing import Any

from hybriddsl.interop.common import (
    ConvertError,
    HybText,
    as_int,
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

MODEL_TYPE = "qwen3_next"
TARGET = "Hugging Face Qwen3-Next"
TYPES = {"linear_attention": "GD", "full_attention": "A"}


def detect(cfg: dict[str, Any]) -> bool:
    return cfg.get("model_type") == MODEL_TYPE or "linear_attention" in (cfg.get("layer_types") or [])


def from_config(cfg: dict[str, Any]) -> str:
    """Qwen3NextConfig dict -> .hyb text."""
    doc = HybText("converted from a Hugging Face Qwen3-Next config")
    hidden = hf_settings(doc, cfg, "Qwen3-Next")
    n = as_int(need(cfg, "num_hidden_layers", "Qwen3-Next"), "num_hidden_layers")
    types = cfg.get("layer_types") or [
        "full_attention" if (i + 1) % cfg.get("full_attention_interval", 4) == 0 else "linear_attention"
        for i in range(n)
    ]
    if len(types) != n:
        raise ConvertError(f"num_hidden_layers is {n} but layer_types has {len(types)} entries")
    for t in types:
        if t not in TYPES:
            raise ConvertError(f"layer type {t!r}: Qwen3-Next layers are linear_attention or full_attention")
    heads = cfg.get("num_attention_heads")
    doc.set("attention.heads", heads)
    doc.set("attention.kv_heads", cfg.get("num_key_value_heads"))
    if cfg.get("head_dim") and heads and cfg["head_dim"] != hidden // heads:
        doc.set("attention.head_dim", cfg["head_dim"])
    doc.set("attention.qk_norm", True)
    doc.set("attention.rope", True)
    doc.set("attention.rope_theta", float(cfg["rope_theta"]) if cfg.get("rope_theta") else None)
    doc.set("attention.ffn", False)
    kh, kd = cfg.get("linear_num_key_heads", 16), cfg.get("linear_key_head_dim", 128)
    vh, vd = cfg.get("linear_num_value_heads", 32), cfg.get("linear_value_head_dim", 128)
    doc.set("gated_delta_net.heads", kh)
    doc.set("gated_delta_net.head_dim", kd)
    doc.set("gated_delta_net.expand_v", (vh * vd) / (kh * kd))
    doc.set("gated_delta_net.conv", cfg.get("linear_conv_kernel_dim"))
    if vh != kh:
        doc.notes.append(f"{vh} value heads over {kh} key heads become {kh} heads of wider values")
    doc.notes.append("the full-attention output gate and partial RoPE are not modelled")
    doc.set("ffn.act", "swiglu")
    doc.set("ffn.inner", cfg.get("intermediate_size"))
    n_exp = cfg.get("num_experts", 0) or 0
    step, dense = cfg.get("decoder_sparse_step", 1) or 1, set(cfg.get("mlp_only_layers") or [])
    sparse = [n_exp > 0 and (i + 1) % step == 0 and i not in dense for i in range(n)]
    if any(sparse):
        doc.set("moe.experts", n_exp)
        doc.set("moe.top_k", cfg.get("num_experts_per_tok"))
        doc.set("moe.act", "swiglu")
        doc.set("moe.mult", need(cfg, "moe_intermediate_size", "Qwen3-Next") / hidden)
        if cfg.get("shared_expert_intermediate_size"):
            doc.notes.append("the MoE's shared expert is not modelled")
    for t, sp in zip(types, sparse):
        doc.stack += [TYPES[t], "E" if sp else "F"]
    return doc.render()


def to_config(graph: Graph) -> dict[str, Any]:
    """A compiled model -> Qwen3NextConfig fields; ConvertError where Qwen3-Next cannot say the model."""
    subs = sublayers(graph)
    reject_ties(subs, TARGET)
    layers = pairs(subs, ("gated_delta_net", "attention"), TARGET)
    hidden = graph.settings["hidden"]
    attn = [m for m, _ in layers if m.kind == "attention"]
    gdn = [m for m, _ in layers if m.kind == "gated_delta_net"]
    dense = [f for _, f in layers if f.kind == "ffn"]
    moes = [f for _, f in layers if f.kind == "moe"]
    a = uniform(attn, ("heads", "kv_heads", "head_dim"), TARGET)
    g = uniform(gdn, ("heads", "head_dim", "expand_v", "conv"), TARGET)
    e = uniform(moes, ("experts", "top_k", "mult"), TARGET)
    for f in dense + moes:
        if gated_act(f, TARGET) != "silu":
            raise ConvertError(f"{f.where()}: {TARGET}'s MLPs are SwiGLU (act=swiglu)")
    cfg = hf_base(graph, MODEL_TYPE, "Qwen3NextForCausalLM")
    cfg.update(
        num_hidden_layers=len(layers),
        layer_types=["full_attention" if m.kind == "attention" else "linear_attention" for m, _ in layers],
    )
    if a:
        cfg.update(
            num_attention_heads=a["heads"],
            num_key_value_heads=a["kv_heads"] or a["heads"],
            head_dim=a["head_dim"] or hidden // a["heads"],
        )
    if g:
        kd = g["head_dim"] or hidden // g["heads"]
        vd = g["expand_v"] * kd
        if vd != int(vd):
            raise ConvertError(f"{gdn[0].where()}: value head width {vd:g} is not a whole number")
        cfg.update(
            linear_num_key_heads=g["heads"],
            linear_num_value_heads=g["heads"],
            linear_key_head_dim=kd,
            linear_value_head_dim=int(vd),
            linear_conv_kernel_dim=g["conv"],
        )
    inners = {ffn_inner(f.opts, hidden) for f in dense}
    if len(inners) > 1:
        raise ConvertError(f"{TARGET} has one intermediate_size for every dense MLP; the model has {sorted(inners)}")
    if inners:
        cfg["intermediate_size"] = inners.pop()
    if moes:
        cfg.update(
            num_experts=e["experts"],
            num_experts_per_tok=e["top_k"],
            moe_intermediate_size=ffn_inner(moes[0].opts, hidden),
            decoder_sparse_step=1,
            mlp_only_layers=[i for i, (_, f) in enumerate(layers) if f.kind == "ffn"],
        )
    else:
        cfg.update(num_experts=0, mlp_only_layers=list(range(len(layers))))
    return cfg
