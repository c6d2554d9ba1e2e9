"""Hugging Face Zamba2 configs (``Zamba2Config``, model_type ``zamba2``; Zyphra 2024).

A backbone of Mamba-2 layers (``mamba_d_state``, ``mamba_d_conv``, ``mamba_expand``, ``mamba_ngroups``,
``n_mamba_heads``). ``layers_block_type[i]`` is ``"mamba"`` (written ``"linear_attention"`` by transformers 5)
or ``"hybrid"``; a hybrid layer first applies a
*shared* transformer block (attention ``num_attention_heads``/``num_key_value_heads`` + gated MLP
``intermediate_size``) and then its Mamba layer. ``hybrid_layer_ids`` lists the hybrid layers; there are
``num_mem_blocks`` shared blocks, used in turn. In .hyb a hybrid layer ``i`` (0-based) is a ``shared`` block
applied after stack layer ``i`` (1-based), i.e. just before Mamba layer ``i``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from hybriddsl.interop.common import (
    ConvertError,
    HybText,
    as_int,
    call,
    ffn_inner,
    gated_act,
    hf_base,
    hf_settings,
    need,
    reject_ties,
    sublayers,
    uniform,
)
from hybriddsl.ir import Graph

MODEL_TYPE = "zamba2"
TARGET = "Hugging Face Zamba2"
LEGACY = {"linear_attention": "mamba"}  # transformers 5 writes the Mamba layers as linear_attention


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
    expand = cfg.get("mamba_expand", 2)
    doc.set("mamba2.state", cfg.get("mamba_d_state"))
    doc.set("mamba2.conv", cfg.get("mamba_d_conv"))
    doc.set("mamba2.expand", expand)
    doc.set("mamba2.groups", cfg.get("mamba_ngroups"))
    bias = bool(cfg.get("add_bias_linear", False))  # Mamba in/out projections and the shared MLP (item 7)
    doc.set("mamba2.bias", bias)
    if cfg.get("n_mamba_heads"):
        doc.set("mamba2.head_dim", expand * hidden // cfg["n_mamba_heads"])
    hybrid = [i for i, t in enumerate(types) if t == "hybrid"]
    if hybrid and hybrid[0] == 0:
        raise ConvertError("layer 0 is hybrid: a shared block before the first layer cannot be written in .hyb")
    doc.stack = ["M2"] * len(types)
    k = as_int(cfg.get("num_mem_blocks", 1), "num_mem_blocks")
    act = {"gelu": "geglu", "silu": "swiglu"}.get(cfg.get("hidden_act", "gelu"), "geglu")
    inner = cfg.get("intermediate_size") or 4 * hidden
    block = (
        call("A", heads=cfg.get("num_attention_heads"), kv_heads=cfg.get("num_key_value_heads"), ffn=False)
        + " "
        + call("FFN", act=act, inner=inner, bias=bias)
    )
    for b in range(k):
        at = hybrid[b::k]
        if at:
            doc.shared.append(f"shared ({block})@{','.join(str(i) for i in at)}")
    doc.notes.append(
        "Zamba2's shared block reads [hidden, embeddings] concatenated and has per-use LoRA adapters; "
        "here it reads the stream"
    )
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
    statements = sorted({s.weights.split("_")[0] for s in subs if s.role == "shared"})
    hybrid, order = [], []
    for pos in sorted(uses):
        blk = uses[pos]
        if pos >= n:
            raise ConvertError(f"{blk[0].where()}: {TARGET} applies shared blocks before a Mamba layer, none follows")
        if [s.kind for s in blk] != ["attention", "ffn"]:
            raise ConvertError(
                f"{blk[0].where()}: {TARGET}'s shared block is attention then an MLP, "
                f"not {' '.join(s.kind for s in blk)}"
            )
        hybrid.append(pos)
        order.append(statements.index(blk[0].weights.split("_")[0]))
    k = len(statements)
    if order != [i % k for i in range(len(order))]:
        raise ConvertError(f"{TARGET} uses its {k} shared blocks in turn; the model applies them as {order}")
    m = uniform(main, ("state", "conv", "expand", "groups", "head_dim", "bias"), TARGET)
    shared = [s for s in subs if s.role == "shared"]
    a = uniform([s for s in shared if s.kind == "attention"], ("heads", "kv_heads"), TARGET)
    ffns = [s for s in shared if s.kind == "ffn"]
    if any(bool(f.opts.get("bias")) != bool(m["bias"]) for f in ffns):
        raise ConvertError(f"{TARGET} has one add_bias_linear for its Mamba projections and shared MLPs")
    acts = {gated_act(f, TARGET) for f in ffns}
    inners = {ffn_inner(f.opts, hidden) for f in ffns}
    if len(acts) > 1 or len(inners) > 1:
        raise ConvertError(f"{TARGET} has one hidden_act and intermediate_size for its shared MLPs")
    cfg = hf_base(graph, MODEL_TYPE, "Zamba2ForCausalLM")
    cfg.update(
        num_hidden_layers=n,
        layers_block_type=["hybrid" if i in hybrid else "mamba" for i in range(n)],
        hybrid_layer_ids=hybrid,
        num_mem_blocks=max(k, 1),
        mamba_d_state=m["state"],
        mamba_d_conv=m["conv"],
        mamba_expand=m["expand"],
        mamba_ngroups=m["groups"],
        n_mamba_heads=m["expand"] * hidden // m["head_dim"],
        # our shared blocks have no LoRA adapters; Zamba2's MLP always builds them, rank 0 builds none
        use_shared_attention_adapter=False,
        adapter_rank=0,
        add_bias_linear=bool(m["bias"]),
    )
    if a:
        cfg.update(
            num_attention_heads=a["heads"],
            num_key_value_heads=a["kv_heads"] or a["heads"],
            intermediate_size=inners.pop(),
            hidden_act=acts.pop(),
        )
    return cfg


def weight_rules(cfg: dict[str, Any], model) -> list:
    """Zamba2 weights cannot be mapped: the converted .hyb has Zamba2's layer layout, not its computation."""
    raise ConvertError(
        f"{TARGET} checkpoints are not supported (config layout only: hybdsl convert config.json --from hf): "
        "its hybrid layer feeds the shared block [hidden, embeddings] concatenated (2 x hidden wide, no residual "
        "inside), adds a per-layer linear of the block's output to the stream only as the next Mamba layer's "
        "norm input, and gives each use of a shared block its own LoRA adapters; the compiler's pre-norm "
        "residual blocks read neither the raw stream nor the embeddings"
    )
