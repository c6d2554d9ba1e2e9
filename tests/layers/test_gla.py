"""gla: against a float64 loop over time written here from the module's raw weights, plus the shared checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hybriddsl import registry
from hybriddsl.kernels.testing import TOLERANCE, assert_close
from hybriddsl.layers.gla import GLA, SPEC, gla_flops
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


def reference(m: GLA, x: torch.Tensor) -> torch.Tensor:
    """The paper's recurrence in float64, one token at a time: S_t = diag(exp g_t) S_{t-1} + k_t v_t^T."""
    x = x.double()
    b, t, _ = x.shape
    H, dk, dv = m.heads, m.dk, m.dv

    def lin(layer, z):
        y = z @ layer.weight.double().T
        return y + layer.bias.double() if layer.bias is not None else y

    q = lin(m.q_proj, x).view(b, t, H, dk)
    k = lin(m.k_proj, x).view(b, t, H, dk)
    v = lin(m.v_proj, x).view(b, t, H, dv)
    gate = lin(m.g_proj, x)
    g = F.logsigmoid(lin(m.gk_up, lin(m.gk_down, x))).view(b, t, H, dk) / m.gate_norm
    S = torch.zeros(b, H, dk, dv, dtype=torch.float64)
    out = []
    for i in range(t):
        S = g[:, i].exp()[..., None] * S + k[:, i, :, :, None] * v[:, i, :, None, :]
        out.append(torch.einsum("bhk,bhkv->bhv", q[:, i], S) * dk**-0.5)
    o = torch.stack(out, 1)  # [b, t, H, dv]
    o = o / torch.sqrt(o.pow(2).mean(-1, keepdim=True) + m.norm.eps)  # RMSNorm per head
    o = o.reshape(b, t, H * dv) * m.norm.weight.double() * F.silu(gate)
    return lin(m.out_proj, o)


CASES = {
    "H4-defaults": dict(heads=4),
    "H2-ek1-ev2": dict(heads=2, expand_k=1.0, expand_v=2.0),
    "H1-rank4-chunk16": dict(heads=1, rank=4, chunk=16),
    "H4-ek0.25-gn4": dict(heads=4, expand_k=0.25, gate_norm=4.0),
}


@pytest.mark.parametrize("opts", list(CASES.values()), ids=list(CASES))
def test_matches_loop_reference(opts):
    torch.manual_seed(0)
    m = randomize(GLA(32, **opts))
    x = torch.randn(2, 41, 32)
    with torch.no_grad():
        got = m(x)
    ref = reference(m, x)
    err = (got.double() - ref).abs().max().item()
    assert err < 1e-4 * ref.abs().max().item(), f"max error {err:.2e}"


@pytest.mark.parametrize("opts", list(CASES.values()), ids=list(CASES))
def test_step_matches_forward(opts):
    check_step_matches_forward(randomize(GLA(32, **opts)), 32)


@pytest.mark.parametrize(
    "opts", [dict(heads=4), dict(heads=2, expand_k=1.0, rank=4)], ids=["H4-defaults", "H2-ek1-rank4"]
)
def test_shared_checks(opts):
    check_causal(randomize(GLA(16, **opts)), 16)
    check_dtypes(GLA(16, **opts), 16)


@pytest.mark.parametrize(
    "opts", [dict(heads=2), dict(heads=1, expand_k=1.0, rank=4)], ids=["H2-defaults", "H1-ek1-rank4"]
)
def test_gradcheck(opts):
    torch.manual_seed(0)
    check_gradcheck(randomize(GLA(8, **opts)), 8)


def test_gradients_match_reference():
    """Gradients of the real (float32 kernel) forward equal those of the float64 loop reference."""
    torch.manual_seed(0)
    got, ref = grads_vs_reference(randomize(GLA(16, heads=2, rank=4)), reference, torch.randn(2, 19, 16))
    for n in got:
        assert_close(n, ref[n], got[n], TOLERANCE[torch.float32]["grad"])


def test_triton_path_matches_torch_path():
    torch.manual_seed(0)
    check_triton_path(randomize(GLA(32, heads=2, chunk=16)), 32)


def test_trains():
    # Recalling the token two back needs the decays to separate lags (GLA has no token shift or conv): with
    # gate_norm 1 the decays can get strong fast. The bar 0.7 x log(vocab) still needs real memory (anything
    # below log(vocab) does: only the layer sees earlier tokens).
    check_trains(
        lambda h: GLA(h, heads=4, expand_k=1.0, expand_v=2.0, gate_norm=1.0),
        hidden=32,
        seq=8,
        steps=100,
        lr=1e-2,
        ratio=0.7,
    )


def test_parameter_count_and_state():
    """Parameters: q, k (d x kd), v, gate (d x vd), decay d r + r kd + kd, out vd d, norm vd (fla's layout)."""
    d, H, r = 32, 4, 8
    m = GLA(d, heads=H, expand_k=0.5, expand_v=1.0, rank=r)
    kd, vd = 16, 32
    assert sum(p.numel() for p in m.parameters()) == 2 * d * kd + 2 * d * vd + d * r + r * kd + kd + vd * d + vd
    st = m.init_state(3)
    assert st["S"].shape == (3, H, kd // H, vd // H) and st["S"].dtype == torch.float32
    assert m.state_bytes(1000) == kd * vd // H * 4
    p = sum(q.numel() for q in m.parameters())
    assert gla_flops(SPEC.complete(dict(heads=H, expand_k=0.5, expand_v=1.0)), d, p, 100) == 2 * p + 4 * kd * vd // H


def test_initial_decay_is_long_memory():
    """With gate_norm 16 the initial per-step decay exp(logsigmoid(.)/16) sits near 1 (fla's intent)."""
    torch.manual_seed(0)
    m = GLA(64)
    g = F.logsigmoid(m.gk_up(m.gk_down(torch.randn(4, 64)))) / m.gate_norm
    assert (g.exp() > 0.9).all()


def test_spec_and_bad_options():
    assert registry.get("G") is SPEC and registry.get("gla") is SPEC and registry.get("GLA") is SPEC
    assert SPEC.letter == "G" and SPEC.recurrent
    v = lambda opts, hidden: SPEC.validate(SPEC.complete(opts), hidden)  # noqa: E731 (complete opts)
    assert v(SPEC.defaults(), 64) is None
    assert v({"heads": 3}, 64) == "heads (3) must divide the key width expand_k * hidden = 0.5 * 64 = 32"
    assert v({"heads": 4, "expand_k": 1.0, "expand_v": 0.75}, 20) == (
        "heads (4) must divide the value width expand_v * hidden = 0.75 * 20 = 15"
    )
    assert SPEC.option("chunk").check(48) == "option 'chunk' must be one of 16, 32, 64, got 48 - did you mean 32 or 64?"
    assert SPEC.option("rank").check(0) == "option 'rank' must be >= 1, got 0"
    assert SPEC.option("heads").check(2.5) == "option 'heads' takes an integer, got 2.5"
    with pytest.raises(ValueError, match="must divide the key width"):
        GLA(64, heads=3)
