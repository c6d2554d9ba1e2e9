"""Hugging Face Falcon-H1 (``FalconH1Config``, model_type ``falcon_h1``; TII 2025).

Every decoder layer runs attention (``num_attention_heads``, ``num_key_value_heads``, ``head_dim``, RoPE) and a
Mamba-2 mixer (``mamba_d_ssm`` wide, exactly: ``mamba_n_heads`` x ``mamba_d_head``, ``mamba_d_state``,
``mamba_d_conv``, ``mamba_n_groups``, the gated RMSNorm only with ``mamba_rms_norm``) side by side on the same
normed input and adds their outputs, then a SwiGLU MLP of ``intermediate_size``. In .hyb:
``[A | M2](mix=sum) FFN(act=swiglu)`` per layer.

Falcon-H1's µP multipliers are constants in front of or after linear maps, so they are folded into the weights
on import: ``attention_in_multiplier`` into q/k/v, ``key_multiplier`` into k, ``attention_out_multiplier`` into
the attention output, ``ssm_in_multiplier`` and the five ``ssm_multipliers`` (z, x, B, C, dt) into the Mamba-2
input projection's rows, ``ssm_out_multiplier`` into its output projection, ``mlp_multipliers`` into the gate
and down projections. ``embedding_multiplier`` and ``lm_head_multiplier`` become the settings ``embed_scale``
and ``logit_scale`` (the embedding may be tied to the head). Export writes every folded multiplier as 1.0.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from hybriddsl.interop import rope
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
IGNORED = ("rotary_emb.inv_freq", "mup_vector")
# µP multipliers folded into weights on import (written as 1.0 on export)
FOLDED = ("attention_in_multiplier", "key_multiplier", "attention_out_multiplier", "ssm_in_multiplier")
FOLDED += ("ssm_out_multiplier",)


def detect(cfg: dict[str, Any]) -> bool:
    return cfg.get("model_type") == MODEL_TYPE or "mamba_d_ssm" in cfg


def _float(v: Any, what: str) -> float:
    """A number of a config; transformers writes infinity as ``{"__float__": "Infinity"}``."""
    if isinstance(v, dict) and "__float__" in v:
        v = float(v["__float__"])
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConvertError(f"{what} must be a number, got {v!r}")
    return float(v)


def _rope_theta(cfg: dict[str, Any]) -> float:
    rp = cfg.get("rope_parameters") or {}
    if rope.rope_type(cfg) != "default":
        raise ConvertError(
            f"rope_parameters.rope_type {rope.rope_type(cfg)!r} is not supported for Falcon-H1 (only default)"
        )
    if rp.get("partial_rotary_factor", 1.0) != 1.0:
        raise ConvertError("partial_rotary_factor: Falcon-H1 rotates every channel of a head")
    return _float(rp.get("rope_theta", cfg.get("rope_theta", 10000.0)), "rope_theta")


def ssm_width(cfg: dict[str, Any], hidden: int) -> tuple[int, int, int]:
    """(inner width, heads, head_dim) of the Mamba-2 mixer, exactly as transformers builds it."""
    d_ssm = cfg.get("mamba_d_ssm")
    inner = as_int(d_ssm, "mamba_d_ssm") if d_ssm is not None else int(cfg.get("mamba_expand", 2) * hidden)
    heads = as_int(need(cfg, "mamba_n_heads", "Falcon-H1"), "mamba_n_heads")
    d_head = cfg.get("mamba_d_head", "auto")
    d_head = inner // heads if d_head in (None, "auto") else as_int(d_head, "mamba_d_head")
    if d_head * heads != inner:
        raise ConvertError(f"mamba_n_heads ({heads}) x mamba_d_head ({d_head}) must equal the SSM width ({inner})")
    return inner, heads, d_head


def from_config(cfg: dict[str, Any]) -> str:
    """FalconH1Config dict -> .hyb text."""
    doc = HybText("converted from a Hugging Face Falcon-H1 config")
    hidden = hf_settings(doc, cfg, "Falcon-H1")
    n = as_int(need(cfg, "num_hidden_layers", "Falcon-H1"), "num_hidden_layers")
    heads = as_int(need(cfg, "num_attention_heads", "Falcon-H1"), "num_attention_heads")
    lim = cfg.get("time_step_limit")
    if lim is not None and [_float(v, "time_step_limit") for v in lim] != [0.0, math.inf]:
        raise ConvertError(f"time_step_limit {lim!r}: clamping Δ is not supported (only (0, inf))")
    if bool(cfg.get("mamba_proj_bias", False)) != bool(cfg.get("projectors_bias", False)):
        raise ConvertError("mamba_proj_bias and projectors_bias differ: our Mamba-2 has one bias flag for both")
    if cfg.get("hidden_act", "silu") not in ("silu", "swish"):
        raise ConvertError(f"hidden_act {cfg['hidden_act']!r}: Falcon-H1 here is SwiGLU and SiLU-activated Mamba-2")
    if cfg.get("vocab_size"):
        doc.set("embed_scale", _float(cfg.get("embedding_multiplier", 1.0), "embedding_multiplier"))
        doc.set("logit_scale", _float(cfg.get("lm_head_multiplier", 1.0), "lm_head_multiplier"))
    doc.set("attention.heads", heads)
    doc.set("attention.kv_heads", as_int(cfg.get("num_key_value_heads") or heads, "num_key_value_heads"))
    hd = cfg.get("head_dim")
    if hd and hd != hidden // heads:
        doc.set("attention.head_dim", as_int(hd, "head_dim"))
    doc.set("attention.rope", True)
    doc.set("attention.rope_theta", _rope_theta(cfg))
    doc.set("attention.bias", bool(cfg.get("attention_bias", False)))
    doc.set("attention.ffn", False)
    inner, _, d_head = ssm_width(cfg, hidden)
    doc.set("mamba2.inner", inner)  # exact: no rounding to a multiple of hidden
    doc.set("mamba2.head_dim", d_head)
    doc.set("mamba2.state", as_int(cfg.get("mamba_d_state", 256), "mamba_d_state"))
    doc.set("mamba2.conv", as_int(cfg.get("mamba_d_conv", 4), "mamba_d_conv"))
    doc.set("mamba2.groups", as_int(cfg.get("mamba_n_groups", 1), "mamba_n_groups"))
    doc.set("mamba2.bias", bool(cfg.get("mamba_proj_bias", False)))
    doc.set("mamba2.conv_bias", bool(cfg.get("mamba_conv_bias", True)))
    if cfg.get("mamba_rms_norm", False):
        doc.set("mamba2.out_norm", "before_gate" if cfg.get("mamba_norm_before_gate", True) else "gated")
        doc.set("mamba2.gate_eps", float(cfg.get("rms_norm_eps", 1e-5)))
    else:
        doc.set("mamba2.out_norm", "off")
    doc.set("ffn.act", "swiglu")
    doc.set("ffn.inner", as_int(need(cfg, "intermediate_size", "Falcon-H1"), "intermediate_size"))
    doc.set("ffn.bias", bool(cfg.get("mlp_bias", False)))
    if any(_float(cfg.get(k, 1.0), k) != 1.0 for k in FOLDED) or cfg.get("ssm_multipliers", [1.0] * 5) != [1.0] * 5:
        doc.notes.append("the checkpoint's muP multipliers are folded into the weights")
    doc.stack = ["[A | M2](mix=sum)", "F"] * n
    return doc.render()


def _branches(s: Sub) -> list[Sub]:
    """The (attention, mamba2) branches of a Falcon-H1 parallel block, or a ConvertError."""
    br = s.opts.get("branches", [])
    if s.kind != "parallel" or len(br) != 2 or any(len(b) != 1 for b in br):
        raise ConvertError(f"{s.where()}: every {TARGET} layer is [A | M2] (one attention, one Mamba-2 branch)")
    out = [Sub(b[0]["kind"], b[0]["opts"], s.pos, s.role, s.weights) for b in br]
    if [b.kind for b in out] != ["attention", "mamba2"]:
        raise ConvertError(
            f"{s.where()}: {TARGET}'s parallel block is [A | M2] (attention first), not "
            + " | ".join(b.kind for b in out)
        )
    if s.opts.get("mix") != "sum":
        raise ConvertError(f"{s.where()}: {TARGET} adds the branches (mix=sum), not mix={s.opts.get('mix')}")
    return out


def to_config(graph: Graph) -> dict[str, Any]:
    """A compiled model -> FalconH1Config fields; ConvertError where Falcon-H1 cannot say the model."""
    subs = sublayers(graph)
    reject_ties(subs, TARGET)
    layers = pairs(subs, ("parallel",), TARGET)
    s = graph.settings
    hidden = s["hidden"]
    branches = [b for m, _ in layers for b in _branches(m)]
    attn = [b for b in branches if b.kind == "attention"]
    mam = [b for b in branches if b.kind == "mamba2"]
    a = uniform(attn, ("heads", "kv_heads", "head_dim", "rope", "rope_theta", "bias", "window"), TARGET)
    if attn and not rope.is_plain(attn[0].opts):
        raise ConvertError(f"{attn[0].where()}: {TARGET}'s RoPE here is the plain one (no rope_scaling)")
    keys = ("state", "conv", "expand", "inner", "groups", "head_dim", "bias", "conv_bias", "out_norm", "gate_eps")
    m = uniform(mam, keys, TARGET)
    for b in attn:
        bad = [o for o in ("qk_norm", "out_gate", "window") if b.opts.get(o)]
        if bad or not b.opts.get("rope") or b.opts.get("rope_dim") or b.opts.get("out_bias") is not None:
            raise ConvertError(f"{b.where()}: {TARGET}'s attention is plain GQA with full RoPE (no {', '.join(bad)})")
    if m and m["out_norm"] != "off" and m["gate_eps"] != s["norm_eps"]:
        raise ConvertError(f"{mam[0].where()}: {TARGET}'s Mamba-2 norm uses rms_norm_eps; set gate_eps = norm_eps")
    for _, f in layers:
        if f.kind != "ffn" or gated_act(f, TARGET) != "silu":
            raise ConvertError(f"{f.where()}: {TARGET}'s MLP is SwiGLU (FFN(act=swiglu))")
    mlp = uniform([f for _, f in layers], ("bias",), TARGET)
    inners = {ffn_inner(f.opts, hidden) for _, f in layers}
    if len(inners) > 1:
        raise ConvertError(f"{TARGET} has one intermediate_size for every MLP; the model has {sorted(inners)}")
    if s["logit_softcap"] is not None:
        raise ConvertError(f"{TARGET} does not soft-cap its logits (logit_softcap is set)")
    cfg = hf_base(graph, MODEL_TYPE, "FalconH1ForCausalLM")
    inner = m["inner"] or m["expand"] * hidden
    heads = a["heads"]
    cfg.update(
        num_hidden_layers=len(layers),
        intermediate_size=inners.pop(),
        mlp_bias=bool(mlp["bias"]),
        num_attention_heads=heads,
        num_key_value_heads=a["kv_heads"] or heads,
        head_dim=a["head_dim"] or hidden // heads,
        attention_bias=bool(a["bias"]),
        rope_parameters={"rope_type": "default", "rope_theta": float(a["rope_theta"] or 10000.0)},
        mamba_d_state=m["state"],
        mamba_d_conv=m["conv"],
        mamba_expand=m["expand"],
        mamba_n_groups=m["groups"],
        mamba_d_ssm=inner,
        mamba_n_heads=inner // m["head_dim"],
        mamba_d_head=m["head_dim"],
        mamba_proj_bias=bool(m["bias"]),
        projectors_bias=bool(m["bias"]),
        mamba_conv_bias=bool(m["conv_bias"]),
        mamba_rms_norm=m["out_norm"] != "off",
        mamba_norm_before_gate=m["out_norm"] == "before_gate",
        embedding_multiplier=float(s["embed_scale"]),
        lm_head_multiplier=float(s["logit_scale"]),
        mlp_multipliers=[1.0, 1.0],
        ssm_multipliers=[1.0] * 5,
        **{k: 1.0 for k in FOLDED},
    )
    return cfg


# ---------------------------------------------------------------------------------------------------- weights
def _f32(x: float) -> float:
    """x rounded to float32."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def _scale_rows(sizes: list[int], factors: list[float]):
    """A Transform multiplying consecutive row blocks (``sizes``) of a weight or bias by ``factors``."""
    import torch

    from hybriddsl.interop.weights import SAME, Transform

    if all(f == 1.0 for f in factors):
        return SAME

    def vec(t: torch.Tensor) -> torch.Tensor:
        v = torch.cat([torch.full((n,), f, dtype=torch.float64, device=t.device) for n, f in zip(sizes, factors)])
        return v.to(t.dtype).reshape(-1, *([1] * (t.dim() - 1)))

    # in float64, rounded once to the model's dtype by the loader
    return Transform(
        f"rows*{factors}",
        lambda t: t.double() * vec(t.double()),
        lambda t: ((t.double() / vec(t.double())).to(t.dtype),),
    )


def weight_rules(cfg: dict[str, Any], model) -> list:
    """Checkpoint tensor names of FalconH1ForCausalLM for every tensor of ours, multipliers folded."""
    from hybriddsl.interop.weights import GATED_UP, SAME, Rule, Transform, embed_head, final_norm, layer_keys, present

    hidden = cfg["hidden_size"]
    f = {k: _float(cfg.get(k, 1.0), k) for k in FOLDED}
    inner, heads, _ = ssm_width(cfg, hidden)
    gn = as_int(cfg.get("mamba_n_groups", 1), "mamba_n_groups") * as_int(cfg.get("mamba_d_state", 256), "mamba_d_state")
    # transformers keeps ssm_multipliers in a float32 buffer (mup_vector): its model multiplies by those roundings
    mup = [_f32(float(x)) for x in cfg.get("ssm_multipliers") or [1.0] * 5]
    gate_m, down_m = (float(x) for x in cfg.get("mlp_multipliers") or [1.0, 1.0])
    in_sizes = [inner, inner, gn, gn, heads]

    def const(c: float):
        if c == 1.0:
            return SAME
        return Transform(f"*{c}", lambda t: t.double() * c, lambda t: ((t.double() / c).to(t.dtype),))

    ai, ko, ao = f["attention_in_multiplier"], f["key_multiplier"], f["attention_out_multiplier"]
    rules = embed_head(model, "model.embed_tokens.weight", "lm_head.weight")
    keys = layer_keys(model)
    for i in range(len(keys) // 2):
        par, mlp = keys[2 * i], keys[2 * i + 1]
        p = f"model.layers.{i}."
        at, ma = f"blocks.{par.mixer}.branches.0.0.", f"blocks.{par.mixer}.branches.1.0."
        rules.append(Rule(f"blocks.{par.norm}.weight", p + "input_layernorm.weight"))
        sa = p + "self_attn."
        rules += [
            Rule(at + "q_proj.weight", sa + "q_proj.weight", const(ai)),
            Rule(at + "k_proj.weight", sa + "k_proj.weight", const(ai * ko)),
            Rule(at + "v_proj.weight", sa + "v_proj.weight", const(ai)),
            Rule(at + "out_proj.weight", sa + "o_proj.weight", const(ao)),
            Rule(at + "q_proj.bias", sa + "q_proj.bias"),
            Rule(at + "k_proj.bias", sa + "k_proj.bias", const(ko)),
            Rule(at + "v_proj.bias", sa + "v_proj.bias"),
            Rule(at + "out_proj.bias", sa + "o_proj.bias", const(ao)),
        ]
        mm = p + "mamba."
        si, so = f["ssm_in_multiplier"], f["ssm_out_multiplier"]
        rules += [
            Rule(ma + "in_proj.weight", mm + "in_proj.weight", _scale_rows(in_sizes, [x * si for x in mup])),
            Rule(ma + "in_proj.bias", mm + "in_proj.bias", _scale_rows(in_sizes, mup)),
            Rule(ma + "conv1d.conv.weight", mm + "conv1d.weight"),
            Rule(ma + "conv1d.conv.bias", mm + "conv1d.bias"),
            Rule(ma + "A_log", mm + "A_log"),
            Rule(ma + "dt_bias", mm + "dt_bias"),
            Rule(ma + "D", mm + "D"),
            Rule(ma + "norm.weight", mm + "norm.weight"),
            Rule(ma + "out_proj.weight", mm + "out_proj.weight", const(so)),
            Rule(ma + "out_proj.bias", mm + "out_proj.bias", const(so)),
        ]
        rules.append(Rule(f"blocks.{mlp.norm}.weight", p + "pre_ff_layernorm.weight"))
        ff, fm = f"blocks.{mlp.mixer}.", p + "feed_forward."
        n = as_int(cfg["intermediate_size"], "intermediate_size")
        up = GATED_UP if gate_m == 1.0 else _gated_up_scaled(gate_m, n)
        rules += [
            Rule(ff + "up.weight", (fm + "gate_proj.weight", fm + "up_proj.weight"), up),
            Rule(ff + "up.bias", (fm + "gate_proj.bias", fm + "up_proj.bias"), up),
            Rule(ff + "down.weight", fm + "down_proj.weight", const(down_m)),
            Rule(ff + "down.bias", fm + "down_proj.bias", const(down_m)),
        ]
    rules.append(Rule(f"blocks.{final_norm(model)}.weight", "model.final_layernorm.weight"))
    return present(rules, model)


def _gated_up_scaled(c: float, n: int):
    """Our SwiGLU ``up`` = [gate_proj * c; up_proj] (Falcon-H1 multiplies the gate's pre-activation by c)."""
    import torch

    from hybriddsl.interop.weights import Transform

    return Transform(
        f"gated_up*{c}",
        lambda g, u: torch.cat([g.double() * c, u.double()], 0),
        lambda t: ((t[:n].double() / c).to(t.dtype), t[n:]),
    )
