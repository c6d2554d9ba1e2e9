"""Streams on smaller weights (hybriddsl.stream_weights): int8 per-output-channel and bfloat16 copies of the
linear weights, read by a matvec that widens them inside the product; and the batch-1 forms the compiled step
uses (matvec as a reduction, one-query attention). References: F.linear, F.scaled_dot_product_attention, and
the float32 stream of a copy of the model whose linear weights were replaced by their dequantized values."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hybriddsl import HybOptionError, parse_and_build
from hybriddsl.stream_weights import linear_layers, matvec, one_query_attention, quantize_int8

SMALL = {"hidden": 32, "heads": 4, "mamba.state": 4, "embed_dim": 12}
# no MoE here: its router multiplies by its weight with `@`, not F.linear, so a stream reads it at float32 while
# dequantized_copy would round it (MoE is checked against the float32 stream's tolerance below)
MIXED = "M A(window=4, qk_norm=true) GLA M2(head_dim=16) FFN A(window=3, kv_heads=2, rope=true)"
# relative error (||y - y_fp32|| / ||y_fp32|| over all frames) a weight format may cost on these models: bf16
# keeps 8 bits of mantissa (2^-9 relative per weight), int8 ~7 bits of the row's largest weight
TOLERANCE = {"bf16": 1e-2, "int8": 3e-2}


def build(src: str = MIXED, **kw):
    torch.manual_seed(0)
    return parse_and_build(src, **{**SMALL, **kw}, output="sequence").eval()


def run(stream, frames: torch.Tensor) -> torch.Tensor:
    return torch.stack([stream.push(f) for f in frames])


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_quantize_int8_is_symmetric_per_output_row():
    torch.manual_seed(0)
    w = torch.randn(6, 40) * torch.logspace(-3, 1, 6)[:, None]  # rows of very different sizes
    w[2] = 0
    q, s = quantize_int8(w)
    assert q.dtype == torch.int8 and s.dtype == torch.float32 and s.shape == (6,)
    for o in (0, 1, 3, 4, 5):
        assert s[o].item() == pytest.approx(w[o].abs().max().item() / 127, rel=1e-6)
        assert q[o].abs().max().item() == 127  # the largest weight of each row uses the full range
    assert s[2].item() == 1 and not q[2].any()
    err = (q.float() * s[:, None] - w).abs()
    assert (err <= s[:, None] / 2 + 1e-7).all()  # rounding to the nearest step


@pytest.mark.parametrize("rows", [1, 3])
def test_matvec_equals_f_linear(rows):
    torch.manual_seed(0)
    x, w, b = torch.randn(rows, 24), torch.randn(40, 24), torch.randn(40)
    torch.testing.assert_close(matvec(x, w, b), F.linear(x, w, b), rtol=1e-5, atol=1e-5)
    q, s = quantize_int8(w)
    torch.testing.assert_close(matvec(x, q, b, s), F.linear(x, q.float() * s[:, None], b), rtol=1e-5, atol=1e-5)
    wb = w.to(torch.bfloat16)
    torch.testing.assert_close(matvec(x, wb), F.linear(x, wb.float()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_one_query_attention_equals_sdpa(kv_heads):
    torch.manual_seed(0)
    q = torch.randn(2, 4, 1, 16)
    k, v = torch.randn(2, kv_heads, 7, 16), torch.randn(2, kv_heads, 7, 16)
    mask = torch.rand(2, 1, 1, 7) > 0.4
    mask[..., 0] = True  # every row sees a key
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=kv_heads != 4)
    torch.testing.assert_close(one_query_attention(q, k, v, mask, None), want, rtol=1e-5, atol=1e-5)
    want = F.scaled_dot_product_attention(q, k, v, scale=0.3, enable_gqa=kv_heads != 4)
    torch.testing.assert_close(one_query_attention(q, k, v, None, 0.3), want, rtol=1e-5, atol=1e-5)


def dequantized_copy(model: nn.Module, fmt: str) -> nn.Module:
    """The model with each linear weight replaced by what a ``fmt`` stream computes with, in float32."""
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for _, lin in linear_layers(ref):
            if fmt == "int8":
                q, s = quantize_int8(lin.weight)
                lin.weight.copy_(q.float() * s[:, None])
            else:
                lin.weight.copy_(lin.weight.to(torch.bfloat16).float())
    return ref


@pytest.mark.parametrize("fmt", ["int8", "bf16"])
def test_stream_on_smaller_weights_is_the_model_with_those_weights(fmt):
    """A weights=fmt stream == the float32 stream of the model with dequantized linear weights (so every linear
    layer reads the small copy, and nothing else changes), and stays within TOLERANCE of the float32 stream."""
    model = build()
    frames = torch.randn(40, 2, SMALL["embed_dim"])
    s = model.stream(batch=2, weights=fmt)
    want_dtype = torch.int8 if fmt == "int8" else torch.bfloat16
    assert {b.dtype for n, b in s._weights.named_buffers() if n.startswith("w")} == {want_dtype}
    got = run(s, frames)
    same = run(dequantized_copy(model, fmt).stream(batch=2), frames)
    torch.testing.assert_close(got, same, rtol=1e-4, atol=1e-4)
    exact = run(model.stream(batch=2), frames)
    assert 0 < rel(got, exact) < TOLERANCE[fmt]


@pytest.mark.parametrize("fmt", ["int8", "bf16"])
def test_moe_stream_on_smaller_weights_stays_close(fmt):
    model = build("E(experts=4) M")
    frames = torch.randn(30, 2, SMALL["embed_dim"])
    got, exact = run(model.stream(batch=2, weights=fmt), frames), run(model.stream(batch=2), frames)
    assert 0 < rel(got, exact) < TOLERANCE[fmt]


def test_weights_setting_is_checked():
    model = build("M")
    with pytest.raises(HybOptionError, match="weights"):
        model.stream(weights="int4")
    with pytest.raises(HybOptionError, match="compile='aot'"):
        model.stream(weights="int8", compile="dynamo")


def test_aot_stream_on_int8_weights_matches_the_eager_one():
    """compile=True with weights='int8': the compiled step (fused dequantizing matvecs) == the eager int8 stream,
    and the float32 compiled stream still equals the parallel forward (batch 1: the matvec path)."""
    model = build("M A(window=4) FFN")
    frames = torch.randn(12, 1, SMALL["embed_dim"])
    got = run(model.stream(batch=1, compile=True, weights="int8"), frames)
    torch.testing.assert_close(got, run(model.stream(batch=1, weights="int8"), frames), rtol=1e-4, atol=1e-4)
    fp32 = run(model.stream(batch=1, compile=True), frames)
    with torch.no_grad():
        full = model(frames.transpose(0, 1))
    torch.testing.assert_close(fp32, full.transpose(0, 1), rtol=1e-4, atol=1e-4)
