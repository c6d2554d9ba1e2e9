"""Hugging Face Qwen3-Next (``Qwen3NextConfig``, model_type ``qwen3_next``; Qwen team 2025).

``layer_types[i]`` is ``"linear_attention"`` (Gated DeltaNet: ``linear_num_key_heads`` q/k heads of
``linear_key_head_dim``, ``linear_num_value_heads`` value heads of ``linear_value_head_dim`` (more value heads
than key heads: each q/k head serves several), ``linear_conv_kernel_dim``) or ``"full_attention"``
(``num_attention_heads``, ``num_key_value_heads``, ``head_dim``, q/k RMSNorm, RoPE on the first
``partial_rotary_factor`` of each head, a sigmoid gate on the output from a second half of ``q_proj``). Every
layer then has an MLP: a sparse MoE (``num_experts``, ``num_experts_per_tok``, ``moe_intermediate_size``,
``norm_topk_prob``, a shared SwiGLU expert of ``shared_expert_intermediate_size`` scaled by
``sigmoid(shared_expert_gate x)``) when ``num_experts > 0``, ``(i + 1) % decoder_sparse_step == 0`` and ``i`` is
not in ``mlp_only_layers``, else a dense SwiGLU MLP of ``intermediate_size``. The decoder's RMSNorms and the q/k
norms scale by ``1 + w`` (our weight is ``1 + w``); the delta rule's gated output norm by ``w``.

Checkpoint layout: ``linear_attn.in_proj_qkvz`` holds q, k, v and the output gate z interleaved per key head
(``[q_h, k_h, v of its value heads, z of its value heads]``), ``in_proj_ba`` beta and the decay input the same
way, ``conv1d`` one depthwise conv over ``[q, k, v]``; ``self_attn.q_proj`` holds each head's query rows then
its gate rows. The weight rules split these into our separate projections and join them back on export.
"""

from __future__ import annotations

from typing import Any

from hybriddsl.interop import rope
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
IGNORED = ("rotary_emb.inv_freq",)


def detect(cfg: dict[str, Any]) -> bool:
    return cfg.get("model_type") == MODEL_TYPE or "linear_num_value_heads" in cfg


def _rope(cfg: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """(attention options for theta and scaling, partial_rotary_factor) from ``rope_parameters`` (transformers 5)
    or the top level."""
    rp = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    return rope.read(cfg, "Qwen3-Next"), float(rp.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 0.25)))


def layer_plan(cfg: dict[str, Any]) -> tuple[list[str], list[bool]]:
    """(layer types, which layers have the sparse MoE) exactly as transformers builds the decoder."""
    n = as_int(need(cfg, "num_hidden_layers", "Qwen3-Next"), "num_hidden_layers")
    interval = cfg.get("full_attention_interval", 4)
    types = cfg.get("layer_types") or [
        "full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(n)
    ]
    if len(types) != n:
        raise ConvertError(f"num_hidden_layers is {n} but layer_types has {len(types)} entries")
    for t in types:
        if t not in TYPES:
            raise ConvertError(f"layer type {t!r}: Qwen3-Next layers are linear_attention or full_attention")
    n_exp = cfg.get("num_experts", 0) or 0
    step, dense = cfg.get("decoder_sparse_step", 1) or 1, set(cfg.get("mlp_only_layers") or [])
    return list(types), [n_exp > 0 and (i + 1) % step == 0 and i not in dense for i in range(n)]


def from_config(cfg: dict[str, Any]) -> str:
    """Qwen3NextConfig dict -> .hyb text."""
    doc = HybText("converted from a Hugging Face Qwen3-Next config")
    hidden = hf_settings(doc, cfg, "Qwen3-Next")
    types, sparse = layer_plan(cfg)
    if cfg.get("hidden_act", "silu") not in ("silu", "swish"):
        raise ConvertError(f"hidden_act {cfg['hidden_act']!r}: Qwen3-Next here is SwiGLU with SiLU convs")
    eps = float(cfg.get("rms_norm_eps", 1e-6))
    heads = as_int(need(cfg, "num_attention_heads", "Qwen3-Next"), "num_attention_heads")
    hd = as_int(cfg.get("head_dim") or hidden // heads, "head_dim")
    ropts, frac = _rope(cfg)
    rope_dim = int(hd * frac)
    if rope_dim < 2 or rope_dim % 2:
        raise ConvertError(f"partial_rotary_factor {frac} gives {rope_dim} rotary channels; it must be even and >= 2")
    doc.set("attention.heads", heads)
    doc.set("attention.kv_heads", as_int(cfg.get("num_key_value_heads") or heads, "num_key_value_heads"))
    if hd != hidden // heads:
        doc.set("attention.head_dim", hd)
    doc.set("attention.qk_norm", True)
    doc.set("attention.qk_eps", eps)
    doc.set("attention.rope", True)
    for k, v in ropts.items():
        doc.set(f"attention.{k}", v)
    if rope_dim != hd:
        doc.set("attention.rope_dim", rope_dim)
    doc.set("attention.out_gate", True)
    doc.set("attention.bias", bool(cfg.get("attention_bias", False)))
    doc.set("attention.ffn", False)
    kh, kd = cfg.get("linear_num_key_heads", 16), cfg.get("linear_key_head_dim", 128)
    vh, vd = cfg.get("linear_num_value_heads", 32), cfg.get("linear_value_head_dim", 128)
    if vh % kh:
        raise ConvertError(f"linear_num_value_heads ({vh}) must be a multiple of linear_num_key_heads ({kh})")
    doc.set("gated_delta_net.heads", as_int(kh, "linear_num_key_heads"))
    doc.set("gated_delta_net.head_dim", as_int(kd, "linear_key_head_dim"))
    doc.set("gated_delta_net.expand_v", vd / kd)
    if vh != kh:
        doc.set("gated_delta_net.v_heads", as_int(vh, "linear_num_value_heads"))
    doc.set("gated_delta_net.conv", as_int(cfg.get("linear_conv_kernel_dim", 4), "linear_conv_kernel_dim"))
    doc.set("gated_delta_net.out_eps", eps)
    doc.set("ffn.act", "swiglu")
    doc.set("ffn.bias", False)
    if not all(sparse):
        doc.set("ffn.inner", as_int(need(cfg, "intermediate_size", "Qwen3-Next"), "intermediate_size"))
    if any(sparse):
        doc.set("moe.experts", as_int(cfg["num_experts"], "num_experts"))
        doc.set("moe.top_k", as_int(need(cfg, "num_experts_per_tok", "Qwen3-Next"), "num_experts_per_tok"))
        doc.set("moe.act", "swiglu")
        doc.set("moe.inner", as_int(need(cfg, "moe_intermediate_size", "Qwen3-Next"), "moe_intermediate_size"))
        doc.set("moe.norm_topk", bool(cfg.get("norm_topk_prob", True)))
        shared = cfg.get("shared_expert_intermediate_size")
        if not shared:
            raise ConvertError("shared_expert_intermediate_size is 0: transformers' Qwen3-Next always has one")
        doc.set("moe.shared", as_int(shared, "shared_expert_intermediate_size"))
        doc.set("moe.shared_gate", True)
    doc.notes.append("RMSNorm and q/k-norm weights here are Qwen3-Next's 1 + w")
    for t, sp in zip(types, sparse):
        doc.stack += [TYPES[t], "E" if sp else "F"]
    return doc.render()


def to_config(graph: Graph) -> dict[str, Any]:
    """A compiled model -> Qwen3NextConfig fields; ConvertError where Qwen3-Next cannot say the model."""
    subs = sublayers(graph)
    reject_ties(subs, TARGET)
    layers = pairs(subs, ("gated_delta_net", "attention"), TARGET)
    s = graph.settings
    hidden = s["hidden"]
    attn = [m for m, _ in layers if m.kind == "attention"]
    gdn = [m for m, _ in layers if m.kind == "gated_delta_net"]
    dense = [f for _, f in layers if f.kind == "ffn"]
    moes = [f for _, f in layers if f.kind == "moe"]
    keys = ("heads", "kv_heads", "head_dim", "rope_dim", "bias", "qk_eps", *rope.KEYS)
    a = uniform(attn, keys, TARGET)
    g = uniform(gdn, ("heads", "head_dim", "expand_v", "v_heads", "conv", "out_eps", "bias"), TARGET)
    for m in attn:
        flags = [m.opts.get(o) for o in ("qk_norm", "rope", "out_gate")]
        if not all(flags) or m.opts.get("window") or m.opts.get("out_bias") is not None:
            raise ConvertError(
                f"{m.where()}: {TARGET}'s attention has q/k norms, RoPE and a gated output, no window "
                "(A(qk_norm=true, rope=true, out_gate=true))"
            )
    if a and a["qk_eps"] != s["norm_eps"]:
        raise ConvertError(f"{attn[0].where()}: {TARGET} uses rms_norm_eps for q/k norms; set qk_eps = norm_eps")
    if g and (g["out_eps"] != s["norm_eps"] or g["bias"]):
        raise ConvertError(
            f"{gdn[0].where()}: {TARGET}'s gated DeltaNet has no biases and its norm uses rms_norm_eps "
            "(bias=false, out_eps = norm_eps)"
        )
    if g and g["conv"] < 1:
        raise ConvertError(f"{gdn[0].where()}: {TARGET}'s gated DeltaNet has short convolutions (conv >= 1)")
    for f in dense + moes:
        if gated_act(f, TARGET) != "silu" or f.opts.get("bias"):
            raise ConvertError(f"{f.where()}: {TARGET}'s MLPs are SwiGLU without biases (act=swiglu, bias=false)")
    e = uniform(moes, ("experts", "top_k", "norm_topk", "shared", "shared_gate", "score", "scale"), TARGET)
    for f in moes:
        o = f.opts
        if not (o.get("shared") and o.get("shared_gate")) or o.get("score", "softmax") != "softmax":
            raise ConvertError(
                f"{f.where()}: {TARGET}'s MoE has softmax routing and a gated shared expert "
                "(E(shared=N, shared_gate=true))"
            )
        if o.get("scale", 1.0) != 1.0 or o.get("score_bias") or o.get("groups", 1) != 1:
            raise ConvertError(f"{f.where()}: {TARGET}'s router has no scale, score bias or expert groups")
    if s["embed_scale"] != 1.0 or s["logit_scale"] != 1.0 or s["logit_softcap"] is not None:
        raise ConvertError(f"{TARGET} does not scale embeddings or logits")
    cfg = hf_base(graph, MODEL_TYPE, "Qwen3NextForCausalLM")
    cfg.update(
        num_hidden_layers=len(layers),
        layer_types=["full_attention" if m.kind == "attention" else "linear_attention" for m, _ in layers],
        hidden_act="silu",
    )
    if a:
        heads = a["heads"]
        hd = a["head_dim"] or hidden // heads
        cfg.update(
            num_attention_heads=heads,
            num_key_value_heads=a["kv_heads"] or heads,
            head_dim=hd,
            attention_bias=bool(a["bias"]),
            rope_parameters={**rope.write(a), "partial_rotary_factor": (a["rope_dim"] or hd) / hd},
        )
    if g:
        kd = g["head_dim"] or hidden // g["heads"]
        vd = g["expand_v"] * kd
        if vd != int(vd):
            raise ConvertError(f"{gdn[0].where()}: value head width {vd:g} is not a whole number")
        cfg.update(
            linear_num_key_heads=g["heads"],
            linear_num_value_heads=g["v_heads"] or g["heads"],
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
        widths = {ffn_inner(f.opts, hidden) for f in moes}
        if len(widths) > 1:
            raise ConvertError(f"{TARGET} has one moe_intermediate_size; the model has {sorted(widths)}")
        cfg.update(
            num_experts=e["experts"],
            num_experts_per_tok=e["top_k"],
            norm_topk_prob=bool(e["norm_topk"]),
            moe_intermediate_size=widths.pop(),  # exact: the experts' own width, not a rounded mult
            shared_expert_intermediate_size=e["shared"],
            decoder_sparse_step=1,
            mlp_only_layers=[i for i, (_, f) in enumerate(layers) if f.kind == "ffn"],
        )
    else:
        cfg.update(num_experts=0, mlp_only_layers=list(range(len(layers))))
    return cfg


# ---------------------------------------------------------------------------------------------------- weights
def weight_rules(cfg: dict[str, Any], model) -> list:
    """Checkpoint tensor names of Qwen3NextForCausalLM for every tensor of ours."""
    import torch

    from hybriddsl.interop.weights import (
        GATED_UP,
        Rule,
        Transform,
        embed_head,
        final_norm,
        layer_keys,
        pieces,
        present,
        split0,
        table,
    )

    one_plus = Transform("one_plus", lambda t: 1.0 + t.double(), lambda t: ((t.double() - 1.0).to(t.dtype),))
    hidden = cfg["hidden_size"]
    nk, nv = cfg.get("linear_num_key_heads", 16), cfg.get("linear_num_value_heads", 32)
    dk, dv = cfg.get("linear_key_head_dim", 128), cfg.get("linear_value_head_dim", 128)
    r = nv // nk
    heads = cfg.get("num_attention_heads")
    hd = cfg.get("head_dim") or hidden // heads
    mlp = {
        "up.weight": (("gate_proj.weight", "up_proj.weight"), GATED_UP),
        "down.weight": "down_proj.weight",
    }

    def qkvz_split(t):
        q, k, v, z = t.reshape(nk, 2 * dk + 2 * r * dv, -1).split([dk, dk, r * dv, r * dv], 1)
        return [x.reshape(-1, t.shape[-1]) for x in (q, k, v, z)]

    def qkvz_join(ps):
        q, k, v, z = (p.reshape(nk, -1, p.shape[-1]) for p in ps)
        return torch.cat([q, k, v, z], 1).reshape(-1, q.shape[-1])

    def ba_split(t):
        b, a = t.reshape(nk, 2 * r, -1).split([r, r], 1)
        return [b.reshape(-1, t.shape[-1]), a.reshape(-1, t.shape[-1])]

    def ba_join(ps):
        b, a = (p.reshape(nk, r, p.shape[-1]) for p in ps)
        return torch.cat([b, a], 1).reshape(-1, b.shape[-1])

    def q_split(t):  # weight [2 heads hd, hidden] or bias [2 heads hd]
        q, g = t.reshape(heads, 2 * hd, -1).split([hd, hd], 1)
        return [q.reshape(-1, *t.shape[1:]), g.reshape(-1, *t.shape[1:])]

    def q_join(ps):
        q, g = (p.reshape(heads, hd, -1) for p in ps)
        return torch.cat([q, g], 1).reshape(-1, *ps[0].shape[1:])

    rules = embed_head(model, "model.embed_tokens.weight", "lm_head.weight")
    keys = layer_keys(model)
    for i in range(len(keys) // 2):
        mix, ff = keys[2 * i], keys[2 * i + 1]
        p, o = f"model.layers.{i}.", f"blocks.{mix.mixer}."
        rules.append(Rule(f"blocks.{mix.norm}.weight", p + "input_layernorm.weight", one_plus))
        if mix.kind == "gated_delta_net":
            la = p + "linear_attn."
            qkvz = [o + f"{n}_proj.weight" for n in ("q", "k", "v", "g")]
            conv = [o + f"{n}_conv.conv.weight" for n in ("q", "k", "v")]
            rules += [
                pieces(qkvz, la + "in_proj_qkvz.weight", qkvz_split, qkvz_join, "qkvz"),
                pieces([o + "b_proj.weight", o + "a_proj.weight"], la + "in_proj_ba.weight", ba_split, ba_join, "ba"),
                split0(conv, la + "conv1d.weight", [nk * dk, nk * dk, nv * dv]),
                Rule(o + "A_log", la + "A_log"),
                Rule(o + "dt_bias", la + "dt_bias"),
                Rule(o + "o_norm.weight", la + "norm.weight"),
                Rule(o + "o_proj.weight", la + "out_proj.weight"),
            ]
        else:
            sa = p + "self_attn."
            rules += [
                pieces([o + "q_proj.weight", o + "gate_proj.weight"], sa + "q_proj.weight", q_split, q_join, "q_gate"),
                pieces([o + "q_proj.bias", o + "gate_proj.bias"], sa + "q_proj.bias", q_split, q_join, "q_gate"),
                Rule(o + "k_proj.weight", sa + "k_proj.weight"),
                Rule(o + "k_proj.bias", sa + "k_proj.bias"),
                Rule(o + "v_proj.weight", sa + "v_proj.weight"),
                Rule(o + "v_proj.bias", sa + "v_proj.bias"),
                Rule(o + "out_proj.weight", sa + "o_proj.weight"),
                Rule(o + "out_proj.bias", sa + "o_proj.bias"),
                Rule(o + "q_norm.weight", sa + "q_norm.weight", one_plus),
                Rule(o + "k_norm.weight", sa + "k_norm.weight", one_plus),
            ]
        rules.append(Rule(f"blocks.{ff.norm}.weight", p + "post_attention_layernorm.weight", one_plus))
        f, m = f"blocks.{ff.mixer}.", p + "mlp."
        if ff.kind == "moe":
            rules.append(Rule(f + "router.weight", m + "gate.weight"))
            for j in range(len(model.blocks[ff.mixer].experts)):
                rules += table(mlp, f"{f}experts.{j}.", f"{m}experts.{j}.")
            rules += table(mlp, f + "shared.", m + "shared_expert.")
            rules.append(Rule(f + "shared_gate.weight", m + "shared_expert_gate.weight"))
        else:
            rules += table(mlp, f, m)
    rules.append(Rule(f"blocks.{final_norm(model)}.weight", "model.norm.weight", one_plus))
    return present(rules, model)
