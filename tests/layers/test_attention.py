"""attention: against an explicit softmax(Q K^T / sqrt(d) + mask) V written here, and the shared checks."""

from __future__ import annotations

import math

import pytest
import torch

from hybriddsl.layers.attention import SPEC, Attention, attention_flops
from tests.layers.checks import (
    check_causal,
    check_dtypes,
    check_gradcheck,
    check_step_matches_forward,
    check_trains,
    run_steps,
)


def reference(m: Attention, x: torch.Tensor) -> torch.Tensor:
    """The definition in float64 from the module's weights: a loop over query heads and positions."""
    x = x.double()
    b, t, _ = x.shape
    d, nh, nkv = m.head_dim, m.heads, m.kv_heads

    def proj(lin, n):
        y = x @ lin.weight.double().T + (lin.bias.double() if lin.bias is not None else 0)
        return y.view(b, t, n, d)

    q, k, v = proj(m.q_proj, nh), proj(m.k_proj, nkv), proj(m.v_proj, nkv)
    if m.q_norm is not None:

        def rms(z, w):
            return z / torch.sqrt(z.pow(2).mean(-1, keepdim=True) + 1e-6) * w.double()

        q, k = rms(q, m.q_norm.weight), rms(k, m.k_norm.weight)
    if m.rope:
        # rotation of the complex pair (z_i, z_{i+d/2}) by angle p * theta^(-2i/d)
        half = d // 2
        i = torch.arange(half, dtype=torch.float64)
        ang = torch.arange(t, dtype=torch.float64)[:, None] * m.rope_theta ** (-2 * i / d)
        rot = torch.polar(torch.ones_like(ang), ang)[None, :, None, :]

        def turn(z):
            c = torch.complex(z[..., :half], z[..., half:]) * rot
            return torch.cat([c.real, c.imag], -1)

        q, k = turn(q), turn(k)
    out = torch.zeros(b, t, nh, d, dtype=torch.float64)
    group = nh // nkv
    for h in range(nh):
        kh, vh = k[:, :, h // group], v[:, :, h // group]
        for i in range(t):
            if m.causal:
                lo = 0 if m.window is None else max(0, i - m.window + 1)
                js = list(range(lo, i + 1))
            else:
                js = list(range(t))
            s = torch.einsum("bd,bjd->bj", q[:, i, h], kh[:, js]) / math.sqrt(d)
            out[:, i, h] = torch.einsum("bj,bjd->bd", s.softmax(-1), vh[:, js])
    o = out.reshape(b, t, nh * d)
    y = o @ m.out_proj.weight.double().T
    return y + (m.out_proj.bias.double() if m.out_proj.bias is not None else 0)


CASES = {
    "H4-full": dict(heads=4),
    "H4-KV2-gqa": dict(heads=4, kv_heads=2),
    "H4-KV1-W3": dict(heads=4, kv_heads=1, window=3),
    "H2-W1": dict(heads=2, window=1),
    "H2-W13-geT": dict(heads=2, window=13),
    "H2-W40-geT": dict(heads=2, window=40),
    "H4-rope": dict(heads=4, rope=True),
    "H4-KV2-W4-rope-qknorm-bias": dict(heads=4, kv_heads=2, window=4, rope=True, qk_norm=True, bias=True),
    "H4-D6-headdim": dict(heads=4, head_dim=6, kv_heads=2),
    "H2-noncausal": dict(heads=2, causal=False),
    "H4-theta100-rope": dict(heads=4, rope=True, rope_theta=100.0),
}


@pytest.mark.parametrize("opts", list(CASES.values()), ids=list(CASES))
def test_matches_explicit_softmax(opts):
    torch.manual_seed(0)
    m = Attention(16, **opts)
    if m.q_norm is not None:  # non-trivial norm weights so the test sees them
        with torch.no_grad():
            m.q_norm.weight.uniform_(0.5, 1.5)
            m.k_norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 13, 16)
    with torch.no_grad():
        got = m(x)
    ref = reference(m, x)
    assert (got.double() - ref).abs().max() < 1e-5


@pytest.mark.parametrize(
    "opts,chunk",
    [
        (dict(heads=4, window=5), 4),
        (dict(heads=4, window=5), 7),
        (dict(heads=4, kv_heads=2, window=1), 3),
        (dict(heads=4, window=16), 5),
        (dict(heads=4, kv_heads=2, rope=True), 5),
        (dict(heads=2, causal=False), 6),
    ],
    ids=["W5-C4", "W5-C7", "KV2-W1-C3", "W16-C5", "KV2-rope-full-C5", "noncausal-C6"],
)
def test_chunked_equals_unchunked(opts, chunk):
    torch.manual_seed(0)
    m = Attention(16, **opts)
    c = Attention(16, **opts, chunk=chunk)
    c.load_state_dict(m.state_dict())
    x = torch.randn(2, 19, 16)
    with torch.no_grad():
        assert torch.allclose(m(x), c(x), atol=1e-6)
    assert torch.allclose(reference(c, x).float(), c(x).detach(), atol=1e-5)


STEP_CASES = {
    "full": dict(heads=4),
    "W5": dict(heads=4, window=5),
    "W1": dict(heads=2, window=1),
    "KV2-W7-rope-qknorm": dict(heads=4, kv_heads=2, window=7, rope=True, qk_norm=True),
    "KV1-rope-full": dict(heads=4, kv_heads=1, rope=True),
    "W5-chunk3": dict(heads=4, window=5, chunk=3),
    "KV2-W5-partial-rope-gate-outbias": dict(
        heads=4, kv_heads=2, window=5, rope=True, rope_dim=2, out_gate=True, out_bias=True
    ),
}


@pytest.mark.parametrize("opts", list(STEP_CASES.values()), ids=list(STEP_CASES))
def test_step_matches_forward(opts):
    torch.manual_seed(0)
    check_step_matches_forward(Attention(16, **opts), 16, seq=23)


def test_window_state_keeps_its_shape():
    torch.manual_seed(0)
    m = Attention(16, heads=4, kv_heads=2, window=3)
    st = m.init_state(2)
    shapes = {k: v.shape for k, v in st.items()}
    for _ in range(7):
        _, st = m.step(torch.randn(2, 16), st)
        assert {k: v.shape for k, v in st.items()} == shapes
    assert st["k"].shape == (2, 2, 3, 4) and int(st["pos"]) == 7
    # the grow-only cache without a window
    g = Attention(16, heads=4)
    st = g.init_state(1)
    for _ in range(5):
        _, st = g.step(torch.randn(1, 16), st)
    assert st["k"].shape == (1, 4, 5, 4)


def test_state_bytes():
    m = Attention(16, heads=4, kv_heads=2, head_dim=8, window=6)
    assert m.state_bytes(4, 2) == 2 * 2 * 8 * 4 * 2
    assert m.state_bytes(100, 2) == 2 * 2 * 8 * 6 * 2
    assert Attention(16, heads=4).state_bytes(100) == 2 * 4 * 4 * 100 * 4


def test_flops_formula():
    m = Attention(32, heads=4, kv_heads=2, window=5)
    p = sum(x.numel() for x in m.parameters())
    for L in (1, 3, 5, 6, 40):
        mean_keys = sum(min(t, 5) for t in range(1, L + 1)) / L
        opts = dict(heads=4, kv_heads=2, window=5)
        assert attention_flops(SPEC.complete(opts), 32, p, L) == int(2 * p + 4 * 4 * 8 * mean_keys)
    assert attention_flops(SPEC.complete(dict(heads=4)), 32, p, 9) == int(2 * p + 4 * 32 * 5)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    m = Attention(16, heads=2, dropout=0.5)
    x = torch.randn(1, 8, 16)
    m.eval()
    assert torch.equal(m(x), m(x))
    m.train()
    assert not torch.allclose(m(x), m.eval()(x))


@pytest.mark.parametrize(
    "opts",
    [dict(heads=4, kv_heads=2, window=3, rope=True, qk_norm=True, bias=True), dict(heads=2, chunk=2)],
    ids=["KV2-W3-rope-qknorm-bias", "chunk2"],
)
def test_shared_checks(opts):
    check_causal(Attention(16, **opts), 16)
    check_gradcheck(Attention(8, **{**opts, "heads": 2, "kv_heads": 1 if "kv_heads" in opts else None}), 8)
    check_dtypes(Attention(16, **opts), 16)


def test_trains():
    check_trains(lambda h: Attention(h, heads=4, rope=True), hidden=32, steps=80)


def test_spec_and_bad_options():
    assert SPEC.companions({"ffn": True}) == [("ffn", {})]
    assert SPEC.companions({"ffn": False}) == []
    v = lambda opts, hidden: SPEC.validate(SPEC.complete(opts), hidden)  # noqa: E731 (complete opts)
    assert v({"heads": 6}, 512) == "heads (6) must divide hidden (512), or set head_dim"
    assert v({"heads": 8, "kv_heads": 3}, 512) == "kv_heads (3) must divide heads (8)"
    assert v({"heads": 6, "head_dim": 64}, 512) is None
    assert "even head_dim" in v({"heads": 4, "head_dim": 5, "rope": True}, 64)
    assert "causal" in v({"heads": 4, "window": 4, "causal": False}, 64)
    assert SPEC.option("window").check(0) == "option 'window' must be >= 1, got 0"
    assert SPEC.option("heads").check(2.5) == "option 'heads' takes an integer, got 2.5"
    with pytest.raises(ValueError, match="must divide"):
        Attention(10, heads=4)
    with pytest.raises(RuntimeError, match="causal"):
        run_steps(Attention(8, heads=2, causal=False), torch.randn(1, 3, 8))
