"""gru: against the GRU equations of Cho et al. 2014 as a float64 loop over time, plus the shared checks."""

from __future__ import annotations

import pytest
import torch

from hybriddsl.layers.gru import GRU, SPEC
from tests.layers.checks import (
    check_causal,
    check_dtypes,
    check_gradcheck,
    check_step_matches_forward,
    check_trains,
)


def reference(m: GRU, x: torch.Tensor) -> torch.Tensor:
    """h_t = (1 - z) n + z h_{t-1} with r, z, n from the module's weights; h_0 = 0; float64."""
    x = x.double()
    r = m.rnn
    s = m.size
    w_i, w_h = r.weight_ih_l0.double(), r.weight_hh_l0.double()
    b_i = r.bias_ih_l0.double() if r.bias else torch.zeros(3 * s, dtype=torch.float64)
    b_h = r.bias_hh_l0.double() if r.bias else torch.zeros(3 * s, dtype=torch.float64)
    h = torch.zeros(x.shape[0], s, dtype=torch.float64)
    ys = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        rt = torch.sigmoid(xt @ w_i[:s].T + b_i[:s] + h @ w_h[:s].T + b_h[:s])
        zt = torch.sigmoid(xt @ w_i[s : 2 * s].T + b_i[s : 2 * s] + h @ w_h[s : 2 * s].T + b_h[s : 2 * s])
        nt = torch.tanh(xt @ w_i[2 * s :].T + b_i[2 * s :] + rt * (h @ w_h[2 * s :].T + b_h[2 * s :]))
        h = (1 - zt) * nt + zt * h
        ys.append(h)
    y = torch.stack(ys, 1)
    if m.out_proj is not None:
        y = y @ m.out_proj.weight.double().T + (m.out_proj.bias.double() if m.out_proj.bias is not None else 0)
    return y


CASES = {"S16": dict(), "S24-proj": dict(size=24), "S8-proj-nobias": dict(size=8, bias=False)}


@pytest.mark.parametrize("opts", list(CASES.values()), ids=list(CASES))
def test_matches_loop_reference(opts):
    torch.manual_seed(0)
    m = GRU(16, **opts)
    x = torch.randn(2, 11, 16)
    with torch.no_grad():
        assert (m(x).double() - reference(m, x)).abs().max() < 1e-5


@pytest.mark.parametrize("opts", list(CASES.values()), ids=list(CASES))
def test_step_and_shared_checks(opts):
    check_step_matches_forward(GRU(16, **opts), 16)
    check_causal(GRU(16, **opts), 16)
    check_gradcheck(GRU(6, **{k: (5 if k == "size" else v) for k, v in opts.items()}), 6)
    check_dtypes(GRU(16, **opts), 16)


def test_param_count_and_state():
    h, s = 16, 24
    m = GRU(h, size=s)
    # three gates, each W_i [s, h], W_h [s, s], two biases; plus the output projection [h, s] + bias
    assert sum(p.numel() for p in m.parameters()) == 3 * (s * h + s * s + 2 * s) + h * s + h
    assert m.state_bytes(1000) == s * 4  # float32 h, independent of the length
    assert m.init_state(3, dtype=torch.bfloat16)["h"].dtype == torch.float32
    assert SPEC.recurrent and SPEC.name == "gru"


def test_bad_options():
    assert SPEC.option("size").check(0) == "option 'size' must be >= 1, got 0"
    assert SPEC.option("bias").check(1) == "option 'bias' takes true or false, got 1"


def test_trains():
    check_trains(lambda h: GRU(h), hidden=32, steps=100, lr=1e-2)
