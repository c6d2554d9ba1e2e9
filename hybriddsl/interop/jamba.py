"""Hugging Face Jamba configs (``JambaConfig``, model_type ``jamba``; Lieber et al. 2024).

Decoder layer ``i`` (0-based) is attention when ``i % attn_layer_period == attn_layer_offset``, else a Mamba-1
layer (``mamba_d_state``, ``mamba_d_conv``, ``mamba_expand``, ``mamba_dt_rank``); then an MLP, which is a
mixture of experts (``num_experts``, ``num_experts_per_tok``) when ``num_experts > 1`` and
``i % expert_layer_period == expert_layer_offset``. MLPs and experts are gated (``hidden_act`` silu = SwiGLU)
of width ``intermediate_size``, without biases; the router's top-k softmax weights are not renormalized. Every
Mamba layer RMS-normalizes its low-rank dt input, B and C (``rms_norm_eps``). Jamba has no positional encoding;
``sliding_window`` is not applied by transformers 5 and is not read. Checkpoint names: ``model.embed_tokens``,
``model.layers.{i}.{input_layernorm, mamba.* | self_attn.*, pre_ff_layernorm, feed_forward.*}``,
``model.final_layernorm``, ``lm_head``.
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
    problem,
    reject_ties,
    sublayers,
    uniform,
)
from hybriddsl.interop.llama import ATTENTION, GATED_MLP
from hybriddsl.interop.mamba import MIXER as MAMBA_MIXER
from hybriddsl.interop.weights import Rule, embed_head, final_norm, layer_keys, present, table
from hybriddsl.ir import Graph

MODEL_TYPE = "jamba"
TARGET = "Hugging Face Jamba"


def detect(cfg: dict[str, Any]) -> bool:
    return cfg.get("model_type") == MODEL_TYPE or "attn_layer_period" in cfg


def from_config(cfg: dict[str, Any]) -> str:
    """JambaConfig dict -> .hyb text."""
    doc = HybText("converted from a Hugging Face Jamba config")
    hf_settings(doc, cfg, "Jamba")
    n = as_int(need(cfg, "num_hidden_layers", "Jamba"), "num_hidden_layers")
    ap, ao = as_int(cfg.get("attn_layer_period", 8), "period"), as_int(cfg.get("attn_layer_offset", 4), "offset")
    ep, eo = as_int(cfg.get("expert_layer_period", 2), "period"), as_int(cfg.get("expert_layer_offset", 1), "o")
    n_exp = as_int(cfg.get("num_experts", 16), "num_experts")
    inner = as_int(cfg.get("intermediate_size", 14336), "intermediate_size")
    act = ACT_BACK.get(cfg.get("hidden_act", "silu"))
    if act is None:
        raise ConvertError(f"hidden_act {cfg['hidden_act']!r}: Jamba's MLP is gated (silu = SwiGLU, gelu = GeGLU)")
    heads = as_int(cfg.get("num_attention_heads", 32), "num_attention_heads")
    dt_rank = cfg.get("mamba_dt_rank", "auto")
    doc.set("attention.heads", heads)
    doc.set("attention.kv_heads", as_int(cfg.get("num_key_value_heads") or heads, "num_key_value_heads"))
    doc.set("attention.ffn", False)  # Jamba's MLP/MoE is its own sub-layer
    # sliding_window is not applied by transformers 5's Jamba (and the published models never set it): no window
    doc.set("mamba.state", cfg.get("mamba_d_state"))
    doc.set("mamba.conv", cfg.get("mamba_d_conv"))
    doc.set("mamba.expand", cfg.get("mamba_expand"))
    if dt_rank not in (None, "auto"):
        doc.set("mamba.dt_rank", as_int(dt_rank, "mamba_dt_rank"))
    doc.set("mamba.conv_bias", bool(cfg.get("mamba_conv_bias", True)))
    doc.set("mamba.bias", bool(cfg.get("mamba_proj_bias", False)))
    doc.set("mamba.bc_norm", True)  # Jamba RMS-normalizes dt, B and C inside every Mamba layer
    doc.set("mamba.bc_norm_eps", float(cfg.get("rms_norm_eps", 1e-6)))
    doc.set("ffn.act", act)
    doc.set("ffn.inner", inner)
    doc.set("ffn.bias", False)
    if n_exp > 1:
        doc.set("moe.experts", n_exp)
        doc.set("moe.top_k", as_int(cfg.get("num_experts_per_tok", 2), "num_experts_per_tok"))
        doc.set("moe.act", act)
        doc.set("moe.inner", inner)  # exact: a rounded mult would come back one wider
        doc.set("moe.norm_topk", False)  # Jamba weights experts by their softmax probability, not renormalized
        doc.set("moe.bias", False)
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
    a = uniform(attn, ("heads", "kv_heads", "head_dim", "window", "qk_norm", "rope", "bias"), TARGET)
    if attn:
        if a["head_dim"] not in (None, hidden // a["heads"]):
            raise ConvertError(f"{attn[0].where()}: {TARGET}'s head width is hidden_size / num_attention_heads")
        if a["qk_norm"] or a["rope"]:
            raise ConvertError(f"{attn[0].where()}: {TARGET}'s attention has no QK-norm and no RoPE")
        if a["window"]:
            raise ConvertError(f"{attn[0].where()}: {TARGET}'s attention has no sliding window in transformers 5")
        if a["bias"]:
            problem(f"{attn[0].where()}: {TARGET}'s attention projections have no biases")
    keys = ("state", "expand", "conv", "dt_rank", "bias", "conv_bias", "bc_norm", "bc_norm_eps")
    m = uniform(mamba, keys, TARGET)
    if mamba and not m["bc_norm"]:
        problem(f"{mamba[0].where()}: {TARGET}'s Mamba layers normalize dt, B and C (write bc_norm=true)")
    if mamba and m["bc_norm_eps"] != graph.settings["norm_eps"]:
        problem(f"{mamba[0].where()}: {TARGET} uses rms_norm_eps for dt/B/C norms; set bc_norm_eps = norm_eps")
    ffns = [f for _, f in layers]
    inners = {ffn_inner(f.opts, hidden) for f in ffns}
    acts = {gated_act(f, TARGET) for f in ffns}
    if len(inners) > 1 or len(acts) > 1:
        raise ConvertError(
            f"{TARGET} has one intermediate_size and hidden_act for every MLP and expert; the model has widths "
            f"{sorted(inners)} and activations {sorted(acts)}"
        )
    for f in ffns:
        if f.opts.get("bias"):
            problem(f"{f.where()}: {TARGET}'s MLPs and experts have no biases (write bias=false)")
    e = uniform(moes, ("experts", "top_k", "norm_topk", "score", "score_bias", "groups", "scale", "shared"), TARGET)
    if moes and (e["norm_topk"] or e["score"] != "softmax" or e["score_bias"] or e["groups"] != 1):
        problem(
            f"{moes[0].where()}: {TARGET}'s router is a softmax whose top-k weights are not renormalized "
            "(write norm_topk=false; no sigmoid scores, score bias or groups)"
        )
    if moes and (e["scale"] != 1.0 or e["shared"]):
        problem(f"{moes[0].where()}: {TARGET} has no shared expert and no routing scale")
    cfg.update(
        num_hidden_layers=n,
        num_attention_heads=a.get("heads") or 32,
        num_key_value_heads=(a.get("kv_heads") or a.get("heads")) if attn else 8,
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
        mamba_dt_rank=m.get("dt_rank") or math.ceil(hidden / 16),
        mamba_conv_bias=m.get("conv_bias", True),
        mamba_proj_bias=m.get("bias", False),
    )
    return cfg


MAMBA = {
    **MAMBA_MIXER,
    "dt_norm.weight": "dt_layernorm.weight",
    "b_norm.weight": "b_layernorm.weight",
    "c_norm.weight": "c_layernorm.weight",
}
ATTN = {k: v for k, v in ATTENTION.items() if "norm" not in k}
EXPERT = GATED_MLP


def weight_rules(cfg: dict[str, Any], model) -> list[Rule]:
    """Checkpoint tensor names of JambaForCausalLM for every tensor of ours."""
    rules = embed_head(model, "model.embed_tokens.weight", "lm_head.weight")
    keys = layer_keys(model)
    for i in range(len(keys) // 2):
        mix, mlp = keys[2 * i], keys[2 * i + 1]
        p = f"model.layers.{i}."
        rules.append(Rule(f"blocks.{mix.norm}.weight", p + "input_layernorm.weight"))
        if mix.kind == "mamba":
            rules += table(MAMBA, f"blocks.{mix.mixer}.", p + "mamba.")
        else:
            rules += table(ATTN, f"blocks.{mix.mixer}.", p + "self_attn.")
        rules.append(Rule(f"blocks.{mlp.norm}.weight", p + "pre_ff_layernorm.weight"))
        if mlp.kind == "moe":
            rules.append(Rule(f"blocks.{mlp.mixer}.router.weight", p + "feed_forward.router.weight"))
            for j in range(len(model.blocks[mlp.mixer].experts)):
                rules += table(EXPERT, f"blocks.{mlp.mixer}.experts.{j}.", p + f"feed_forward.experts.{j}.")
        else:
            rules += table(EXPERT, f"blocks.{mlp.mixer}.", p + "feed_forward.")
    rules.append(Rule(f"blocks.{final_norm(model)}.weight", "model.final_layernorm.weight"))
    return present(rules, model)
