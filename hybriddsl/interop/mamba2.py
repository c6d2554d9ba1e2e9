"""Hugging Face Mamba-2 (``Mamba2Config``, model_type ``mamba2``, ``Mamba2ForCausalLM``; Dao & Gu 2024).

``num_hidden_layers`` pre-norm residual blocks, each an RMSNorm (``layer_norm_epsilon``) and a Mamba-2 mixer
(``state_size``, ``num_heads`` x ``head_dim`` = ``int(expand * hidden_size)`` channels, ``n_groups`` B/C groups,
``conv_kernel``, ``use_bias``, ``use_conv_bias``; its gated RMSNorm normalizes per group with
``layer_norm_epsilon``), then a final RMSNorm and the LM head. In .hyb: ``M2`` repeated.
Checkpoint names: ``backbone.embeddings``, ``backbone.layers.{i}.norm``, ``backbone.layers.{i}.mixer.*``,
``backbone.norm_f``, ``lm_head``.
"""

from __future__ import annotations

import math
from typing import Any

from hybriddsl.interop.common import (
    ConvertError,
    HybText,
    as_int,
    hf_base,
    hf_settings,
    need,
    reject_ties,
    sublayers,
    uniform,
)
from hybriddsl.interop.weights import Rule, mamba_backbone
from hybriddsl.ir import Graph

MODEL_TYPE = "mamba2"
TARGET = "Hugging Face Mamba-2"
EPS = "layer_norm_epsilon"

# our key under blocks.<mixer>. -> HF's under <prefix>.mixer. (shared with Nemotron-H, Zamba2, Falcon-H1)
MIXER = {
    "in_proj.weight": "in_proj.weight",
    "in_proj.bias": "in_proj.bias",
    "conv1d.conv.weight": "conv1d.weight",
    "conv1d.conv.bias": "conv1d.bias",
    "A_log": "A_log",
    "dt_bias": "dt_bias",
    "D": "D",
    "norm.weight": "norm.weight",
    "out_proj.weight": "out_proj.weight",
    "out_proj.bias": "out_proj.bias",
}


def detect(cfg: dict[str, Any]) -> bool:
    return cfg.get("model_type") == MODEL_TYPE


def check_time_step_limit(cfg: dict[str, Any]) -> None:
    """Our Mamba-2 does not clamp Δ: only the default limit (0, inf) is accepted."""
    lim = cfg.get("time_step_limit")
    if lim is not None and (len(lim) != 2 or lim[0] > 0 or lim[1] != math.inf):
        raise ConvertError(f"time_step_limit {list(lim)}: our Mamba-2 does not clamp Δ (only (0, inf) is supported)")


def ssm_width(doc: HybText, hidden: int, width: int, prefix: str = "mamba2") -> None:
    """Set the Mamba-2 inner width exactly: ``expand`` when it is a multiple of hidden, else ``inner``."""
    if width % hidden == 0:
        doc.set(f"{prefix}.expand", width // hidden)
    else:
        doc.set(f"{prefix}.inner", width)


def from_config(cfg: dict[str, Any]) -> str:
    """Mamba2Config dict -> .hyb text."""
    doc = HybText("converted from a Hugging Face Mamba-2 config")
    hidden = hf_settings(doc, cfg, "Mamba-2", EPS)
    n = as_int(need(cfg, "num_hidden_layers", "Mamba-2"), "num_hidden_layers")
    width = int(cfg.get("expand", 2) * hidden)
    heads, head_dim = cfg.get("num_heads", 128), cfg.get("head_dim", 64)
    if as_int(heads, "num_heads") * as_int(head_dim, "head_dim") != width:
        raise ConvertError(
            f"num_heads x head_dim = {heads} x {head_dim} must equal int(expand * hidden_size) = {width} "
            "(transformers' Mamba2 mixer needs it too)"
        )
    check_time_step_limit(cfg)
    doc.set("mamba2.state", as_int(cfg.get("state_size", 128), "state_size"))
    ssm_width(doc, hidden, width)
    doc.set("mamba2.head_dim", head_dim)
    doc.set("mamba2.groups", as_int(cfg.get("n_groups", 8), "n_groups"))
    doc.set("mamba2.conv", as_int(cfg.get("conv_kernel", 4), "conv_kernel"))
    doc.set("mamba2.bias", bool(cfg.get("use_bias", False)))
    doc.set("mamba2.conv_bias", bool(cfg.get("use_conv_bias", True)))
    doc.set("mamba2.gate_eps", float(cfg.get(EPS, 1e-5)))
    doc.stack = ["M2"] * n
    return doc.render()


def mamba2_fields(m: dict[str, Any], hidden: int) -> dict[str, int]:
    """Inner width and heads of uniform Mamba-2 options."""
    width = m.get("inner") or m.get("expand", 2) * hidden
    return {"width": width, "heads": width // m.get("head_dim", 64)}


def to_config(graph: Graph) -> dict[str, Any]:
    """A compiled model -> Mamba2Config fields; ConvertError where Mamba-2 cannot say the model."""
    subs = sublayers(graph)
    reject_ties(subs, TARGET)
    for s in subs:
        if s.kind != "mamba2" or s.role != "main":
            raise ConvertError(f"{s.where()}: {TARGET} is Mamba-2 layers only (M2)")
    keys = ("state", "expand", "inner", "head_dim", "groups", "conv", "bias", "conv_bias", "gate_eps")
    m = uniform(subs, keys, TARGET)
    hidden = graph.settings["hidden"]
    cfg = hf_base(graph, MODEL_TYPE, "Mamba2ForCausalLM", EPS)
    if subs and m["gate_eps"] != graph.settings["norm_eps"]:
        raise ConvertError(
            f"{subs[0].where()}: {TARGET} uses layer_norm_epsilon for the block norms and the gated norm; "
            f"the model has norm_eps = {graph.settings['norm_eps']} and gate_eps = {m['gate_eps']}"
        )
    w = mamba2_fields(m, hidden)
    if w["width"] != int(w["width"] / hidden * hidden):  # transformers takes int(expand * hidden_size)
        raise ConvertError(f"the Mamba-2 width {w['width']} cannot be written as int(expand * hidden_size)")
    cfg.update(
        num_hidden_layers=len(subs),
        state_size=m.get("state", 64),
        expand=w["width"] / hidden if w["width"] % hidden else w["width"] // hidden,
        num_heads=w["heads"],
        head_dim=m.get("head_dim", 64),
        n_groups=m.get("groups", 1),
        conv_kernel=m.get("conv", 4),
        use_bias=bool(m.get("bias")),
        use_conv_bias=bool(m.get("conv_bias", True)),
        residual_in_fp32=False,
    )
    return cfg


def weight_rules(cfg: dict[str, Any], model) -> list[Rule]:
    """Checkpoint tensor names of Mamba2ForCausalLM for every tensor of ours."""
    return mamba_backbone(model, MIXER)
