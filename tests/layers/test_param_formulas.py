"""Parameter counts from each architecture's definition (its paper), written out: the independent check that the
count pass (which sums the built modules' parameters) is right. Kinds whose own test file already holds such a
formula (gla, griffin, gru, kan, delta_net, gated_delta_net) are checked there."""

from __future__ import annotations

import math

import pytest

from hybriddsl import registry
from hybriddsl.passes.count import layer_cost

D = 32


def attention(heads=4, kv_heads=2, bias=False, **_):
    hd = D // heads
    kv = kv_heads or heads
    weights = D * heads * hd + 2 * D * kv * hd + heads * hd * D  # W_q, W_k, W_v (grouped), W_o
    return weights + ((heads + 2 * kv) * hd + D if bias else 0)


def mamba(state=4, expand=2, conv=4, **_):  # Gu & Dao 2023, with dt_rank = ceil(d / 16)
    di, r = expand * D, math.ceil(D / 16)
    return (
        D * 2 * di  # in_proj to x and z
        + di * conv
        + di  # depthwise conv with bias
        + di * (r + 2 * state)  # x_proj to dt, B, C
        + r * di
        + di  # dt_proj with bias
        + di * state  # A
        + di  # D skip
        + di * D  # out_proj
    )


def mamba2(state=8, expand=2, conv=4, head_dim=16, groups=1, **_):  # Dao & Gu 2024
    di = expand * D
    h = di // head_dim
    conv_ch = di + 2 * groups * state  # x, B, C go through the conv
    return D * (2 * di + 2 * groups * state + h) + conv_ch * (conv + 1) + 3 * h + di + di * D  # A, dt_bias, D; norm


def ffn(mult=4.0, act="gelu", **_):
    i = int(mult * D)
    up = 2 * i if act in ("swiglu", "geglu") else i  # gated units project twice
    return D * up + up + i * D + D  # with biases


def moe(experts=4, mult=4.0, **_):  # router + experts without biases
    i = int(mult * D)
    return D * experts + experts * 2 * D * i


def rwkv(head_size=16, mix_rank=32, decay_rank=64, **_):  # RWKV-6 time mix (Peng et al. 2024)
    return (
        6 * D  # mu_x and the five token-shift mixes
        + D * 5 * mix_rank
        + 5 * mix_rank * D  # data-dependent lerp (low rank)
        + D
        + D * decay_rank
        + decay_rank * D  # decay w0 and its low-rank update
        + D  # bonus u, one per channel
        + 5 * D * D  # R, K, V, G, O
        + 2 * D  # GroupNorm of the output
    )


CASES = [
    ("attention", {"heads": 4, "kv_heads": 2}, attention),
    ("attention", {"heads": 4, "kv_heads": None, "bias": True}, attention),
    ("mamba", {"state": 4}, mamba),
    ("mamba2", {"state": 8, "head_dim": 16}, mamba2),
    ("mamba2", {"state": 8, "head_dim": 8, "groups": 2}, mamba2),
    ("ffn", {}, ffn),
    ("ffn", {"act": "swiglu", "mult": 2.0}, ffn),
    ("moe", {"experts": 4}, moe),
    ("rwkv", {"head_size": 16}, rwkv),
]


@pytest.mark.parametrize("kind, opts, formula", CASES, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(CASES)])
def test_parameter_count_matches_the_formula(kind, opts, formula):
    full = {**registry.get(kind).defaults(), **opts}
    params, _ = layer_cost(kind, full, D, 16)
    assert params == formula(**opts)
