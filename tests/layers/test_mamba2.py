"""mamba2 (Mamba-2 / SSD): against a float64 loop over time written here from the module's raw weights (the
per-head recurrence h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t^T, y_t = C_t^T h_t + D x_t, gate, grouped RMSNorm),
plus the shared checks, mamba_ssm's init and the parameter count."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hybriddsl import registry
from hybriddsl.layers.mamba2 import FUSED_MIN_CHUNKS, SPEC, Mamba2, mamba2_flops
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


def lin(layer: torch.nn.Linear, z: torch.Tensor) -> torch.Tensor:
    y = z @ layer.weight.double().T
    return y + layer.bias.double() if layer.bias is not None else y


def causal_conv(conv: torch.nn.Conv1d, u: torch.Tensor) -> torch.Tensor:
    """out[t, c] = b[c] + sum_j w[c, j] u[t - (K-1) + j, c], with u = 0 before the start. u: [b, T, C]."""
    w = conv.weight.double()[:, 0, :]  # [C, K]
    K, T = w.shape[1], u.shape[1]
    up = F.pad(u, (0, 0, K - 1, 0))
    out = sum(w[:, j] * up[:, j : j + T] for j in range(K))
    return out + conv.bias.double() if conv.bias is not None else out


def reference(m: Mamba2, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba-2 in float64, one token at a time, head by head. Returns (y [b, T, hidden], final state
    [b, H, N, P])."""
    x = x.double()
    b, T, _ = x.shape
    Di, N, P, G, H = m.d_inner, m.state, m.head_dim, m.groups, m.heads
    proj = lin(m.in_proj, x)
    z, xBC, dt = proj[..., :Di], proj[..., Di : Di + Di + 2 * G * N], proj[..., Di + Di + 2 * G * N :]
    xBC = F.silu(causal_conv(m.conv1d.conv, xBC))
    xs = xBC[..., :Di].reshape(b, T, H, P)
    Bg = xBC[..., Di : Di + G * N].reshape(b, T, G, N)
    Cg = xBC[..., Di + G * N :].reshape(b, T, G, N)
    delta = F.softplus(dt + m.dt_bias.double())  # [b, T, H]
    A = -torch.exp(m.A_log.double())  # [H]
    D = m.D.double()
    group = torch.arange(H) * G // H  # the B/C group each head reads
    Bh, Ch = Bg[:, :, group], Cg[:, :, group]  # [b, T, H, N]
    h = torch.zeros(b, H, N, P, dtype=torch.float64)
    ys = []
    for t in range(T):
        decay = torch.exp(delta[:, t] * A)[:, :, None, None]
        h = decay * h + delta[:, t, :, None, None] * Bh[:, t, :, :, None] * xs[:, t, :, None, :]
        ys.append(torch.einsum("bhn,bhnp->bhp", Ch[:, t], h) + D[:, None] * xs[:, t])
    ys = torch.stack(ys, 1)  # [b, T, H, P]
    y = ys.reshape(b, T, Di) * F.silu(z)  # gate, then norm (norm_before_gate=False)
    yg = y.reshape(b, T, G, Di // G)
    yg = yg / torch.sqrt(yg.pow(2).mean(-1, keepdim=True) + m.norm.eps)
    y = yg.reshape(b, T, Di) * m.norm.weight.double()
    return lin(m.out_proj, y), h


CASES = {
    "N8-P8-G1-defaults": dict(state=8, head_dim=8),
    "N4-P4-G2-K2-chunk16": dict(state=4, head_dim=4, groups=2, conv=2, chunk=16),
    "N16-P16-E1-bias": dict(state=16, head_dim=16, expand=1, bias=True, conv_bias=False),
    "N4-P2-G4-E3-K3": dict(state=4, head_dim=2, groups=4, expand=3, conv=3),
}


@pytest.mark.parametrize("opts", list(CASES.values()), ids=list(CASES))
def test_matches_loop_reference(opts):
    torch.manual_seed(0)
    m = randomize(Mamba2(16, **opts))
    x = torch.randn(2, 41, 16)
    with torch.no_grad():
        got = m(x)
        st = m.init_state(2)
        ys = []
        for t in range(x.shape[1]):
            y, st = m.step(x[:, t], st)
            ys.append(y)
        steps = torch.stack(ys, 1)
    ref, h_ref = reference(m, x)
    scale = ref.abs().max().item()
    err = (got.double() - ref).abs().max().item()
    assert err < 1e-4 * scale, f"forward max error {err:.2e} (scale {scale:.2e})"
    err = (steps.double() - ref).abs().max().item()
    assert err < 1e-4 * scale, f"step max error {err:.2e}"
    err = (st["ssm"].double() - h_ref).abs().max().item()
    assert err < 1e-4 * h_ref.abs().max().item(), f"final state max error {err:.2e}"


def test_gradients_match_loop_reference():
    """Autograd through the layer (float32 kernels) equals autograd through the float64 loop."""
    torch.manual_seed(1)
    got, ref = grads_vs_reference(randomize(Mamba2(8, state=4, head_dim=4, groups=2)), reference, torch.randn(2, 19, 8))
    for n, g in got.items():
        err = (g.double() - ref[n].double()).abs().max().item()
        assert err <= 1e-3 * ref[n].abs().max().item() + 1e-6, f"grad {n}: max error {err:.2e}"


LONG = {
    "G2-K2": dict(state=4, head_dim=4, groups=2, conv=2, chunk=16),
    "G1-nobias": dict(state=8, head_dim=4, chunk=16, conv_bias=False),
}


@pytest.mark.parametrize("opts", list(LONG.values()), ids=list(LONG))
def test_long_sequence_fused_cpu_path_matches_loop_reference(monkeypatch, opts):
    """From FUSED_MIN_CHUNKS chunks on the CPU forward runs kernels/ssd/mamba2_scan.py (conv to D skip in one
    block pass, hand-written backward): its output and every gradient against the float64 loop."""
    from hybriddsl.kernels.ssd import mamba2_scan as scan_mod

    calls = []
    real = scan_mod.mamba2_scan
    monkeypatch.setattr(scan_mod, "mamba2_scan", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(3)
    m = randomize(Mamba2(16, **opts))
    x = torch.randn(2, FUSED_MIN_CHUNKS * 16 + 5, 16)
    with torch.no_grad():
        got = m(x)
    assert calls, "the fused path was not taken"
    ref, _ = reference(m, x)
    scale = ref.abs().max().item()
    assert (got.double() - ref).abs().max().item() < 1e-4 * scale
    got_g, ref_g = grads_vs_reference(m, reference, x)
    for n, g in got_g.items():
        err = (g.double() - ref_g[n].double()).abs().max().item()
        assert err <= 1e-3 * ref_g[n].abs().max().item() + 1e-6, f"grad {n}: max error {err:.2e}"


@pytest.mark.parametrize("opts", list(CASES.values()), ids=list(CASES))
def test_step_matches_forward(opts):
    check_step_matches_forward(randomize(Mamba2(16, **opts)), 16)


@pytest.mark.parametrize(
    "opts",
    [dict(state=8, head_dim=8), dict(state=4, head_dim=4, groups=2, conv=2)],
    ids=["N8-P8-G1", "N4-P4-G2-K2"],
)
def test_shared_checks(opts):
    torch.manual_seed(0)
    check_causal(randomize(Mamba2(16, **opts)), 16)
    check_gradcheck(randomize(Mamba2(8, **{**opts, "state": 3, "head_dim": 4})), 8)
    check_dtypes(Mamba2(16, **opts), 16)


def test_trains():
    check_trains(lambda h: Mamba2(h, state=16, head_dim=16), hidden=32, steps=80, lr=1e-2)


def test_triton_forward_matches_reference_path():
    """The chunked GLA kernel (interpreted on CPU) gives the layer the same outputs and gradients as the PyTorch
    path: the broadcast B/C, scalar decay and Δ x the layer hands the kernel are accepted."""
    torch.manual_seed(2)
    check_triton_path(randomize(Mamba2(8, state=16, head_dim=8, chunk=16)), 8, seq=20)


def test_init():
    """mamba_ssm: A uniform in [1, 16] per head, softplus(dt_bias) log-uniform in [1e-3, 1e-1], D = 1."""
    torch.manual_seed(0)
    m = Mamba2(256, head_dim=8)  # 64 heads
    A = torch.exp(m.A_log)
    assert A.shape == (64,) and A.min() >= 1.0 and A.max() <= 16.0 and A.std() > 2.0
    dt = F.softplus(m.dt_bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)
    assert abs(dt.log().median().item() - math.log(1e-2)) < 0.8
    assert torch.equal(m.D, torch.ones(64)) and torch.equal(m.norm.weight, torch.ones(512))


def test_parameter_count_state_and_flops():
    """Parameters as mamba_ssm: in d (2 Di + 2 G N + H), conv (Di + 2 G N)(K + 1), A_log/dt_bias/D 3 H,
    norm Di, out Di d."""
    d, N, P, G, K = 32, 16, 8, 2, 4
    m = Mamba2(d, state=N, head_dim=P, groups=G, conv=K)
    Di = 2 * d
    H = Di // P
    p = sum(q.numel() for q in m.parameters())
    assert p == d * (2 * Di + 2 * G * N + H) + (Di + 2 * G * N) * (K + 1) + 3 * H + Di + Di * d
    st = m.init_state(3)
    assert st["conv"].shape == (3, Di + 2 * G * N, K - 1) and st["ssm"].shape == (3, H, N, P)
    assert st["ssm"].dtype == torch.float32
    assert m.state_bytes(1000) == ((Di + 2 * G * N) * (K - 1) + H * N * P) * 4
    assert mamba2_flops(SPEC.complete(dict(state=N, expand=2)), d, p, 100) == 2 * p + 4 * Di * N


def test_spec_and_bad_options():
    assert registry.get("M2") is SPEC and registry.get("ssd") is SPEC and registry.get("MAMBA2") is SPEC
    assert SPEC.letter == "M2" and SPEC.recurrent
    v = lambda opts, hidden: SPEC.validate(SPEC.complete(opts), hidden)  # noqa: E731 (complete opts)
    assert v(SPEC.defaults(), 64) is None
    assert v({"head_dim": 48}, 64) == ("head_dim (48) must divide the inner width expand * hidden = 2 * 64 = 128")
    assert v({"head_dim": 16, "groups": 3}, 64) == (
        "groups (3) must divide the number of heads expand * hidden / head_dim = 8"
    )
    assert SPEC.option("chunk").check(48) == "option 'chunk' must be one of 16, 32, 64, got 48 - did you mean 32 or 64?"
    assert SPEC.option("groups").check(0) == "option 'groups' must be >= 1, got 0"
    assert SPEC.option("head_dim").check(2.5) == "option 'head_dim' takes an integer, got 2.5"
    with pytest.raises(ValueError, match="head_dim \\(64\\) must divide the inner width"):
        Mamba2(16)  # the default head_dim does not fit a tiny model: a clear error, not a crash


def test_float64_step_keeps_float64_state_and_matches_forward():
    torch.manual_seed(0)
    m = Mamba2(24, state=4, head_dim=8, groups=3, inner=48, dt_min=0.05, gate_eps=1e-6).double()
    assert m.d_inner == 48 and m.heads == 6
    x = torch.randn(2, 9, 24, dtype=torch.float64)
    st = m.init_state(2)
    assert st["ssm"].dtype == torch.float64  # like Mamba-1: the model's dtype (at least float32)
    ys = []
    for t in range(9):
        y, st = m.step(x[:, t], st)
        ys.append(y)
    with torch.no_grad():
        assert torch.allclose(torch.stack(ys, 1), m(x), atol=1e-12, rtol=0)


def test_dt_clamp_is_the_definition():
    torch.manual_seed(0)
    m = Mamba2(16, state=4, head_dim=8, dt_min=0.2, dt_max=0.5)
    dt = torch.randn(3, m.heads) * 3
    xbc = torch.randn(3, m.conv_dim)
    delta = (torch.nn.functional.softplus(dt + m.dt_bias)).clamp(0.2, 0.5)
    *_, v, g = m._heads(xbc, dt)
    assert torch.allclose(g, -torch.exp(m.A_log) * delta)


def test_matches_transformers_mamba2_mixer(tmp_path):
    """Against transformers' ``Mamba2Mixer`` (its PyTorch path) with copied weights, configured from a saved and
    reloaded ``Mamba2Config``: outputs and input gradients agree, T = 45 spanning three 16-token chunks."""
    import transformers  # a test dependency (the dev extra)
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    transformers.Mamba2Config(
        hidden_size=32, num_heads=8, head_dim=8, state_size=8, n_groups=2, expand=2, conv_kernel=4, chunk_size=16,
        use_bias=False, use_conv_bias=True, layer_norm_epsilon=1e-5, num_hidden_layers=1,
    ).save_pretrained(tmp_path)  # fmt: skip
    cfg = transformers.Mamba2Config.from_pretrained(tmp_path)
    torch.manual_seed(0)
    theirs = Mamba2Mixer(cfg, layer_idx=0).train()
    ours = Mamba2(
        cfg.hidden_size, state=cfg.state_size, expand=cfg.expand, conv=cfg.conv_kernel, head_dim=cfg.head_dim,
        groups=cfg.n_groups, chunk=cfg.chunk_size, bias=cfg.use_bias, conv_bias=cfg.use_conv_bias,
    )  # fmt: skip
    randomize(ours)
    with torch.no_grad():
        for name in ("in_proj.weight", "out_proj.weight", "A_log", "dt_bias", "D", "norm.weight"):
            theirs.get_parameter(name).copy_(ours.get_parameter(name))
        theirs.conv1d.weight.copy_(ours.conv1d.conv.weight)
        theirs.conv1d.bias.copy_(ours.conv1d.conv.bias)
    x = torch.randn(2, 45, 32)
    xo, xt = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    yo, yt = ours(xo), theirs(xt)
    assert (yo - yt).abs().max().item() <= 1e-4 * yt.abs().max().item()
    w = torch.randn_like(yt)
    (yo * w).sum().backward()
    (yt * w).sum().backward()
    assert (xo.grad - xt.grad).abs().max().item() <= 1e-4 * xt.grad.abs().max().item()
