"""Hugging Face Zamba2 (``Zamba2Config``, model_type ``zamba2``; Zyphra 2024): configs and weights.

A backbone of Mamba-2 layers (``mamba_d_state``, ``mamba_d_conv``, ``mamba_expand``, ``mamba_ngroups``,
``n_mamba_heads``; the gated norm after the gate with epsilon 1e-5, Δ clamped below at ``time_step_min``, a conv
bias always). ``layers_block_type[i]`` is ``"mamba"`` (written ``"linear_attention"`` by transformers 5) or
``"hybrid"``. A hybrid layer ``i`` first runs one of ``num_mem_blocks`` shared transformer blocks (used in turn)
on ``[stream, embeddings]`` with its own LoRA adapters (``adapter_rank``; on q/k/v too with
``use_shared_attention_adapter``) and its own linear, and adds the result to its Mamba layer's norm input only.
In .hyb that is the ``zamba_shared`` kind (``Z``) in a ``shared`` statement per memory block:
``shared Z(...)@i,...`` applies it after stack layer ``i`` (1-based), i.e. just before Mamba layer ``i``
(0-based); see hybriddsl/layers/zamba_shared.py for the computation.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from hybriddsl.interop import rope
from hybriddsl.interop.common import (
    ConvertError,
    HybText,
    as_float,
    as_int,
    call,
    hf_base,
    hf_settings,
    need,
    reject_ties,
    sublayers,
    uniform,
)
from hybriddsl.interop.mamba2 import MIXER
from hybriddsl.ir import Graph

MODEL_TYPE = "zamba2"
TARGET = "Hugging Face Zamba2"
LEGACY = {"linear_attention": "mamba"}  # transformers 5 writes the Mamba layers as linear_attention
IGNORED = ("rotary_emb.inv_freq",)
ACTS = {"gelu": "geglu", "silu": "swiglu"}
GATE_EPS = 1e-5  # Zamba2RMSNormGated in the Mamba mixer: a fixed epsilon


def detect(cfg: dict[str, Any]) -> bool:
    return cfg.get("model_type") == MODEL_TYPE or (
        ("hybrid_layer_ids" in cfg or "layers_block_type" in cfg) and "n_mamba_heads" in cfg
    )


def layer_types(cfg: dict[str, Any]) -> list[str]:
    """``layers_block_type``, or one built from ``hybrid_layer_ids`` and ``num_hidden_layers``."""
    n = as_int(need(cfg, "num_hidden_layers", "Zamba2"), "num_hidden_layers")
    types = cfg.get("layers_block_type")
    if types is None:
        ids = set(need(cfg, "hybrid_layer_ids", "Zamba2"))
        types = ["hybrid" if i in ids else "mamba" for i in range(n)]
    if len(types) != n:
        raise ConvertError(f"num_hidden_layers is {n} but layers_block_type has {len(types)} entries")
    types = [LEGACY.get(t, t) for t in types]
    bad = [t for t in types if t not in ("mamba", "hybrid")]
    if bad:
        raise ConvertError(f"layer type {bad[0]!r}: Zamba2 layers are mamba (linear_attention) or hybrid")
    return types


def from_config(cfg: dict[str, Any]) -> str:
    """Zamba2Config dict -> .hyb text."""
    doc = HybText("converted from a Hugging Face Zamba2 config")
    hidden = hf_settings(doc, cfg, "Zamba2")
    types = layer_types(cfg)
    expand = as_int(cfg.get("mamba_expand", 2), "mamba_expand")
    heads = as_int(cfg.get("n_mamba_heads", 8), "n_mamba_heads")
    if (expand * hidden) % heads:
        raise ConvertError(f"n_mamba_heads ({heads}) must divide mamba_expand x hidden_size ({expand * hidden})")
    doc.set("mamba2.state", as_int(cfg.get("mamba_d_state", 64), "mamba_d_state"))
    doc.set("mamba2.conv", as_int(cfg.get("mamba_d_conv", 4), "mamba_d_conv"))
    doc.set("mamba2.expand", expand)
    doc.set("mamba2.groups", as_int(cfg.get("mamba_ngroups", 1), "mamba_ngroups"))
    doc.set("mamba2.head_dim", expand * hidden // heads)
    bias = bool(cfg.get("add_bias_linear", False))  # Mamba in/out projections and the shared MLP (item 7)
    doc.set("mamba2.bias", bias)
    doc.set("mamba2.conv_bias", True)  # Zamba2's conv always has a bias (use_conv_bias is not read by its code)
    doc.set("mamba2.gate_eps", GATE_EPS)
    doc.set("mamba2.dt_min", as_float(cfg.get("time_step_min", 0.001), "time_step_min"))
    hybrid = [i for i, t in enumerate(types) if t == "hybrid"]
    if hybrid and hybrid[0] == 0:
        raise ConvertError("layer 0 is hybrid: a shared block before the first layer cannot be written in .hyb")
    doc.stack = ["M2"] * len(types)
    k = as_int(cfg.get("num_mem_blocks", 1), "num_mem_blocks")
    act = ACTS.get(cfg.get("hidden_act", "gelu"))
    if act is None:
        raise ConvertError(f"hidden_act {cfg['hidden_act']!r}: Zamba2's shared MLP here is gelu or silu gated")
    attn_heads = as_int(cfg.get("num_attention_heads", 32), "num_attention_heads")
    kv = as_int(cfg.get("num_key_value_heads") or attn_heads, "num_key_value_heads")
    attn_adapter = bool(cfg.get("use_shared_attention_adapter", False))
    if attn_adapter and kv != attn_heads:
        raise ConvertError("use_shared_attention_adapter with num_key_value_heads != num_attention_heads")
    use_rope = bool(cfg.get("use_mem_rope", False))
    theta = None
    if use_rope:
        if rope.rope_type(cfg) != "default":
            raise ConvertError(
                f"rope_parameters.rope_type {rope.rope_type(cfg)!r} is not supported for Zamba2 (only default)"
            )
        theta = rope.read(cfg, "Zamba2")["rope_theta"]
    block = call(
        "Z",
        heads=attn_heads,
        kv_heads=kv,
        inner=as_int(cfg.get("intermediate_size") or 4 * hidden, "intermediate_size"),
        act=act,
        bias=bias,
        rank=as_int(cfg.get("adapter_rank", 128), "adapter_rank"),
        attn_adapter=attn_adapter,
        rope=use_rope,
        rope_theta=theta,
        eps=as_float(cfg.get("rms_norm_eps", 1e-5), "rms_norm_eps"),
    )
    if not cfg.get("tie_word_embeddings", True) and len(hybrid) > k:
        raise ConvertError(
            "tie_word_embeddings = false with fewer num_mem_blocks than hybrid layers: transformers then does not "
            "tie the shared blocks (each hybrid layer gets its own copy, with adapter slots it never uses); not "
            "supported"
        )
    for b in range(k):
        at = hybrid[b::k]
        if at:
            doc.shared.append(f"shared {block}@{','.join(str(i) for i in at)}")
    return doc.render()


def to_config(graph: Graph) -> dict[str, Any]:
    """A compiled model -> Zamba2Config fields; ConvertError where Zamba2 cannot say the model."""
    subs = sublayers(graph)
    reject_ties(subs, TARGET)
    hidden = graph.settings["hidden"]
    main = [s for s in subs if s.role != "shared"]
    for s in main:
        if s.kind != "mamba2":
            raise ConvertError(f"{s.where()}: {TARGET}'s backbone is Mamba-2 layers only (M2), not '{s.kind}'")
    n = len(main)
    uses: dict[int, list] = defaultdict(list)  # stack position -> shared sublayers applied after it
    for s in subs:
        if s.role == "shared":
            uses[s.pos].append(s)
    statements = sorted({s.weights for s in subs if s.role == "shared"})
    hybrid, order = [], []
    for pos in sorted(uses):
        blk = uses[pos]
        if pos >= n:
            raise ConvertError(f"{blk[0].where()}: {TARGET} applies shared blocks before a Mamba layer, none follows")
        if [s.kind for s in blk] != ["zamba_shared"]:
            raise ConvertError(
                f"{blk[0].where()}: {TARGET}'s hybrid layer is one Zamba2 shared block (shared Z(...)@...), "
                f"not {' '.join(s.kind for s in blk)}"
            )
        hybrid.append(pos)
        order.append(statements.index(blk[0].weights))
    k = len(statements)
    if order != [i % k for i in range(len(order))]:
        raise ConvertError(f"{TARGET} uses its {k} shared blocks in turn; the model applies them as {order}")
    m = uniform(main, ("state", "conv", "expand", "groups", "head_dim", "bias", "conv_bias", "gate_eps"), TARGET)
    m.update(uniform(main, ("out_norm", "dt_min", "dt_max", "inner"), TARGET))
    if main and (
        not m["conv_bias"]
        or m["gate_eps"] != GATE_EPS
        or m["out_norm"] != "gated"
        or m["dt_max"] is not None
        or m["inner"] is not None
    ):
        raise ConvertError(
            f"{main[0].where()}: {TARGET}'s Mamba-2 has a conv bias, the gated norm with epsilon 1e-5 "
            "(out_norm = gated, gate_eps = 1e-5), no upper Δ clamp and width expand x hidden"
        )
    if main and m["head_dim"] and (m["expand"] * hidden) % m["head_dim"]:
        raise ConvertError(f"{main[0].where()}: head_dim must divide expand x hidden")
    shared = [s for s in subs if s.role == "shared"]
    keys = ("heads", "kv_heads", "inner", "act", "bias", "rank", "attn_adapter", "rope", "rope_theta", "eps")
    z = uniform(shared, keys, TARGET)
    if z and bool(z["bias"]) != bool(m.get("bias")):
        raise ConvertError(f"{TARGET} has one add_bias_linear for its Mamba projections and shared MLPs")
    if z and z["eps"] != graph.settings["norm_eps"]:
        raise ConvertError(f"{shared[0].where()}: {TARGET}'s shared-block norms use rms_norm_eps (eps = norm_eps)")
    if z and z["attn_adapter"] and (z["kv_heads"] or z["heads"]) != z["heads"]:
        raise ConvertError(f"{shared[0].where()}: {TARGET}'s q/k/v adapters need kv_heads = heads")
    if graph.settings["embed_scale"] != 1.0 or graph.settings["logit_scale"] != 1.0:
        raise ConvertError(f"{TARGET} does not scale embeddings or logits")
    if graph.settings["vocab"] and not graph.settings["tie_embeddings"] and len(hybrid) > k:
        raise ConvertError(
            f"{TARGET} ties a shared block's uses only with tie_word_embeddings = true: write tie_embeddings = true, "
            "or one shared Z statement per use"
        )
    cfg = hf_base(graph, MODEL_TYPE, "Zamba2ForCausalLM")
    cfg.update(
        num_hidden_layers=n,
        layers_block_type=["hybrid" if i in hybrid else "mamba" for i in range(n)],
        num_mem_blocks=max(k, 1),
        mamba_d_state=m.get("state", 64),
        mamba_d_conv=m.get("conv", 4),
        mamba_expand=m.get("expand", 2),
        mamba_ngroups=m.get("groups", 1),
        n_mamba_heads=m["expand"] * hidden // m["head_dim"] if main else 8,
        time_step_min=m.get("dt_min") or 0.0,
        add_bias_linear=bool(m.get("bias")),
        use_conv_bias=True,
        use_shared_attention_adapter=bool(z.get("attn_adapter")),
        adapter_rank=z.get("rank", 0) if z else 0,  # rank 0: transformers' MLP adapters are empty
    )
    if z:
        inv = {v: k for k, v in ACTS.items()}
        cfg.update(
            num_attention_heads=z["heads"],
            num_key_value_heads=z["kv_heads"] or z["heads"],
            intermediate_size=z["inner"] or 4 * hidden,
            hidden_act=inv[z["act"]],
            use_mem_rope=bool(z["rope"]),
            rope_parameters={"rope_type": "default", "rope_theta": float(z["rope_theta"] or 10000.0)},
        )
    return cfg


# ---------------------------------------------------------------------------------------------------- weights
CORE = {  # our zamba_shared core -> Zamba2AttentionDecoderLayer (under ...shared_transformer.)
    "in_norm.weight": "input_layernorm.weight",
    "q_proj.weight": "self_attn.q_proj.weight",
    "k_proj.weight": "self_attn.k_proj.weight",
    "v_proj.weight": "self_attn.v_proj.weight",
    "o_proj.weight": "self_attn.o_proj.weight",
    "ff_norm.weight": "pre_ff_layernorm.weight",
    "gate_up.weight": "feed_forward.gate_up_proj.weight",
    "gate_up.bias": "feed_forward.gate_up_proj.bias",
    "down.weight": "feed_forward.down_proj.weight",
    "down.bias": "feed_forward.down_proj.bias",
}


def weight_rules(cfg: dict[str, Any], model) -> list:
    """Checkpoint tensor names of Zamba2ForCausalLM for every tensor of ours. A shared block's core lives under
    the first hybrid layer that uses it (transformers ties the later ones to it and saves it once); use ``j``'s
    adapters (``j``: the hybrid layer's index among all hybrid layers) sit in that block's adapter lists at
    slot ``j``; its linear under its own layer."""
    from hybriddsl.interop.weights import Rule, embed_head, final_norm, layer_keys, present, table

    graph = model.graph
    rules = embed_head(model, "model.embed_tokens.weight", "lm_head.weight")
    mambas = [lk for lk in layer_keys(model) if lk.kind == "mamba2"]
    uses = sorted(
        (graph[n]["layer"], graph[n]["weights"]) for n in graph.mixers() if graph[n]["kind"] == "zamba_shared"
    )
    hybrid = {pos: (j, key) for j, (pos, key) in enumerate(uses)}
    for i, lk in enumerate(mambas):
        p = f"model.layers.{i}." + ("mamba_decoder." if i in hybrid else "")
        rules.append(Rule(f"blocks.{lk.norm}.weight", p + "input_layernorm.weight"))
        rules += table(MIXER, f"blocks.{lk.mixer}.", p + "mamba.")  # Zamba2MambaMixer: Mamba-2's names
    first: dict[str, int] = {}
    count: dict[str, int] = defaultdict(int)
    for pos, (j, key) in sorted(hybrid.items()):
        st = f"model.layers.{first.setdefault(key, pos)}.shared_transformer."
        if first[key] == pos:
            rules += table(CORE, f"blocks.{key}.", st)
        u = count[key]
        count[key] += 1
        o = f"blocks.{key}.uses.{u}."
        rules.append(Rule(o + "linear.weight", f"model.layers.{pos}.linear.weight"))
        for x in (0, 1):
            rules.append(Rule(f"{o}gate_up.{x}.weight", f"{st}feed_forward.gate_up_proj_adapter_list.{j}.{x}.weight"))
            for n in "qkv":
                rules.append(Rule(f"{o}{n}.{x}.weight", f"{st}self_attn.linear_{n}_adapter_list.{j}.{x}.weight"))
    rules.append(Rule(f"blocks.{final_norm(model)}.weight", "model.final_layernorm.weight"))
    return present(rules, model)
