"""Hugging Face Llama-style decoders: Llama (``llama``), Mistral (``mistral``) and Qwen3 (``qwen3``).

Every decoder layer is RMSNorm -> attention (``num_attention_heads``, grouped-query ``num_key_value_heads``,
``head_dim``, RoPE with ``rope_parameters.rope_theta`` (older files: ``rope_theta``), ``attention_bias``) ->
residual, RMSNorm -> gated MLP (``hidden_act`` silu = SwiGLU, ``intermediate_size``, ``mlp_bias``) -> residual.
Mistral adds a ``sliding_window`` on every layer; Qwen3 adds RMSNorm on every q and k head (``q_norm``,
``k_norm``, epsilon ``rms_norm_eps``) and, with ``use_sliding_window``, a window on the layers whose
``layer_types`` entry is ``sliding_attention``. In .hyb: ``A(ffn=false, rope) FFN(act=swiglu, bias=false)`` per
layer. Checkpoint names: ``model.embed_tokens``, ``model.layers.{i}.{input_layernorm, self_attn.*,
post_attention_layernorm, mlp.*}``, ``model.norm``, ``lm_head``.
"""

from __future__ import annotations

from typing import Any

from hybriddsl.interop import rope
from hybriddsl.interop.common import (
    ACT_BACK,
    ConvertError,
    HybText,
    as_int,
    call,
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
from hybriddsl.interop.weights import GATED_UP, Rule, embed_head, final_norm, layer_keys, present, table
from hybriddsl.ir import Graph

# our key under blocks.<attention>. -> HF's under model.layers.{i}.self_attn.
ATTENTION = {
    "q_proj.weight": "q_proj.weight",
    "q_proj.bias": "q_proj.bias",
    "k_proj.weight": "k_proj.weight",
    "k_proj.bias": "k_proj.bias",
    "v_proj.weight": "v_proj.weight",
    "v_proj.bias": "v_proj.bias",
    "out_proj.weight": "o_proj.weight",
    "out_proj.bias": "o_proj.bias",
    "q_norm.weight": "q_norm.weight",
    "k_norm.weight": "k_norm.weight",
}
# our gated FFN under blocks.<ffn>. -> HF's gated MLP under .mlp. (up = [gate_proj; up_proj])
GATED_MLP = {
    "up.weight": (("gate_proj.weight", "up_proj.weight"), GATED_UP),
    "up.bias": (("gate_proj.bias", "up_proj.bias"), GATED_UP),
    "down.weight": "down_proj.weight",
    "down.bias": "down_proj.bias",
}


def rope_options(cfg: dict[str, Any], family: str) -> dict[str, Any]:
    """Attention options for the config's RoPE (theta and scaling: hybriddsl/interop/rope.py); every channel of
    a head turns."""
    rp = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if cfg.get("partial_rotary_factor", 1.0) != 1.0 or rp.get("partial_rotary_factor", 1.0) != 1.0:
        raise ConvertError("partial_rotary_factor: our RoPE rotates every channel of a head")
    return rope.read(cfg, family)


class Variant:
    """One model_type of the Llama family: what it reads and writes beyond Llama's fields."""

    def __init__(self, model_type: str, arch: str, qk_norm: bool, windows: str | None):
        self.MODEL_TYPE, self.arch, self.qk_norm, self.windows = model_type, arch, qk_norm, windows
        self.TARGET = f"Hugging Face {arch.removesuffix('ForCausalLM')}"
        self.IGNORED = ("rotary_emb.inv_freq",)

    def detect(self, cfg: dict[str, Any]) -> bool:
        return cfg.get("model_type") == self.MODEL_TYPE

    def layer_windows(self, cfg: dict[str, Any], n: int) -> list[int | None]:
        """The window of every layer (None: full causal attention)."""
        w = cfg.get("sliding_window")
        if self.windows == "all":  # Mistral: every layer, when set
            return [as_int(w, "sliding_window") if w else None] * n
        if self.windows == "layer_types":  # Qwen3: the layers typed sliding_attention, when enabled
            on = cfg.get("use_sliding_window", False) and w
            types = cfg.get("layer_types")
            if types is None:  # older files: Qwen3Config derives it from max_window_layers
                first = as_int(cfg.get("max_window_layers", 28), "max_window_layers")
                types = ["sliding_attention" if on and i >= first else "full_attention" for i in range(n)]
            if len(types) != n:
                raise ConvertError(f"num_hidden_layers is {n} but layer_types has {len(types)} entries")
            bad = [t for t in types if t not in ("full_attention", "sliding_attention")]
            if bad:
                raise ConvertError(
                    f"layer_types entry {bad[0]!r}: Qwen3 layers are full_attention or sliding_attention"
                )
            return [as_int(w, "sliding_window") if on and t == "sliding_attention" else None for t in types]
        return [None] * n

    def from_config(self, cfg: dict[str, Any]) -> str:
        """The config dict -> .hyb text."""
        name = self.TARGET.removeprefix("Hugging Face ")
        doc = HybText(f"converted from a Hugging Face {name} config")
        hidden = hf_settings(doc, cfg, name)
        n = as_int(need(cfg, "num_hidden_layers", name), "num_hidden_layers")
        heads = as_int(need(cfg, "num_attention_heads", name), "num_attention_heads")
        doc.set("attention.heads", heads)
        doc.set("attention.kv_heads", as_int(cfg.get("num_key_value_heads") or heads, "num_key_value_heads"))
        hd = cfg.get("head_dim")
        if hd and hd != hidden // heads:
            doc.set("attention.head_dim", as_int(hd, "head_dim"))
        doc.set("attention.rope", True)
        for k, v in rope_options(cfg, name).items():
            doc.set(f"attention.{k}", v)
        doc.set("attention.bias", bool(cfg.get("attention_bias", False)))
        if self.qk_norm:
            doc.set("attention.qk_norm", True)
            doc.set("attention.qk_eps", float(cfg.get("rms_norm_eps", 1e-6)))
        doc.set("attention.ffn", False)
        act = ACT_BACK.get(cfg.get("hidden_act", "silu"))
        if act is None:
            raise ConvertError(f"hidden_act {cfg['hidden_act']!r}: our gated MLP is SwiGLU (silu) or GeGLU (gelu)")
        doc.set("ffn.act", act)
        doc.set("ffn.inner", as_int(need(cfg, "intermediate_size", name), "intermediate_size"))
        doc.set("ffn.bias", bool(cfg.get("mlp_bias", False)))
        for w in self.layer_windows(cfg, n):
            doc.stack += [call("A", window=w), "F"]
        return doc.render()

    def to_config(self, graph: Graph) -> dict[str, Any]:
        """A compiled model -> this model_type's config fields; ConvertError where it cannot say the model."""
        target = self.TARGET
        subs = sublayers(graph)
        reject_ties(subs, target)
        layers = pairs(subs, ("attention",), target)
        hidden = graph.settings["hidden"]
        attn = [m for m, _ in layers]
        mlps = [f for _, f in layers]
        keys = ("heads", "kv_heads", "head_dim", "rope", "bias", "qk_norm", "qk_eps", "rope_dim", *rope.KEYS)
        a = uniform(attn, keys, target)
        for f in mlps:
            if f.kind != "ffn":
                raise ConvertError(f"{f.where()}: {target}'s MLP is one gated FFN, not a mixture of experts")
        m = uniform(mlps, ("act", "bias"), target)
        inners = {ffn_inner(f.opts, hidden) for f in mlps}
        if len(inners) > 1:
            raise ConvertError(f"{target} has one intermediate_size for every MLP; the model has {sorted(inners)}")
        if attn and not a["rope"]:
            raise ConvertError(f"{attn[0].where()}: {target}'s attention uses RoPE (write rope=true)")
        if attn and a["rope_dim"] not in (None, a["head_dim"] or hidden // a["heads"]):
            raise ConvertError(f"{attn[0].where()}: {target}'s RoPE turns every channel of a head (no rope_dim)")
        if attn and a["qk_norm"] != self.qk_norm:
            have = "has" if self.qk_norm else "has no"
            raise ConvertError(f"{attn[0].where()}: {target}'s attention {have} q/k norms (qk_norm)")
        if attn and self.qk_norm and a["qk_eps"] != graph.settings["norm_eps"]:
            raise ConvertError(f"{attn[0].where()}: {target} uses rms_norm_eps for q/k norms; set qk_eps = norm_eps")
        windows = [s.opts.get("window") for s in attn]
        cfg = hf_base(graph, self.MODEL_TYPE, self.arch)
        if self.windows is None and any(windows):
            raise ConvertError(
                f"{attn[windows.index(next(w for w in windows if w))].where()}: {target} has no sliding window"
            )
        if self.windows == "all":
            if len(set(windows)) > 1:
                raise ConvertError(f"{target} has one sliding_window for every layer; the model has {windows}")
            cfg["sliding_window"] = windows[0] if windows else None
        if self.windows == "layer_types":
            ws = {w for w in windows if w}
            if len(ws) > 1:
                raise ConvertError(f"{target} has one sliding_window; the model's windows are {sorted(ws)}")
            cfg.update(
                use_sliding_window=bool(ws),
                sliding_window=ws.pop() if ws else None,
                layer_types=["sliding_attention" if w else "full_attention" for w in windows],
                max_window_layers=len(windows),
            )
        heads = a.get("heads") or 4
        cfg.update(
            num_hidden_layers=len(layers),
            num_attention_heads=heads,
            num_key_value_heads=a.get("kv_heads") or heads,
            head_dim=a.get("head_dim") or hidden // heads,
            rope_parameters=rope.write(a),
            attention_bias=bool(a.get("bias")),
            intermediate_size=inners.pop() if inners else 4 * hidden,
            hidden_act=gated_act(mlps[0], target) if mlps else "silu",
        )
        if self.MODEL_TYPE == "llama":
            cfg["mlp_bias"] = bool(m.get("bias"))
        elif m.get("bias"):
            raise ConvertError(f"{mlps[0].where()}: {target}'s MLP has no biases (write bias=false)")
        return cfg

    def weight_rules(self, cfg: dict[str, Any], model) -> list[Rule]:
        """Checkpoint tensor names of the ForCausalLM model for every tensor of ours."""
        rules = embed_head(model, "model.embed_tokens.weight", "lm_head.weight")
        keys = layer_keys(model)
        for i in range(len(keys) // 2):
            a, f = keys[2 * i], keys[2 * i + 1]
            p = f"model.layers.{i}."
            rules.append(Rule(f"blocks.{a.norm}.weight", p + "input_layernorm.weight"))
            rules += table(ATTENTION, f"blocks.{a.mixer}.", p + "self_attn.")
            rules.append(Rule(f"blocks.{f.norm}.weight", p + "post_attention_layernorm.weight"))
            rules += table(GATED_MLP, f"blocks.{f.mixer}.", p + "mlp.")
        rules.append(Rule(f"blocks.{final_norm(model)}.weight", "model.norm.weight"))
        return present(rules, model)


LLAMA = Variant("llama", "LlamaForCausalLM", qk_norm=False, windows=None)
MISTRAL = Variant("mistral", "MistralForCausalLM", qk_norm=False, windows="all")
QWEN3 = Variant("qwen3", "Qwen3ForCausalLM", qk_norm=True, windows="layer_types")
