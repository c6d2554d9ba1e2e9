"""Hugging Face Mamba (``MambaConfig``, model_type ``mamba``, ``MambaForCausalLM``; Gu & Dao 2023).

``num_hidden_layers`` pre-norm residual blocks, each an RMSNorm (``layer_norm_epsilon``) and a Mamba-1 mixer
(``state_size``, ``expand``, ``conv_kernel``, ``time_step_rank``, ``use_bias``, ``use_conv_bias``), then a final
RMSNorm and the LM head (tied by default). In .hyb: ``M`` repeated, ``norm = rmsnorm``. Checkpoint names:
``backbone.embeddings``, ``backbone.layers.{i}.norm``, ``backbone.layers.{i}.mixer.*``, ``backbone.norm_f``,
``lm_head``.
"""

from __future__ import annotations

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

MODEL_TYPE = "mamba"
TARGET = "Hugging Face Mamba"
EPS = "layer_norm_epsilon"

# our key under blocks.<mixer>. -> HF's under backbone.layers.{i}.mixer.
MIXER = {
    "in_proj.weight": "in_proj.weight",
    "in_proj.bias": "in_proj.bias",
    "conv1d.conv.weight": "conv1d.weight",
    "conv1d.conv.bias": "conv1d.bias",
    "x_proj.weight": "x_proj.weight",
    "dt_proj.weight": "dt_proj.weight",
    "dt_proj.bias": "dt_proj.bias",
    "A_log": "A_log",
    "D": "D",
    "out_proj.weight": "out_proj.weight",
    "out_proj.bias": "out_proj.bias",
}


def detect(cfg: dict[str, Any]) -> bool:
    return cfg.get("model_type") == MODEL_TYPE


def expand_of(cfg: dict[str, Any], hidden: int, key: str = "expand") -> int:
    """The whole-number expansion HF's ``int(expand * hidden)`` inner width is; ConvertError otherwise."""
    inner = cfg.get("intermediate_size") or int(cfg.get(key, 2) * hidden)
    if inner % hidden:
        raise ConvertError(
            f"{key} {cfg.get(key)!r} gives an SSM width {inner} that is not a multiple of hidden_size {hidden}; "
            "our mamba layer's width is expand * hidden"
        )
    return inner // hidden


def from_config(cfg: dict[str, Any]) -> str:
    """MambaConfig dict -> .hyb text."""
    doc = HybText("converted from a Hugging Face Mamba config")
    hidden = hf_settings(doc, cfg, "Mamba", EPS)
    if "tie_word_embeddings" not in cfg:
        doc.settings = [(k, True if k == "tie_embeddings" else v) for k, v in doc.settings]
    n = as_int(need(cfg, "num_hidden_layers", "Mamba"), "num_hidden_layers")
    doc.set("mamba.state", as_int(cfg.get("state_size", 16), "state_size"))
    doc.set("mamba.expand", expand_of(cfg, hidden))
    doc.set("mamba.conv", as_int(cfg.get("conv_kernel", 4), "conv_kernel"))
    rank = cfg.get("time_step_rank", "auto")
    if rank not in (None, "auto"):
        doc.set("mamba.dt_rank", as_int(rank, "time_step_rank"))
    doc.set("mamba.bias", bool(cfg.get("use_bias", False)))
    doc.set("mamba.conv_bias", bool(cfg.get("use_conv_bias", True)))
    act = cfg.get("hidden_act", "silu")
    if act not in ("silu", "swish"):
        raise ConvertError(f"hidden_act {act!r}: our Mamba gates with SiLU")
    doc.stack = ["M"] * n
    return doc.render()


def to_config(graph: Graph) -> dict[str, Any]:
    """A compiled model -> MambaConfig fields; ConvertError where Mamba cannot say the model."""
    subs = sublayers(graph)
    reject_ties(subs, TARGET)
    for s in subs:
        if s.kind != "mamba" or s.role != "main":
            raise ConvertError(f"{s.where()}: {TARGET} is Mamba-1 layers only (M)")
    m = uniform(subs, ("state", "expand", "conv", "dt_rank", "bias", "conv_bias", "bc_norm"), TARGET)
    if m.get("bc_norm"):
        raise ConvertError(f"{subs[0].where()}: {TARGET} has no dt/B/C norms (bc_norm is Jamba's)")
    hidden = graph.settings["hidden"]
    cfg = hf_base(graph, MODEL_TYPE, "MambaForCausalLM", EPS)
    cfg.update(
        num_hidden_layers=len(subs),
        state_size=m.get("state", 16),
        expand=m.get("expand", 2),
        intermediate_size=m.get("expand", 2) * hidden,
        conv_kernel=m.get("conv", 4),
        time_step_rank=m.get("dt_rank") or -(-hidden // 16),
        use_bias=bool(m.get("bias")),
        use_conv_bias=bool(m.get("conv_bias", True)),
        hidden_act="silu",
        residual_in_fp32=False,
    )
    return cfg


def weight_rules(cfg: dict[str, Any], model) -> list[Rule]:
    """Checkpoint tensor names of MambaForCausalLM for every tensor of ours."""
    return mamba_backbone(model, MIXER)
