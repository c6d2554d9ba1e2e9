"""rwkv (RWKV-6 time mix) and rwkv_channel_mix: against float64 loops over time written here from the modules'
raw weights (the Eagle and Finch formulas), plus the shared checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hybriddsl import registry
from hybriddsl.kernels.testing import TOLERANCE, assert_close
from hybriddsl.layers.rwkv import SPECS, RWKV6ChannelMix, RWKV6TimeMix, rwkv_flops
from tests.layers.checks import (
    check_causal,
    check_dtypes,
    check_gradcheck,
    check_step_matches_forward,
    check_trains,
    check_triton_path,
    grads_vs_reference,
    randomize,
)

TMIX, CMIX = SPECS


def reference_tmix(m: RWKV6TimeMix, x: torch.Tensor) -> torch.Tensor:
    """RWKV-6 time mix in float64, token by token, from the raw parameters."""
    x = x.double()
    b, t, d = x.shape
    H, N = m.heads, m.head_size
    P = {n: p.double() for n, p in m.named_parameters()}
    mu = P["mu"]  # rows: x, w, k, v, r, g
    A = P["mix_a"].view(d, 5, m.mix_rank)
    S = torch.zeros(b, H, N, N, dtype=torch.float64)
    prev = torch.zeros(b, d, dtype=torch.float64)
    ys = []
    for i in range(t):
        xt = x[:, i]
        dx = prev - xt
        m0 = xt + dx * mu[0]
        z = []
        for j in range(5):  # ddlerp: x + (x' - x) * (mu_j + tanh(m0 A_j) B_j)
            lora = torch.tanh(m0 @ A[:, j]) @ P["mix_b"][j]
            z.append(xt + dx * (mu[j + 1] + lora))
        zw, zk, zv, zr, zg = z
        r = (zr @ P["r_proj.weight"].T).view(b, H, N)
        k = (zk @ P["k_proj.weight"].T).view(b, H, N)
        v = (zv @ P["v_proj.weight"].T).view(b, H, N)
        g = zg @ P["g_proj.weight"].T
        w = torch.exp(-torch.exp(P["w0"] + torch.tanh(zw @ P["decay_a"]) @ P["decay_b"])).view(b, H, N)
        kv = k[..., :, None] * v[..., None, :]
        o = torch.einsum("bhk,bhkv->bhv", r, S + P["u"][None, :, :, None] * kv)  # r^T (S_{t-1} + diag(u) k v^T)
        S = w[..., None] * S + kv
        # GroupNorm per head: LayerNorm over each head's channels, then the per-channel affine
        on = (o - o.mean(-1, keepdim=True)) / torch.sqrt(o.var(-1, unbiased=False, keepdim=True) + m.ln_x.eps)
        on = on.reshape(b, d) * P["ln_x.weight"] + P["ln_x.bias"]
        ys.append((on * F.silu(g)) @ P["out_proj.weight"].T)
        prev = xt
    return torch.stack(ys, 1)


def reference_cmix(m: RWKV6ChannelMix, x: torch.Tensor) -> torch.Tensor:
    """RWKV-6 channel mix in float64, token by token."""
    x = x.double()
    P = {n: p.double() for n, p in m.named_parameters()}
    prev = torch.zeros_like(x[:, 0])
    ys = []
    for i in range(x.shape[1]):
        xt = x[:, i]
        xk = xt + (prev - xt) * P["mu_k"]
        xr = xt + (prev - xt) * P["mu_r"]
        kk = torch.relu(xk @ P["key.weight"].T) ** 2
        ys.append(torch.sigmoid(xr @ P["receptance.weight"].T) * (kk @ P["value.weight"].T))
        prev = xt
    return torch.stack(ys, 1)


CASES = {
    "D32-hs8": dict(head_size=8),
    "D32-hs16-mr4-dr8": dict(head_size=16, mix_rank=4, decay_rank=8),
    "D32-hs32-chunk16": dict(head_size=32, chunk=16),
    "D32-hs4-mr1-dr1": dict(head_size=4, mix_rank=1, decay_rank=1),
}


def _close(got: torch.Tensor, ref: torch.Tensor, rel: float = 1e-4) -> None:
    err = (got.double() - ref).abs().max().item()
    assert err < rel * ref.abs().max().item(), f"max error {err:.2e} vs scale {ref.abs().max().item():.2e}"


@pytest.mark.parametrize("opts", list(CASES.values()), ids=list(CASES))
def test_time_mix_matches_loop_reference(opts):
    torch.manual_seed(0)
    m = randomize(RWKV6TimeMix(32, **opts))
    x = torch.randn(2, 37, 32)
    with torch.no_grad():
        got = m(x)
    _close(got, reference_tmix(m, x))


def test_time_mix_strong_decay_stays_finite_and_exact():
    """Large w0 (decay exp(-exp(w0)) ~ 0 within a token) must not overflow anywhere."""
    torch.manual_seed(0)
    m = randomize(RWKV6TimeMix(16, head_size=8))
    with torch.no_grad():
        m.w0.uniform_(1.0, 3.0)  # exp(-exp(3)) ~ 2e-9 per token
    x = torch.randn(1, 40, 16)
    with torch.no_grad():
        got = m(x)
    assert torch.isfinite(got).all()
    # log-decays near -exp(5) per token sum to ~1e3 within a kernel block; float32 keeps that sum to ~1e-4
    # absolute, which is the relative error of the decays formed from its differences: hence 1e-3, not 1e-4
    _close(got, reference_tmix(m, x), rel=1e-3)


@pytest.mark.parametrize("mult", [3.5, 1.0], ids=["mult3.5", "mult1"])
def test_channel_mix_matches_loop_reference(mult):
    torch.manual_seed(0)
    m = randomize(RWKV6ChannelMix(24, mult=mult), std=0.1)
    x = torch.randn(2, 19, 24)
    with torch.no_grad():
        got = m(x)
    _close(got, reference_cmix(m, x))


@pytest.mark.parametrize("opts", list(CASES.values()), ids=list(CASES))
def test_step_matches_forward(opts):
    check_step_matches_forward(randomize(RWKV6TimeMix(32, **opts)), 32)


def test_channel_mix_step_and_checks():
    check_step_matches_forward(randomize(RWKV6ChannelMix(16), std=0.1), 16)
    check_causal(randomize(RWKV6ChannelMix(16), std=0.1), 16)
    check_gradcheck(randomize(RWKV6ChannelMix(8), std=0.1), 8)
    check_dtypes(RWKV6ChannelMix(16), 16)


@pytest.mark.parametrize(
    "opts", [dict(head_size=4), dict(head_size=8, mix_rank=2, decay_rank=3)], ids=["hs4", "hs8-mr2-dr3"]
)
def test_shared_checks(opts):
    torch.manual_seed(0)
    check_causal(randomize(RWKV6TimeMix(16, **opts)), 16)
    check_gradcheck(randomize(RWKV6TimeMix(8, **opts), std=0.1), 8)
    check_dtypes(RWKV6TimeMix(16, **opts), 16)


def test_gradients_match_reference():
    """Gradients of the real (float32 kernel) forward equal those of the float64 loop reference."""
    torch.manual_seed(0)
    m = randomize(RWKV6TimeMix(16, head_size=8, mix_rank=4, decay_rank=4), std=0.2)
    got, ref = grads_vs_reference(m, reference_tmix, torch.randn(2, 21, 16))
    for n in got:
        assert_close(n, ref[n], got[n], TOLERANCE[torch.float32]["grad"])


def test_triton_path_matches_torch_path():
    torch.manual_seed(0)
    check_triton_path(randomize(RWKV6TimeMix(32, head_size=16, chunk=16), std=0.1), 32)


def test_trains():
    check_trains(lambda h: RWKV6TimeMix(h, head_size=8), hidden=32, seq=8, steps=100, lr=1e-2)


def test_init_follows_rwkv6_schedule():
    """w0 runs -6 -> -1 over channels, u has the zigzag, the LoRAs start as no-ops, state shapes."""
    m = RWKV6TimeMix(64, head_size=16)
    assert m.w0[0].item() == pytest.approx(-6.0) and m.w0[-1].item() == pytest.approx(-1.0)
    assert torch.equal(m.mix_a, torch.zeros_like(m.mix_a)) and torch.equal(m.decay_a, torch.zeros_like(m.decay_a))
    assert m.u.shape == (4, 16)
    assert m.u.flatten()[0].item() == pytest.approx(0.5 + 0.0)  # (1/2)(1 - 0) + 0.1 * ((0 + 1) % 3 - 1)
    assert m.u.flatten()[1].item() == pytest.approx(0.5 * (1 - 1 / 63) + 0.1)
    st = m.init_state(3)
    assert st["S"].shape == (3, 4, 16, 16) and st["S"].dtype == torch.float32 and st["shift"].shape == (3, 64)
    assert m.state_bytes(10**6) == 4 * 16 * 16 * 4 + 64 * 4
    assert RWKV6ChannelMix(64).key.weight.shape == (224, 64)  # inner = 3.5 hidden


def test_parameter_count_and_flops():
    """Time mix: mu 6d, ddlerp LoRA 5 r_m d + 5 r_m d, w0 d, decay LoRA 2 r_d d, u d, r/k/v/g/o 5 d^2, ln 2d."""
    d, hs, rm, rd = 32, 8, 4, 6
    m = RWKV6TimeMix(d, head_size=hs, mix_rank=rm, decay_rank=rd)
    p = sum(q.numel() for q in m.parameters())
    assert p == 6 * d + 10 * rm * d + d + 2 * rd * d + d + 5 * d * d + 2 * d
    assert rwkv_flops({"head_size": hs}, d, p, 100) == 2 * p + 4 * d * hs


def test_spec_companion_and_bad_options():
    assert registry.get("R") is TMIX and registry.get("rwkv") is TMIX and TMIX.letter == "R"
    assert registry.get("rwkv_channel_mix") is CMIX and CMIX.internal and CMIX.letter == "R"
    assert "rwkv_channel_mix" not in registry.user_names()
    assert TMIX.companions({"cmix": True}) == [("rwkv_channel_mix", {})]
    assert TMIX.companions({"cmix": False}) == []
    assert TMIX.recurrent
    v = TMIX.validate
    assert v(TMIX.defaults(), 512) is None
    assert v({"head_size": 64}, 32) == (
        "head_size (64) must divide hidden (32): heads = hidden / head_size; "
        "set head_size to a divisor of hidden, e.g. head_size = 32"
    )
    assert "e.g. head_size = 8" in v({"head_size": 64}, 40)
    assert TMIX.option("chunk").check(8) == "option 'chunk' must be one of 16, 32, 64, got 8 - did you mean 16?"
    assert TMIX.option("mix_rank").check(0) == "option 'mix_rank' must be >= 1, got 0"
    assert CMIX.option("mult").check("big") == "option 'mult' takes a number, got 'big'"
    with pytest.raises(ValueError, match="head_size \\(64\\) must divide hidden \\(48\\)"):
        RWKV6TimeMix(48)
