"""mamba (Mamba-1): against a float64 loop over time written here from the module's raw weights (the paper's
Alg. 2 with an explicit causal conv), plus the shared checks, the paper's init and parameter count."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hybriddsl import registry
from hybriddsl.layers.mamba import SPEC, Mamba, mamba_flops
from tests.layers.checks import (
    check_causal,
    check_dtypes,
    check_gradcheck,
    check_step_matches_forward,
    check_trains,
    check_triton_path,
    grads_vs_reference,
    randomize,
    run_steps,
)


def lin(layer: torch.nn.Linear, z: torch.Tensor, bias: bool = True) -> torch.Tensor:
    y = z @ layer.weight.double().T
    return y + layer.bias.double() if bias and layer.bias is not None else y


def causal_conv(conv: torch.nn.Conv1d, u: torch.Tensor) -> torch.Tensor:
    """out[t, c] = b[c] + sum_j w[c, j] u[t - (K-1) + j, c], with u = 0 before the start. u: [b, T, C]."""
    w = conv.weight.double()[:, 0, :]  # [C, K]
    K, T = w.shape[1], u.shape[1]
    up = F.pad(u, (0, 0, K - 1, 0))
    out = sum(w[:, j] * up[:, j : j + T] for j in range(K))
    return out + conv.bias.double() if conv.bias is not None else out


def reference(m: Mamba, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba-1 in float64, one token at a time. Returns (y [b, T, hidden], final ssm state [b, D_in, N])."""
    x = x.double()
    b, T, _ = x.shape
    Di, N, R = m.d_inner, m.state, m.dt_rank
    xz = lin(m.in_proj, x)
    u, z = xz[..., :Di], xz[..., Di:]
    u = F.silu(causal_conv(m.conv1d.conv, u))
    xdbl = lin(m.x_proj, u)
    dt_low, B, C = xdbl[..., :R], xdbl[..., R : R + N], xdbl[..., R + N :]
    delta = F.softplus(lin(m.dt_proj, dt_low))  # with its bias
    A = -torch.exp(m.A_log.double())
    h = torch.zeros(b, Di, N, dtype=torch.float64)
    ys = []
    for t in range(T):
        dA = torch.exp(delta[:, t, :, None] * A)
        h = dA * h + (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1) + m.D.double() * u[:, t])
    y = torch.stack(ys, 1) * F.silu(z)
    return lin(m.out_proj, y), h


CASES = {
    "N16-E2-K4-defaults": dict(),
    "N8-E1-K2-R3": dict(state=8, expand=1, conv=2, dt_rank=3),
    "N4-E3-K3-bias-noconvbias": dict(state=4, expand=3, conv=3, bias=True, conv_bias=False),
    "N2-E2-K1": dict(state=2, conv=1),
}


@pytest.mark.parametrize("opts", list(CASES.values()), ids=list(CASES))
def test_matches_loop_reference(opts):
    torch.manual_seed(0)
    m = randomize(Mamba(24, **opts))
    x = torch.randn(2, 45, 24)
    with torch.no_grad():
        got = m(x)
        steps, h_steps = None, None
        st = m.init_state(2)
        ys = []
        for t in range(x.shape[1]):
            y, st = m.step(x[:, t], st)
            ys.append(y)
        steps, h_steps = torch.stack(ys, 1), st["ssm"]
    ref, h_ref = reference(m, x)
    scale = ref.abs().max().item()
    err = (got.double() - ref).abs().max().item()
    assert err < 1e-4 * scale, f"forward max error {err:.2e} (scale {scale:.2e})"
    err = (steps.double() - ref).abs().max().item()
    assert err < 1e-4 * scale, f"step max error {err:.2e}"
    err = (h_steps.double() - h_ref).abs().max().item()
    assert err < 1e-4 * h_ref.abs().max().item(), f"final state max error {err:.2e}"


def test_gradients_match_loop_reference():
    """Autograd through the layer (float32 kernels) equals autograd through the float64 loop."""
    torch.manual_seed(1)
    got, ref = grads_vs_reference(randomize(Mamba(16, state=4, dt_rank=2)), reference, torch.randn(2, 19, 16))
    for n, g in got.items():
        err = (g.double() - ref[n].double()).abs().max().item()
        assert err <= 1e-3 * ref[n].abs().max().item() + 1e-6, f"grad {n}: max error {err:.2e}"


@pytest.mark.parametrize("opts", list(CASES.values()), ids=list(CASES))
def test_step_matches_forward(opts):
    check_step_matches_forward(randomize(Mamba(16, **opts)), 16)


@pytest.mark.parametrize("opts", [dict(), dict(state=4, expand=1, conv=2)], ids=["N16-E2-K4", "N4-E1-K2"])
def test_shared_checks(opts):
    torch.manual_seed(0)
    check_causal(randomize(Mamba(16, **opts)), 16)
    check_gradcheck(randomize(Mamba(6, **{**opts, "state": 3})), 6)
    check_dtypes(Mamba(16, **opts), 16)


def test_trains():
    check_trains(lambda h: Mamba(h, state=8), hidden=32, steps=80, lr=1e-2)


def test_triton_forward_matches_reference_path():
    """The fused selective-scan kernel (interpreted on CPU) gives the layer the same outputs and gradients as the
    PyTorch path: shapes, strides and dtypes the layer hands the kernel are accepted."""
    torch.manual_seed(2)
    check_triton_path(randomize(Mamba(8, state=4, expand=1)), 8, seq=9)


def test_paper_init():
    """S4D-real A, D = 1, dt_proj weight in ±dt_rank^-0.5, softplus(dt bias) log-uniform in [1e-3, 1e-1]."""
    torch.manual_seed(0)
    m = Mamba(64, state=16)
    assert m.dt_rank == 4
    assert torch.allclose(-torch.exp(m.A_log), -torch.arange(1, 17.0).expand(128, 16))
    assert torch.equal(m.D, torch.ones(128))
    assert m.dt_proj.weight.abs().max() <= 4**-0.5
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)
    # log-uniform: the median of log dt sits near the middle of [log 1e-3, log 1e-1]
    assert abs(dt.log().median().item() - math.log(1e-2)) < 0.6
    assert m.in_proj.bias is None and m.out_proj.bias is None and m.x_proj.bias is None


def test_parameter_count_state_and_flops():
    """Parameters as mamba_ssm: in 2 d Di, conv Di (K + 1), x_proj Di (R + 2N), dt_proj R Di + Di, A_log Di N,
    D Di, out Di d."""
    d, N, K = 32, 16, 4
    m = Mamba(d, state=N, conv=K)
    Di, R = 2 * d, math.ceil(d / 16)
    p = sum(q.numel() for q in m.parameters())
    assert p == 2 * d * Di + Di * (K + 1) + Di * (R + 2 * N) + R * Di + Di + Di * N + Di + Di * d
    st = m.init_state(3)
    assert st["conv"].shape == (3, Di, K - 1) and st["ssm"].shape == (3, Di, N)
    assert st["ssm"].dtype == torch.float32
    assert m.state_bytes(1000) == (Di * (K - 1) + Di * N) * 4
    assert mamba_flops(SPEC.complete(dict(state=N, expand=2)), d, p, 100) == 2 * p + 9 * Di * N


def test_state_continues_across_calls():
    """Steps after a prefix continue the same sequence as one forward over the whole of it."""
    torch.manual_seed(3)
    m = randomize(Mamba(16, state=4)).eval()
    x = torch.randn(2, 12, 16)
    with torch.no_grad():
        full = m(x)
        part = run_steps(m, x[:, :7])
    assert torch.allclose(full[:, :7], part, atol=1e-5)


def test_spec_and_bad_options():
    assert registry.get("M") is SPEC and registry.get("ssm") is SPEC and registry.get("Mamba") is SPEC
    assert SPEC.letter == "M" and SPEC.recurrent
    assert SPEC.validate(SPEC.defaults(), 64) is None
    assert (
        SPEC.validate(SPEC.complete({"dt_rank": 0}), 64)
        == "dt_rank must be >= 1 (or unset for ceil(hidden / 16)), got 0"
    )
    assert SPEC.validate(SPEC.complete({"state": 0}), 64) == "state must be >= 1, got 0"
    assert SPEC.option("expand").check(1.5) == "option 'expand' takes an integer, got 1.5"
    assert SPEC.option("conv").check(0) == "option 'conv' must be >= 1, got 0"
    assert SPEC.option("dt_rank").check(None) is None
    with pytest.raises(ValueError, match="option .state. must be >= 1"):
        Mamba(16, state=0)


def test_bc_norm_is_rmsnorm_of_dt_b_c():
    """Jamba's variant: RMSNorm (own weights) on the low-rank Δ input, on B and on C before the scan."""
    torch.manual_seed(0)
    m = Mamba(16, state=4, dt_rank=3, bc_norm=True, bc_norm_eps=1e-5)
    with torch.no_grad():
        for n in (m.dt_norm, m.b_norm, m.c_norm):
            n.weight.normal_()
    u = torch.randn(2, 5, m.d_inner)
    dt_low, B, C = m.x_proj(u).split([3, 4, 4], -1)

    def rms(t, w):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-5) * w

    d, b, c = m._ssm_inputs(u)
    assert torch.allclose(d, rms(dt_low, m.dt_norm.weight) @ m.dt_proj.weight.T, atol=1e-6)
    assert torch.allclose(b, rms(B, m.b_norm.weight), atol=1e-6)
    assert torch.allclose(c, rms(C, m.c_norm.weight), atol=1e-6)
    check_step_matches_forward(m, 16)
