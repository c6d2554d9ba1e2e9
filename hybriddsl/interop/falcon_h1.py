"""Hugging Face Falcon-H1 configs (``FalconH1Config``, model_type ``falcon_h1``; TII 2025).

Every decoder layer runs attention (``num_attention_heads``, ``num_key_value_heads``, ``head_dim``, RoPE) and a
Mamba-2 mixer (``mamba_d_state``, ``mamba_d_conv``, ``mamba_expand``, ``mamba_n_groups``, ``mamba_n_heads`` x
``mamba_d_head``) side by side on the same normed input and adds their outputs, then a SwiGLU MLP of
``intermediate_size``. In .hyb: ``[A | M2](mix=mean) FFN(act=swiglu)`` per layer (the mean is the sum up to the
constant that Falcon-H1's ``attn_out_multiplier``/``ssm_out_multiplier`` set anyway).
"""

from __future__ import annotations

from typing import Any

from hybriddsl.interop.common import (
    ConvertError,
    HybText,
    Sub,
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

MODEL_TYPE = "falcon_h1"
TARGET = "Hugging Face Falcon-H1"


def detect(cfg: dict[str, Any]) -> bool:
    return cfg.get("model_type") == MODEL_TYPE or "mamba_d_ssm" in cfg


def from_config(cfg: dict[str, Any]) -> str:
    """FalconH1Config dict -> .hyb text."""
    doc = HybText("converted from a Hugging Face Falcon-H1 config")
    hidden = hf_settings(doc, cfg, "Falcon-H1")
    n = as_int(need(cfg, "num_hidden_layers", "Falcon-H1"), "num_hidden_layers")
    heads = cfg.get("num_attention_heads")
    doc.set("attention.heads", heads)
    doc.set("attention.kv_heads", cfg.get("num_key_value_heads"))
    if cfg.get("head_dim") and heads and cfg["head_dim"] != hidden // heads:
        doc.set("attention.head_dim", cfg["head_dim"])
    doc.set("attention.rope", True)
    if cfg.get("rope_theta"):
        doc.set("attention.rope_theta", float(cfg["rope_theta"]))
    doc.set("attention.ffn", False)
    expand = cfg.get("mamba_expand", 2)
    d_ssm = cfg.get("mamba_d_ssm") or expand * hidden
    if d_ssm % hidden:
        doc.notes.append(f"mamba_d_ssm {d_ssm} is not a multiple of hidden {hidden}; mamba_expand used")
    else:
        expand = d_ssm // hidden
    d_head = cfg.get("mamba_d_head", "auto")
    if d_head in (None, "auto") and cfg.get("mamba_n_heads"):
        d_head = d_ssm // cfg["mamba_n_heads"]
    doc.set("mamba2.state", cfg.get("mamba_d_state"))
    doc.set("mamba2.conv", cfg.get("mamba_d_conv"))
    doc.set("mamba2.expand", expand)
    doc.set("mamba2.groups", cfg.get("mamba_n_groups"))
    if d_head not in (None, "auto"):
        doc.set("mamba2.head_dim", as_int(d_head, "mamba_d_head"))
    doc.set("ffn.act", "swiglu")
    doc.set("ffn.inner", cfg.get("intermediate_size"))
    doc.notes.append("attention and SSM outputs are averaged (Falcon-H1 adds them, scaled by its multipliers)")
    doc.stack = ["[A | M2](mix=mean)", "F"] * n
    return doc.render()


def _branches(s: Sub) -> list[Sub]:
    """The single-layer branches of a Falcon-H1 parallel block, as Subs, or a ConvertError."""
    br = s.opts.get("branches", [])
    if s.kind != "parallel" or len(br) != 2 or any(len(b) != 1 for b in br):
        raise ConvertError(f"{s.where()}: every {TARGET} layer is [A | M2] (one attention, one Mamba-2 branch)")
    out = [Sub(b[0]["kind"], b[0]["opts"], s.pos, s.role, s.weights) for b in br]
    if sorted(b.kind for b in out) != ["attention", "mamba2"]:
        raise ConvertError(
            f"{s.where()}: {TARGET}'s parallel block is attention | mamba2, not " + " | ".join(b.kind for b in out)
        )
    if s.opts.get("mix") != "mean":
        raise ConvertError(f"{s.where()}: {TARGET} adds the branches (mix=mean), not mix={s.opts.get('mix')}")
    return out


def to_config(graph: Graph) -> dict[str, Any]:
    """A compiled model -> FalconH1Config fields; ConvertError where Falcon-H1 cannot say the model."""
    subs = sublayers(graph)
    reject_ties(subs, TARGET)
    layers = pairs(subs, ("parallel",), TARGET)
    hidden = graph.settings["hidden"]
    branches = [b for m, _ in layers for b in _branches(m)]
    a = uniform([b for b in branches if b.kind == "attention"], ("heads", "kv_heads", "head_dim"), TARGET)
    m = uniform([b for b in branches if b.kind == "mamba2"], ("state", "conv", "expand", "groups", "head_dim"), TARGET)
    for _, f in layers:
        if f.kind != "ffn" or gated_act(f, TARGET) != "silu":
            raise ConvertError(f"{f.where()}: {TARGET}'s MLP is SwiGLU (FFN(act=swiglu))")
    inners = {ffn_inner(f.opts, hidden) for _, f in layers}
    if len(inners) > 1:
        raise ConvertError(f"{TARGET} has one intermediate_size for every MLP; the model has {sorted(inners)}")
    cfg = hf_base(graph, MODEL_TYPE, "FalconH1ForCausalLM")
    d_ssm = m["expand"] * hidden
    cfg.update(
        num_hidden_layers=len(layers),
        intermediate_size=inners.pop(),
        num_attention_heads=a["heads"],
        num_key_value_heads=a["kv_heads"] or a["heads"],
        head_dim=a["head_dim"] or hidden // a["heads"],
        mamba_d_state=m["state"],
        mamba_d_conv=m["conv"],
        mamba_expand=m["expand"],
        mamba_n_groups=m["groups"],
        mamba_d_ssm=d_ssm,
        mamba_n_heads=d_ssm // m["head_dim"],
        mamba_d_head=m["head_dim"],
    )
    return cfg
