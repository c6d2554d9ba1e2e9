"""Hugging Face Nemotron-H configs (``NemotronHConfig``, model_type ``nemotron_h``; NVIDIA 2025).

One residual layer per entry of ``layers_block_type`` (transformers 5: ``linear_attention`` = Mamba-2,
``full_attention``, ``mlp``, ``moe``; the legacy ``mamba``/``attention`` too), or of the older
``hybrid_override_pattern`` (Megatron-LM letters ``M``, ``*``, ``-``, ``E``). Each layer is an RMSNorm
(``layer_norm_epsilon``) and one mixer:

- Mamba-2: ``mamba_num_heads`` x ``mamba_head_dim`` channels (the width; ``expand`` is not used by the model),
  ``ssm_state_size``, ``n_groups``, ``conv_kernel``, ``use_bias``, ``use_conv_bias``; Δ clamped below at
  ``time_step_min``; gated RMSNorm per group with ``layer_norm_epsilon``.
- attention: ``num_attention_heads``, ``num_key_value_heads``, ``head_dim``; no positional encoding;
  ``sliding_window`` and ``attention_bias`` are not applied by transformers 5 and are not read.
- MLP: ungated ``up -> mlp_hidden_act (relu2) -> down``, ``intermediate_size``, ``mlp_bias``.
- MoE: ``n_routed_experts`` MLP experts of ``moe_intermediate_size``, sigmoid router with
  ``e_score_correction_bias``, ``n_group``/``topk_group`` group-limited top-``num_experts_per_tok``,
  ``norm_topk_prob``, ``routed_scaling_factor``, and a shared MLP expert of
  ``moe_shared_expert_intermediate_size``; ``moe_latent_size`` (latent MoE: ``moe.latent``).
- MTP: tensors of the multi-token-prediction layers (``mtp.*``, ``num_nextn_predict_layers``) are not part of
  the main decoder: import skips them (transformers does too) and says so in a warning naming them.

Older field names (``mamba_n_groups``, ``mamba_d_conv``, ``mamba_conv_bias``, ``mamba_dt_min``,
``hybrid_override_pattern``) are read when the new ones are absent. Checkpoint names:
``backbone.embeddings``, ``backbone.layers.{i}.{norm, mixer.*}``, ``backbone.norm_f``, ``lm_head``.
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
    reject_ties,
    sublayers,
    uniform,
)
from hybriddsl.interop.mamba2 import MIXER as MAMBA2_MIXER
from hybriddsl.interop.mamba2 import mamba2_fields, ssm_width
from hybriddsl.interop.megatron import KIND_LETTER, parse_pattern
from hybriddsl.interop.weights import Rule, embed_head, final_norm, layer_keys, present, table
from hybriddsl.ir import Graph

MODEL_TYPE = "nemotron_h"
# checkpoint tensors that are not the main decoder: skipped at import with a warning ({prefix: what they are})
SKIPPED = {"mtp.": "the multi-token-prediction (MTP) layers"}
TARGET = "Hugging Face Nemotron-H"
EPS = "layer_norm_epsilon"

BLOCK_KIND = {
    "linear_attention": "mamba",
    "mamba": "mamba",
    "full_attention": "attention",
    "attention": "attention",
    "mlp": "ffn",
    "moe": "moe",
}
KIND_BLOCK = {"mamba2": "linear_attention", "attention": "full_attention", "ffn": "mlp", "moe": "moe"}
TOKEN = {"mamba": "M2", "attention": "A", "ffn": "F", "moe": "E"}

ATTENTION = {
    "q_proj.weight": "q_proj.weight",
    "q_proj.bias": "q_proj.bias",
    "k_proj.weight": "k_proj.weight",
    "k_proj.bias": "k_proj.bias",
    "v_proj.weight": "v_proj.weight",
    "v_proj.bias": "v_proj.bias",
    "out_proj.weight": "o_proj.weight",
    "out_proj.bias": "o_proj.bias",
}
MLP = {  # ungated: our up/down are HF's up_proj/down_proj (MLP layers, experts and the shared expert)
    "up.weight": "up_proj.weight",
    "up.bias": "up_proj.bias",
    "down.weight": "down_proj.weight",
    "down.bias": "down_proj.bias",
}


def detect(cfg: dict[str, Any]) -> bool:
    return cfg.get("model_type") == MODEL_TYPE or "hybrid_override_pattern" in cfg


def _get(cfg: dict[str, Any], new: str, old: str, default: Any) -> Any:
    """The field under its transformers-5 name, else its older name, else the default."""
    if cfg.get(new) is not None:
        return cfg[new]
    return cfg[old] if cfg.get(old) is not None else default


def layer_kinds(cfg: dict[str, Any]) -> list[str]:
    """Our kinds (mamba stands for Mamba-2 here) from ``layers_block_type`` or ``hybrid_override_pattern``."""
    types = cfg.get("layers_block_type")
    if types is not None:
        if not isinstance(types, list) or not types:
            raise ConvertError("layers_block_type must be a non-empty list of layer types")
        bad = [t for t in types if t not in BLOCK_KIND]
        if bad:
            raise ConvertError(
                f"layers_block_type entry {bad[0]!r}: Nemotron-H layers are linear_attention (Mamba-2), "
                "full_attention, mlp or moe"
            )
        kinds = [BLOCK_KIND[t] for t in types]
    elif cfg.get("hybrid_override_pattern") is not None:
        kinds = parse_pattern(cfg["hybrid_override_pattern"])
        other = [k for k in kinds if k not in TOKEN]
        if other:
            raise ConvertError(f"hybrid_override_pattern: Nemotron-H has no {other[0]} layers (M, *, - and E only)")
    else:
        raise ConvertError("the Nemotron-H config has neither 'layers_block_type' nor 'hybrid_override_pattern'")
    n = cfg.get("num_hidden_layers")
    if n is not None and as_int(n, "num_hidden_layers") != len(kinds):
        raise ConvertError(f"num_hidden_layers is {n} but the layer layout has {len(kinds)} layers")
    return kinds


def from_config(cfg: dict[str, Any]) -> str:
    """NemotronHConfig dict -> .hyb text."""
    kinds = layer_kinds(cfg)
    doc = HybText("converted from a Hugging Face Nemotron-H config")
    hidden = hf_settings(doc, cfg, "Nemotron-H", EPS)
    eps = float(cfg.get(EPS, 1e-5))
    if "attention" in kinds:
        heads = as_int(cfg.get("num_attention_heads", 32), "num_attention_heads")
        doc.set("attention.heads", heads)
        doc.set("attention.kv_heads", as_int(cfg.get("num_key_value_heads") or heads, "num_key_value_heads"))
        hd = as_int(cfg.get("head_dim", 128), "head_dim")
        if hd != hidden // heads or hidden % heads:
            doc.set("attention.head_dim", hd)
        # attention_bias: transformers 5's NemotronHAttention builds its projections without biases whatever it says
    doc.set("attention.ffn", False)  # the mlp/moe layers are the MLPs
    if "mamba" in kinds:
        if cfg.get("mamba_hidden_act", "silu") not in ("silu", "swish"):
            raise ConvertError(f"mamba_hidden_act {cfg['mamba_hidden_act']!r}: our Mamba-2 uses SiLU")
        heads = as_int(cfg.get("mamba_num_heads", 128), "mamba_num_heads")
        head_dim = as_int(cfg.get("mamba_head_dim", 64), "mamba_head_dim")
        doc.set("mamba2.state", as_int(cfg.get("ssm_state_size", 128), "ssm_state_size"))
        doc.set("mamba2.head_dim", head_dim)
        ssm_width(doc, hidden, heads * head_dim)  # the model's width is heads x head_dim, whatever expand says
        doc.set("mamba2.groups", as_int(_get(cfg, "n_groups", "mamba_n_groups", 8), "n_groups"))
        doc.set("mamba2.conv", as_int(_get(cfg, "conv_kernel", "mamba_d_conv", 4), "conv_kernel"))
        doc.set("mamba2.bias", bool(cfg.get("use_bias", False)))
        doc.set("mamba2.conv_bias", bool(_get(cfg, "use_conv_bias", "mamba_conv_bias", True)))
        doc.set("mamba2.gate_eps", eps)
        doc.set("mamba2.dt_min", float(_get(cfg, "time_step_min", "mamba_dt_min", 1e-3)))
    act = cfg.get("mlp_hidden_act", "relu2")
    if act not in ("relu2", "gelu"):
        raise ConvertError(f"mlp_hidden_act {act!r}: our ungated MLP takes relu2 or gelu")
    bias = bool(cfg.get("mlp_bias", False))
    if "ffn" in kinds:
        doc.set("ffn.act", act)
        doc.set("ffn.inner", as_int(cfg.get("intermediate_size", 21504), "intermediate_size"))
        doc.set("ffn.bias", bias)
    if "moe" in kinds:
        if cfg.get("moe_latent_size") is not None:  # latent MoE: the routed experts work at this width
            doc.set("moe.latent", as_int(cfg["moe_latent_size"], "moe_latent_size"))
            doc.set("moe.latent_bias", bias)
        experts = as_int(cfg.get("n_routed_experts", 8), "n_routed_experts")
        doc.set("moe.experts", experts)
        doc.set("moe.top_k", as_int(cfg.get("num_experts_per_tok", 2), "num_experts_per_tok"))
        doc.set("moe.act", act)
        doc.set("moe.bias", False)  # the routed experts have no biases; the shared expert follows mlp_bias
        doc.set("moe.shared_bias", bias)
        doc.set("moe.inner", as_int(cfg.get("moe_intermediate_size", 7688), "moe_intermediate_size"))
        doc.set("moe.score", "sigmoid")
        doc.set("moe.score_bias", True)
        doc.set("moe.groups", as_int(cfg.get("n_group", 1), "n_group"))
        doc.set("moe.topk_groups", as_int(cfg.get("topk_group", 1), "topk_group"))
        doc.set("moe.norm_topk", bool(cfg.get("norm_topk_prob", True)))
        doc.set("moe.scale", float(cfg.get("routed_scaling_factor", 1.0)))
        shared = cfg.get("moe_shared_expert_intermediate_size", 7688)
        if shared:
            doc.set("moe.shared", as_int(shared, "moe_shared_expert_intermediate_size"))
    doc.stack = [TOKEN[k] for k in kinds]
    return doc.render()


def to_config(graph: Graph) -> dict[str, Any]:
    """A compiled model -> NemotronHConfig fields; ConvertError where Nemotron-H cannot say the model."""
    subs = sublayers(graph)
    reject_ties(subs, TARGET)
    hidden = graph.settings["hidden"]
    for s in subs:
        if s.role == "shared":
            raise ConvertError(f"{s.where()}: {TARGET} has no shared blocks")
        if s.kind == "mamba":
            raise ConvertError(f"{s.where()}: {TARGET}'s Mamba layers are Mamba-2 (write M2 / mamba2)")
        if s.kind not in KIND_BLOCK:
            raise ConvertError(f"{s.where()}: {TARGET} has no '{s.kind}' layer (it has mamba2, attention, ffn and moe)")
    by = {k: [s for s in subs if s.kind == k] for k in KIND_BLOCK}
    eps = graph.settings["norm_eps"]
    a = uniform(by["attention"], ("heads", "kv_heads", "head_dim", "window", "rope", "qk_norm", "bias"), TARGET)
    if a and (a["window"] or a["rope"] or a["qk_norm"] or a["bias"]):
        raise ConvertError(
            f"{by['attention'][0].where()}: {TARGET}'s attention has no sliding window, RoPE, q/k norm or biases"
        )
    mkeys = ("state", "head_dim", "groups", "conv", "expand", "inner", "bias", "conv_bias", "gate_eps", "dt_min")
    m = uniform(by["mamba2"], (*mkeys, "dt_max"), TARGET)
    if m and (m["gate_eps"] != eps or m["dt_max"] is not None):
        raise ConvertError(
            f"{by['mamba2'][0].where()}: {TARGET} uses layer_norm_epsilon in the Mamba-2 gated norm (gate_eps = "
            "norm_eps) and clamps Δ only from below (no dt_max)"
        )
    f = uniform(by["ffn"], ("act", "bias"), TARGET)
    ekeys = (
        "experts",
        "top_k",
        "act",
        "bias",
        "shared_bias",
        "score",
        "score_bias",
        "groups",
        "topk_groups",
        "norm_topk",
        "scale",
        "latent",
        "latent_bias",
    )
    e = uniform(by["moe"], (*ekeys, "shared", "inner", "mult"), TARGET)
    acts = {x["act"] for x in (f, e) if x}
    if len(acts) > 1 or acts - {"relu2", "gelu"}:
        where = (by["ffn"] or by["moe"])[0].where()
        raise ConvertError(f"{where}: {TARGET}'s MLPs are ungated, all relu2 or all gelu; the model has {sorted(acts)}")
    if e and e["bias"]:
        raise ConvertError(f"{by['moe'][0].where()}: {TARGET}'s routed experts have no biases (write bias=false)")
    biases = {x for x in (f and f["bias"], e and e["shared"] and e["shared_bias"]) if x is not None and x != {}}
    if e and e["latent"]:
        biases.add(e["latent_bias"])
    biases = {bool(b) for b in biases}
    if len(biases) > 1:
        raise ConvertError(f"{TARGET} has one mlp_bias for the MLPs and the shared expert")
    inners = {ffn_inner(s.opts, hidden) for s in by["ffn"]}
    if len(inners) > 1:
        raise ConvertError(f"{TARGET} has one intermediate_size for every MLP; the model has {sorted(inners)}")
    if e and (e["score"] != "sigmoid" or not e["score_bias"]):
        raise ConvertError(
            f"{by['moe'][0].where()}: {TARGET}'s router is a sigmoid with a score bias (write score=sigmoid, "
            "score_bias=true)"
        )
    types = [KIND_BLOCK[s.kind] for s in subs]
    cfg = hf_base(graph, MODEL_TYPE, "NemotronHForCausalLM", EPS)
    cfg.update(
        layers_block_type=types,
        hybrid_override_pattern="".join(KIND_LETTER[s.kind] for s in subs),  # what older transformers read
        mlp_hidden_act=acts.pop() if acts else "relu2",
        mlp_bias=bool(biases.pop()) if biases else False,
    )
    if a:
        cfg.update(
            num_attention_heads=a["heads"],
            num_key_value_heads=a["kv_heads"] or a["heads"],
            head_dim=a["head_dim"] or hidden // a["heads"],
            attention_bias=False,
        )
    if m:
        w = mamba2_fields(m, hidden)
        cfg.update(
            ssm_state_size=m["state"],
            mamba_head_dim=m["head_dim"],
            mamba_num_heads=w["heads"],
            n_groups=m["groups"],
            conv_kernel=m["conv"],
            expand=max(1, w["width"] // hidden),  # not used by the model (its width is heads x head_dim)
            use_bias=bool(m["bias"]),
            use_conv_bias=bool(m["conv_bias"]),
            time_step_min=m["dt_min"],
        )
    if inners:
        cfg["intermediate_size"] = inners.pop()
    if e:
        cfg.update(
            n_routed_experts=e["experts"],
            num_experts_per_tok=e["top_k"],
            moe_intermediate_size=ffn_inner(by["moe"][0].opts, hidden),
            n_group=e["groups"],
            topk_group=e["topk_groups"],
            norm_topk_prob=bool(e["norm_topk"]),
            routed_scaling_factor=e["scale"],
            moe_shared_expert_intermediate_size=e["shared"] or 0,
            n_shared_experts=1 if e["shared"] else 0,
            moe_latent_size=e["latent"],
        )
    return cfg


def weight_rules(cfg: dict[str, Any], model) -> list[Rule]:
    """Checkpoint tensor names of NemotronHForCausalLM for every tensor of ours."""
    rules = embed_head(model, "backbone.embeddings.weight", "lm_head.weight")
    for i, lk in enumerate(layer_keys(model)):
        p, o = f"backbone.layers.{i}.", f"blocks.{lk.mixer}."
        rules.append(Rule(f"blocks.{lk.norm}.weight", p + "norm.weight"))
        if lk.kind == "mamba2":
            rules += table(MAMBA2_MIXER, o, p + "mixer.")
        elif lk.kind == "attention":
            rules += table(ATTENTION, o, p + "mixer.")
        elif lk.kind == "ffn":
            rules += table(MLP, o, p + "mixer.")
        elif lk.kind == "moe":
            rules.append(Rule(o + "router.weight", p + "mixer.gate.weight"))
            rules.append(Rule(o + "score_bias", p + "mixer.gate.e_score_correction_bias"))
            for ours, theirs in (("latent_in", "fc1_latent_proj"), ("latent_out", "fc2_latent_proj")):
                rules += [Rule(f"{o}{ours}.{x}", f"{p}mixer.{theirs}.{x}") for x in ("weight", "bias")]
            for j in range(len(model.blocks[lk.mixer].experts)):
                rules += table(MLP, f"{o}experts.{j}.", f"{p}mixer.experts.{j}.")
            rules += table(MLP, o + "shared.", p + "mixer.shared_experts.")
    rules.append(Rule(f"blocks.{final_norm(model)}.weight", "backbone.norm_f.weight"))
    return present(rules, model)
