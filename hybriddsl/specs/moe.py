"""The moe kind for the registry: options, cross-option checks, FLOP formula (no torch here).

The module itself is in :mod:`hybriddsl.layers.moe`, imported only when a layer is built."""

from __future__ import annotations

from typing import Any

from hybriddsl.layer_spec import LayerSpec, Option
from hybriddsl.specs.ffn import ACTS, GATED
from hybriddsl.specs.refs import module_ref


def validate(opts: dict[str, Any], hidden: int) -> str | None:
    """top_k within the experts; capacity-based dropping is not offered."""
    e, k = opts["experts"], opts["top_k"]
    if k > e:
        return f"top_k ({k}) must be <= experts ({e})"
    g, tg = opts["groups"], opts["topk_groups"]
    if e % g:
        return f"groups ({g}) must divide experts ({e})"
    if tg > g:
        return f"topk_groups ({tg}) must be <= groups ({g})"
    if k > tg * (e // g):
        return f"top_k ({k}) must be <= the experts of the topk_groups best groups ({tg} x {e // g})"
    if opts["capacity"] is not None:
        return (
            "capacity (token dropping) is not supported: every token goes to its top-k experts; "
            "dropping would make a token's output depend on the other tokens of the batch, breaking "
            "causality and step-by-step decoding. Leave capacity unset"
        )
    return None


def moe_flops(opts: dict[str, Any], hidden: int, params: int, seq_len: int) -> int:
    """FLOPs per token: the router plus ``top_k`` of the ``experts`` FFNs, the shared expert and the latent
    projections (2 FLOPs per weight used)."""
    e, k = opts["experts"], opts["top_k"]
    gated = 2 if opts["act"] in GATED else 1
    shared = (gated + 1) * hidden * opts["shared"] if opts["shared"] else 0  # weights (biases left out)
    shared += hidden if opts["shared"] and opts["shared_gate"] else 0
    router = hidden * e
    lat = opts["latent"]
    latent = 2 * hidden * lat + (hidden + lat if opts["latent_bias"] else 0) if lat else 0  # once per token
    per_expert = (params - router - shared - latent) // e
    return 2 * (router + k * per_expert + shared + latent)


SPEC = LayerSpec(
    name="moe",
    aliases=("E",),
    letter="E",
    summary="mixture-of-experts FFN, top-k router (Shazeer et al. 2017; Switch / Mixtral)",
    factory=module_ref("hybriddsl.layers.moe", "MoE"),
    options=(
        Option("experts", int, 8, "number of expert FFNs", min=1),
        Option("top_k", int, 2, "experts per token", min=1),
        Option("mult", float, 4.0, "expert inner width as a multiple of hidden", min=0.01),
        Option("act", str, "gelu", "expert activation", choices=ACTS),
        Option("capacity", float, None, "expert capacity factor (unsupported: leave unset)", optional=True),
        Option("aux_weight", float, 0.01, "weight of the load-balancing loss on module.aux_loss", min=0.0),
        Option("bias", bool, False, "biases in the experts"),
        Option("inner", int, None, "expert inner width (overrides mult)", min=1, optional=True),
        Option("norm_topk", bool, True, "renormalize the top-k weights to sum to 1 (false: Jamba, OLMoE)"),
        Option(
            "score",
            str,
            "softmax",
            "router scores: softmax or sigmoid (DeepSeek-V3, Nemotron-H)",
            choices=("softmax", "sigmoid"),
        ),
        Option("score_bias", bool, False, "a per-expert bias added to the scores to choose experts (not to weight)"),
        Option("groups", int, 1, "expert groups for group-limited routing", min=1),
        Option("topk_groups", int, 1, "groups a token may route to (best by their top-2 score sum)", min=1),
        Option("scale", float, 1.0, "multiplies the routing weights (routed_scaling_factor)"),
        Option(
            "shared", int, None, "inner width of an always-on shared expert (none by default)", min=1, optional=True
        ),
        Option("shared_bias", bool, False, "biases in the shared expert"),
        Option("shared_gate", bool, False, "scale the shared expert by sigmoid(w . x) per token (Qwen3-Next)"),
        Option(
            "latent",
            int,
            None,
            "the routed experts' width: hidden -> latent before them, back after (Nemotron-H moe_latent_size)",
            min=1,
            optional=True,
        ),
        Option("latent_bias", bool, False, "biases on the latent projections"),
    ),
    validate=validate,
    flops=moe_flops,
    color="#f0d0a0",
    key_options=("experts", "top_k"),
)
