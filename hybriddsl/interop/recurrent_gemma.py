"""Hugging Face RecurrentGemma (``RecurrentGemmaConfig``, model_type ``recurrent_gemma``; Griffin, De et al. 2024).

Layer ``i``'s temporal block is ``block_types[i % len(block_types)]``: ``"recurrent"`` (the Griffin RG-LRU block,
``lru_width`` wide, ``conv1d_width`` conv, block-diagonal gates with one block per attention head, the
``sqrt(1 - a^2)`` multiplier reset to 1 at position 0) or ``"attention"`` (local attention over
``attention_window_size`` tokens, ``num_attention_heads``, ``num_key_value_heads``, RoPE on the first
``partial_rotary_factor`` of each head, a bias on the output projection only). Every layer then has a gated MLP
(``hidden_activation`` of the gate times the up branch, each ``intermediate_size // 2`` wide, with biases).
Embeddings are scaled by ``sqrt(hidden_size)`` rounded to bfloat16 (transformers keeps that factor as a bfloat16
buffer), logits soft-capped at ``logits_soft_cap``, and every RMSNorm scales by ``1 + w`` (Gemma's norm; our
norm weight is ``1 + w``).

In .hyb every layer is ``L F`` or ``A F`` with ``griffin.mlp = false``, ``attention.ffn = false``.
"""

from __future__ import annotations

import math
from typing import Any

from hybriddsl.interop import rope
from hybriddsl.interop.common import (
    ConvertError,
    HybText,
    as_int,
    cycle,
    ffn_inner,
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
ACTS = {"gelu_pytorch_tanh": (True, "geglu_tanh"), "gelu": (False, "geglu")}  # HF -> (griffin gelu_tanh, ffn act)


def detect(cfg: dict[str, Any]) -> bool:
    return cfg.get("model_type") == MODEL_TYPE or ("block_types" in cfg and "lru_width" in cfg)


def embed_scale(hidden: int) -> float:
    """transformers' normalizer: ``sqrt(hidden)`` stored as a bfloat16 buffer, so rounded to bfloat16 (8
    significant bits, to nearest, ties to even; computed without torch so reading a config stays torch-free)."""
    m, e = math.frexp(math.sqrt(hidden))  # m in [0.5, 1)
    return math.ldexp(round(m * 256) / 256, e)


def _rope(cfg: dict[str, Any]) -> tuple[float, float]:
    """(rope_theta, partial_rotary_factor): in ``rope_parameters`` (transformers 5) or at the top level."""
    rp = cfg.get("rope_parameters") or {}
    if rope.rope_type(cfg) != "default":
        raise ConvertError(
            f"rope_parameters.rope_type {rope.rope_type(cfg)!r} is not supported for RecurrentGemma (only default)"
        )
    theta = rp.get("rope_theta", cfg.get("rope_theta", 10000.0))
    frac = rp.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 0.5))
    return float(theta), float(frac)


def from_config(cfg: dict[str, Any]) -> str:
    """RecurrentGemmaConfig dict -> .hyb text."""
    doc = HybText("converted from a Hugging Face RecurrentGemma config")
    hidden = hf_settings(doc, cfg, "RecurrentGemma")
    if "tie_word_embeddings" not in cfg and cfg.get("vocab_size"):  # RecurrentGemma ties by default
        doc.settings = [(k, v) for k, v in doc.settings if k != "tie_embeddings"] + [("tie_embeddings", True)]
    n = as_int(need(cfg, "num_hidden_layers", "RecurrentGemma"), "num_hidden_layers")
    blocks = list(cfg.get("block_types") or ["recurrent", "recurrent", "attention"])
    for t in blocks:
        if t not in TYPES:
            raise ConvertError(f"block type {t!r}: RecurrentGemma blocks are recurrent or attention")
    act = cfg.get("hidden_activation", "gelu_pytorch_tanh")
    if act not in ACTS:
        raise ConvertError(f"hidden_activation {act!r} is not supported (gelu_pytorch_tanh or gelu)")
    heads = as_int(need(cfg, "num_attention_heads", "RecurrentGemma"), "num_attention_heads")
    head_dim = hidden // heads  # RecurrentGemmaConfig derives it; a head_dim field is ignored by transformers
    theta, frac = _rope(cfg)
    rope_dim = int(head_dim * frac)
    if rope_dim < 2 or rope_dim % 2:
        raise ConvertError(f"partial_rotary_factor {frac} gives {rope_dim} rotary channels; it must be even and >= 2")
    width = as_int(cfg.get("lru_width") or hidden, "lru_width")
    if width % heads:
        raise ConvertError(f"lru_width ({width}) must be a multiple of num_attention_heads ({heads})")
    cap = cfg.get("logits_soft_cap", 30.0)
    if cap is None:
        raise ConvertError("logits_soft_cap is null: transformers' RecurrentGemma always soft-caps its logits")
    if cfg.get("vocab_size"):
        doc.set("embed_scale", embed_scale(hidden))
        doc.set("logit_softcap", float(cap))
    doc.set("attention.heads", heads)
    doc.set("attention.kv_heads", as_int(cfg.get("num_key_value_heads") or heads, "num_key_value_heads"))
    doc.set("attention.window", as_int(cfg.get("attention_window_size", 2048), "attention_window_size"))
    doc.set("attention.rope", True)
    doc.set("attention.rope_theta", theta)
    doc.set("attention.rope_dim", rope_dim)
    doc.set("attention.bias", bool(cfg.get("attention_bias", False)))
    doc.set("attention.out_bias", True)
    doc.set("attention.ffn", False)
    doc.set("griffin.width", width)
    doc.set("griffin.conv", as_int(cfg.get("conv1d_width", 4), "conv1d_width"))
    doc.set("griffin.gelu_tanh", ACTS[act][0])
    doc.set("griffin.gate_blocks", heads)
    doc.set("griffin.reset", True)
    doc.set("griffin.mlp", False)
    doc.set("ffn.act", ACTS[act][1])
    doc.set("ffn.inner", as_int(cfg.get("intermediate_size", 3 * hidden), "intermediate_size") // 2)
    doc.set("ffn.bias", True)
    doc.notes.append("RMSNorm weights here are RecurrentGemma's 1 + w")
    for i in range(n):
        doc.stack += [TYPES[blocks[i % len(blocks)]], "F"]
    return doc.render()


def _need(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise ConvertError(f"{where}: {TARGET} {what}")


def to_config(graph: Graph) -> dict[str, Any]:
    """A compiled model -> RecurrentGemmaConfig fields; ConvertError where RecurrentGemma cannot say the model."""
    subs = sublayers(graph)
    reject_ties(subs, TARGET)
    layers = pairs(subs, ("griffin", "attention"), TARGET)
    s = graph.settings
    hidden = s["hidden"]
    attn = [m for m, _ in layers if m.kind == "attention"]
    rec = [m for m, _ in layers if m.kind == "griffin"]
    a = uniform(attn, ("heads", "kv_heads", "head_dim", "window", "rope_theta", "rope_dim", "bias"), TARGET)
    if attn and not rope.is_plain(attn[0].opts):
        raise ConvertError(f"{attn[0].where()}: {TARGET}'s RoPE here is the plain one (no rope_scaling)")
    r = uniform(rec, ("width", "conv", "gelu_tanh", "gate_blocks"), TARGET)
    heads = a.get("heads") or r.get("gate_blocks")
    if heads is None:
        raise ConvertError(f"{rec[0].where()}: {TARGET}'s gates are block-diagonal; set gate_blocks (= heads)")
    head_dim = hidden // heads
    for m in attn:
        w = m.where()
        _need(m.opts.get("window") is not None, w, "attention is local; give it a window (A(window=2048))")
        _need(m.opts.get("head_dim") in (None, head_dim), w, f"derives head_dim = hidden // heads = {head_dim}")
        _need(
            m.opts.get("rope") and not m.opts.get("qk_norm") and not m.opts.get("out_gate"),
            w,
            "attention has RoPE, no q/k norm, no output gate",
        )
        _need(
            m.opts.get("out_bias") is True or (m.opts.get("out_bias") is None and m.opts.get("bias")),
            w,
            "has a bias on the attention output (out_bias=true)",
        )
    for m in rec:
        w = m.where()
        _need(
            m.opts.get("gate_blocks") == heads, w, f"has block-diagonal gates, one block per head (gate_blocks={heads})"
        )
        _need(bool(m.opts.get("reset")), w, "resets the RG-LRU at position 0 (reset=true)")
    tanh = r.get("gelu_tanh", True)
    ffn_act = "geglu_tanh" if tanh else "geglu"
    for _, f in layers:
        _need(
            f.kind == "ffn" and f.opts.get("act") == ffn_act and f.opts.get("bias"),
            f.where(),
            f"MLP is a gated GELU FFN with biases, its GELU the recurrent blocks' (FFN(act={ffn_act}, bias=true))",
        )
    inners = {ffn_inner(f.opts, hidden) for _, f in layers}
    if len(inners) > 1:
        raise ConvertError(f"{TARGET} has one intermediate_size for every MLP; the model has {sorted(inners)}")
    if s["vocab"]:
        if s["embed_scale"] != embed_scale(hidden):
            raise ConvertError(
                f"{TARGET} scales embeddings by sqrt(hidden) in bfloat16: set embed_scale = {embed_scale(hidden)!r}"
            )
        if s["logit_softcap"] is None or s["logit_scale"] != 1.0:
            raise ConvertError(
                f"{TARGET} soft-caps its logits and does not scale them: set logit_softcap (30.0), logit_scale = 1"
            )
    types = ["attention" if m.kind == "attention" else "recurrent" for m, _ in layers]
    cfg = hf_base(graph, MODEL_TYPE, "RecurrentGemmaForCausalLM")
    rope_dim = a.get("rope_dim") or head_dim
    cfg.update(
        num_hidden_layers=len(layers),
        block_types=cycle(types),
        intermediate_size=2 * inners.pop(),
        lru_width=r.get("width") or hidden,
        conv1d_width=r.get("conv", 4),
        hidden_activation="gelu_pytorch_tanh" if tanh else "gelu",
        num_attention_heads=heads,
        num_key_value_heads=a.get("kv_heads") or heads,
        attention_window_size=a.get("window") or 2048,
        attention_bias=bool(a.get("bias")),
        rope_parameters={
            "rope_type": "default",
            "rope_theta": float(a.get("rope_theta") or 10000.0),
            "partial_rotary_factor": rope_dim / head_dim,
        },
    )
    if s["vocab"]:
        cfg["logits_soft_cap"] = float(s["logit_softcap"])
    return cfg


# ---------------------------------------------------------------------------------------------------- weights
def weight_rules(cfg: dict[str, Any], model) -> list:
    """Checkpoint tensor names of RecurrentGemmaForCausalLM for every tensor of ours."""
    from hybriddsl.interop.weights import GATED_UP, Rule, Transform, embed_head, final_norm, layer_keys, present, table

    # (1 + w) norms; 1 + w formed in float64 and rounded once to the model's dtype (transformers adds in float32)
    gemma_norm = Transform("one_plus", lambda t: 1.0 + t.double(), lambda t: ((t.double() - 1.0).to(t.dtype),))
    neg = Transform("neg", lambda t: -t, lambda t: (-t,))  # HF recurrent_param = -our lam
    griffin = {
        "in_y.weight": "linear_y.weight",
        "in_y.bias": "linear_y.bias",
        "in_x.weight": "linear_x.weight",
        "in_x.bias": "linear_x.bias",
        "out_proj.weight": "linear_out.weight",
        "out_proj.bias": "linear_out.bias",
        "conv.conv.weight": "conv_1d.weight",
        "conv.conv.bias": "conv_1d.bias",
        "gate_i.weight": "rg_lru.input_gate_weight",
        "gate_i.bias": "rg_lru.input_gate_bias",
        "gate_a.weight": "rg_lru.recurrent_gate_weight",
        "gate_a.bias": "rg_lru.recurrent_gate_bias",
        "lam": ("rg_lru.recurrent_param", neg),
    }
    attention = {
        "q_proj.weight": "q_proj.weight",
        "q_proj.bias": "q_proj.bias",
        "k_proj.weight": "k_proj.weight",
        "k_proj.bias": "k_proj.bias",
        "v_proj.weight": "v_proj.weight",
        "v_proj.bias": "v_proj.bias",
        "out_proj.weight": "o_proj.weight",
        "out_proj.bias": "o_proj.bias",
    }
    mlp = {
        "up.weight": (("gate_proj.weight", "up_proj.weight"), GATED_UP),
        "up.bias": (("gate_proj.bias", "up_proj.bias"), GATED_UP),
        "down.weight": "down_proj.weight",
        "down.bias": "down_proj.bias",
    }
    rules = embed_head(model, "model.embed_tokens.weight", "lm_head.weight")
    keys = layer_keys(model)
    for i in range(len(keys) // 2):
        t, f = keys[2 * i], keys[2 * i + 1]
        p = f"model.layers.{i}."
        rules.append(Rule(f"blocks.{t.norm}.weight", p + "temporal_pre_norm.weight", gemma_norm))
        rules += table(griffin if t.kind == "griffin" else attention, f"blocks.{t.mixer}.", p + "temporal_block.")
        rules.append(Rule(f"blocks.{f.norm}.weight", p + "channel_pre_norm.weight", gemma_norm))
        rules += table(mlp, f"blocks.{f.mixer}.", p + "mlp_block.")
    rules.append(Rule(f"blocks.{final_norm(model)}.weight", "model.final_norm.weight", gemma_norm))
    return present(rules, model)
