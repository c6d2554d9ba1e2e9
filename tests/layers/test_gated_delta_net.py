"""gated_delta_net: against the float64 loop over time of test_delta_net (with ``alpha_t = exp(g_t)`` and the
output gate), the GDN init of A and dt, plus the shared checks."""

from __future__ import annotations

import math

import pytest
import torch

from hybriddsl.layers.gated_delta_net import SPEC, GatedDeltaNet
from tests.layers.checks import (
    check_causal,
    check_dtypes,
    check_gradcheck,
    check_step_matches_forward,
    check_trains,
)
from tests.layers.test_delta_net import (  # noqa: F401 (one_thread is an autouse fixture)
    check_triton_matches_reference,
    loop_reference,
    one_thread,
    randomize_norm,
)

CASES = {
    "H4-D8-V8-conv4-C16": dict(heads=4, chunk=16),
    "H2-D16-V32-expand2-C16": dict(heads=2, expand_v=2.0, chunk=16),
    "H4-D6-V9-headdim-expand1.5-conv2-C64": dict(heads=4, head_dim=6, expand_v=1.5, conv=2),
    "H1-D32-V32-noconv-bias-C32": dict(heads=1, conv=0, bias=True, chunk=32),
}


@pytest.mark.parametrize("opts", list(CASES.values()), ids=list(CASES))
def test_forward_matches_loop_reference(opts):
    torch.manual_seed(0)
    m = GatedDeltaNet(32, **opts)
    randomize_norm(m)
    x = torch.randn(2, 37, 32)
    with torch.no_grad():
        got = m(x)
    err = (got.double() - loop_reference(m, x, gated=True)).abs().max().item()
    assert err < 2e-5, f"forward vs loop reference: max error {err:.2e}"


def test_decay_is_used():
    """Strong decay (large A) changes the output; the loop reference follows it (guards against a dropped g)."""
    torch.manual_seed(0)
    m = GatedDeltaNet(32, heads=4, chunk=16)
    x = torch.randn(1, 40, 32)
    with torch.no_grad():
        before = m(x)
        m.A_log.fill_(math.log(200.0))  # alpha ~ exp(-200 softplus(.)): the memory is nearly wiped each step
        after = m(x)
    assert (before - after).abs().max() > 1e-2
    assert (after.double() - loop_reference(m, x, gated=True)).abs().max() < 2e-5


@pytest.mark.parametrize("opts", list(CASES.values()), ids=list(CASES))
def test_step_matches_forward(opts):
    torch.manual_seed(0)
    check_step_matches_forward(GatedDeltaNet(32, **opts), 32, seq=37)


@pytest.mark.parametrize("opts", [dict(heads=4, chunk=16), dict(heads=2, conv=0, chunk=16)], ids=["conv4", "noconv"])
def test_causal(opts):
    torch.manual_seed(0)
    check_causal(GatedDeltaNet(32, **opts), 32, seq=40)


@pytest.mark.parametrize(
    "opts",
    [dict(heads=2, conv=2, chunk=16), dict(heads=2, conv=0, expand_v=2.0, bias=True, chunk=16)],
    ids=["conv2", "noconv-expand2-bias"],
)
def test_gradcheck(opts):
    torch.manual_seed(0)
    check_gradcheck(GatedDeltaNet(8, **opts), 8, seq=5)


def test_dtypes():
    torch.manual_seed(0)
    check_dtypes(GatedDeltaNet(32, heads=4, expand_v=2.0, chunk=16), 32, seq=40)


def test_trains():
    check_trains(lambda h: GatedDeltaNet(h, heads=2, chunk=16), hidden=32, steps=150)


def test_triton_path_matches_reference():
    torch.manual_seed(0)
    check_triton_matches_reference(GatedDeltaNet(16, heads=2, expand_v=2.0, chunk=16))


def test_init_follows_reference():
    """A = exp(A_log) ~ U[0, 16]; softplus(dt_bias) = dt in [1e-3, 1e-1] (Mamba's dt init, floor 1e-4)."""
    torch.manual_seed(0)
    m = GatedDeltaNet(256, heads=256, head_dim=1)
    a = m.A_log.detach().exp()
    assert a.min() >= 0 and a.max() <= 16 and a.mean().sub(8).abs() < 1.5
    dt = torch.nn.functional.softplus(m.dt_bias.detach())
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)
    # log-uniform: about half of the heads below the geometric mean 1e-2
    assert 0.3 < (dt < 1e-2).float().mean() < 0.7


def test_parameter_count_matches_layout():
    hidden, heads, conv, ev = 48, 4, 4, 2.0
    m = GatedDeltaNet(hidden, heads=heads, conv=conv, expand_v=ev)
    d = hidden // heads
    kd, vd = heads * d, int(heads * d * ev)
    # q, k, v, gate, output; beta and decay projections (one per head); A_log, dt_bias; convs; norm weight
    want = hidden * (2 * kd + 2 * vd) + vd * hidden + 2 * hidden * heads + 2 * heads
    want += conv * (2 * kd + vd) + int(d * ev)
    assert sum(p.numel() for p in m.parameters()) == want


def test_value_heads_step_matches_forward_and_state():
    """v_heads > heads (Qwen3-Next; the comparison with transformers is in tests/interop)."""
    torch.manual_seed(0)
    m = GatedDeltaNet(32, heads=2, head_dim=8, v_heads=4, expand_v=1.5, chunk=16)
    check_step_matches_forward(m, 32, seq=37)
    st = m.init_state(2)
    assert st["S"].shape == (2, 4, 8, 12) and st["conv_v"].shape == (2, 48, 3)
    assert m.state_bytes(64, dtype_bytes=4) == sum(t.numel() * t.element_size() for t in st.values()) // 2


def test_state_bytes_counts_init_state():
    m = GatedDeltaNet(32, heads=4, expand_v=2.0)
    st = m.init_state(2)
    assert st["S"].dtype == torch.float32 and st["S"].shape == (2, 4, 8, 16)
    assert m.state_bytes(64, dtype_bytes=4) == sum(t.numel() * t.element_size() for t in st.values()) // 2


def test_flops_grow_with_value_width():
    base = {**SPEC.defaults(), "heads": 4}
    wide = {**base, "expand_v": 2.0}
    # same parameter count passed in: only the state-update term differs, by 7 * heads * K * (V' - V)
    assert SPEC.flops(wide, 64, 1000, 128) - SPEC.flops(base, 64, 1000, 128) == 7 * 4 * 16 * 16


@pytest.mark.parametrize(
    "opts,hidden,needle",
    [
        (dict(heads=6), 32, "heads (6) must divide hidden (32)"),
        (dict(heads=4, head_dim=5, expand_v=1.5), 32, "expand_v (1.5) times head_dim (5)"),
        (dict(heads=4, chunk=48), 32, "chunk must be a power of two >= 16"),
        (dict(heads=4, v_heads=6), 32, "v_heads (6) must be a multiple of heads (4)"),
    ],
    ids=["heads-not-dividing", "expand_v-fractional", "chunk-not-pow2", "v_heads-not-multiple"],
)
def test_validate_rejects(opts, hidden, needle):
    msg = SPEC.validate({**SPEC.defaults(), **opts}, hidden)
    assert msg is not None and needle in msg
    with pytest.raises(ValueError) as e:
        GatedDeltaNet(hidden, **opts)
    assert needle in str(e.value)


def test_validate_accepts():
    assert SPEC.validate(SPEC.defaults(), 64) is None
    assert SPEC.validate({**SPEC.defaults(), "heads": 6, "head_dim": 16, "expand_v": 2}, 64) is None


@pytest.mark.parametrize(
    "name,value,needle",
    [("expand_v", -1.0, ">= 0"), ("expand_v", "2", "number"), ("heads", 2.5, "integer"), ("conv", -2, ">= 0")],
    ids=["expand_v-neg", "expand_v-str", "heads-float", "conv-neg"],
)
def test_option_check(name, value, needle):
    msg = SPEC.option(name).check(value)
    assert msg is not None and needle in msg and name in msg


def test_names():
    from hybriddsl import registry

    for n in ("gated_delta_net", "GD", "gdn", "Gdn"):
        assert registry.get(n).name == "gated_delta_net"
    assert SPEC.recurrent and SPEC.letter == "GD"
