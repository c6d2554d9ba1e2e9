"""The mamba2 kind for the registry: options, cross-option checks, FLOP formula (no torch here).

The module itself is in :mod:`hybriddsl.layers.mamba2`, imported only when a layer is built."""

from __future__ import annotations

from typing import Any

from hybriddsl.layer_spec import LayerSpec, Option
from hybriddsl.specs.refs import module_ref
from hybriddsl.tiles import CHUNK_SIZES


def validate(opts: dict[str, Any], hidden: int) -> str | None:
    """Cross-option checks, run before anything is allocated."""
    expand, head_dim, groups = opts["expand"], opts["head_dim"], opts["groups"]
    for name, v in (("state", opts["state"]), ("expand", expand), ("conv", opts["conv"])):
        if v < 1:
            return f"{name} must be >= 1, got {v}"
    if head_dim < 1 or groups < 1:
        return f"head_dim and groups must be >= 1, got head_dim={head_dim}, groups={groups}"
    d_inner = opts["inner"] or expand * hidden
    if d_inner % head_dim:
        width = f"inner = {d_inner}" if opts["inner"] else f"expand * hidden = {expand} * {hidden} = {d_inner}"
        return f"head_dim ({head_dim}) must divide the inner width {width}"
    heads = d_inner // head_dim
    if heads % groups:
        return f"groups ({groups}) must divide the number of heads expand * hidden / head_dim = {heads}"
    return None


def mamba2_flops(opts: dict[str, Any], hidden: int, params: int, seq_len: int) -> int:
    """FLOPs per token: projections ``2 params`` plus the recurrence, ``4 N P`` per head (decay and
    ``B (Δ x)^T`` into the state, ``h^T C`` out), i.e. ``4 D_in N``."""
    d_inner = opts["inner"] or opts["expand"] * hidden
    return int(2 * params + 4 * d_inner * opts["state"])


SPEC = LayerSpec(
    name="mamba2",
    aliases=("M2", "ssd"),
    letter="M2",
    summary="Mamba-2 / SSD: scalar decay per head, multi-head SSM with gated RMSNorm (Dao & Gu 2024)",
    factory=module_ref("hybriddsl.layers.mamba2", "Mamba2"),
    options=(
        Option("state", int, 64, "SSM state size N per head", min=1),
        Option("expand", int, 2, "inner width D_in as a multiple of hidden", min=1),
        Option("conv", int, 4, "width of the causal depthwise conv", min=1),
        Option("head_dim", int, 64, "channels per head P (heads = expand * hidden / head_dim)", min=1),
        Option("groups", int, 1, "B/C groups shared by heads (must divide heads)", min=1),
        Option("chunk", int, 64, "chunk length of the kernel (its tile length)", choices=CHUNK_SIZES),
        Option("bias", bool, False, "biases on the in/out projections"),
        Option("conv_bias", bool, True, "bias on the conv"),
        Option(
            "inner",
            int,
            None,
            "inner width D_in (overrides expand; Nemotron-H: heads x head_dim)",
            min=1,
            optional=True,
        ),
        Option("gate_eps", float, 1e-5, "epsilon of the gated RMSNorm before out_proj", min=0.0),
        Option(
            "out_norm",
            str,
            "gated",
            "output norm: RMSNorm(y silu(z)) (gated), RMSNorm(y) silu(z) (before_gate) or y silu(z) (off)",
            choices=("gated", "before_gate", "off"),
        ),
        Option("dt_min", float, 0.0, "lower clamp of Δ after the softplus (mamba_ssm's dt_limit)", min=0.0),
        Option("dt_max", float, None, "upper clamp of Δ (default: none)", min=0.0, optional=True),
    ),
    validate=validate,
    flops=mamba2_flops,
    recurrent=True,
    color="#90caf9",
    key_options=("state", "head_dim"),
)
