"""delta_net: against a float64 loop over time written here from the module's weights, plus the shared checks.

The loop below is the definition (Yang et al. 2024), independent of the layer code and of the chunked kernel:
explicit projections, a causal depthwise conv as a sum over taps, SiLU, L2 norm, and per step
``S = (I - beta k k^T) S + beta k v^T``, ``o = K^-1/2 S^T q``, then RMSNorm per head and the output
projection.
It is shared with the gated_delta_net tests (``gated=True`` adds ``alpha = exp(g)`` and the output gate).
"""

from __future__ import annotations

import math

import pytest
import torch

from hybriddsl.kernels.dispatch import backend
from hybriddsl.kernels.testing import TOLERANCE, assert_close
from hybriddsl.layers.delta_net import SPEC, DeltaNet
from tests.layers.checks import (
    check_causal,
    check_dtypes,
    check_gradcheck,
    check_step_matches_forward,
    check_trains,
)


@pytest.fixture(autouse=True)
def one_thread():
    """These shapes are tiny: one thread is fastest, and spares CI (and busy machines) OpenMP contention."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def loop_reference(m, x: torch.Tensor, gated: bool = False) -> torch.Tensor:
    """y [B, T, hidden] in float64 from m's raw weights, one time step at a time."""
    x = x.double()
    b, t_len, _ = x.shape
    nh, dk, dv = m.heads, m.head_dim, m.head_v_dim

    def lin(layer, z):
        y = z @ layer.weight.double().T
        return y + layer.bias.double() if layer.bias is not None else y

    def causal_conv(conv, z):  # y_t = sum_j w_j z_{t - (size - 1) + j}: taps on the current and past inputs
        w = conv.conv.weight.double()[:, 0, :]
        size = w.shape[1]
        out = torch.zeros_like(z)
        for t in range(t_len):
            for j in range(size):
                s = t - (size - 1) + j
                if s >= 0:
                    out[:, t] += w[:, j] * z[:, s]
        return out

    def silu(z):
        return z / (1 + torch.exp(-z))

    q, k, v = lin(m.q_proj, x), lin(m.k_proj, x), lin(m.v_proj, x)
    if m.conv >= 1:
        q, k, v = causal_conv(m.q_conv, q), causal_conv(m.k_conv, k), causal_conv(m.v_conv, v)
    q, k, v = silu(q).view(b, t_len, nh, dk), silu(k).view(b, t_len, nh, dk), silu(v).view(b, t_len, nh, dv)
    q = q / torch.sqrt((q * q).sum(-1, keepdim=True) + 1e-6)
    k = k / torch.sqrt((k * k).sum(-1, keepdim=True) + 1e-6)
    beta = 1 / (1 + torch.exp(-lin(m.b_proj, x)))  # [B, T, H]
    if gated:
        a = lin(m.a_proj, x) + m.dt_bias.double()
        alpha = torch.exp(-torch.exp(m.A_log.double()) * torch.log1p(torch.exp(a)))
    else:
        alpha = torch.ones_like(beta)

    o = torch.zeros(b, t_len, nh, dv, dtype=torch.float64)
    for bi in range(b):
        for h in range(nh):
            s = torch.zeros(dk, dv, dtype=torch.float64)
            for t in range(t_len):
                kt, bt = k[bi, t, h], beta[bi, t, h]
                s = alpha[bi, t, h] * (torch.eye(dk, dtype=torch.float64) - bt * torch.outer(kt, kt)) @ s
                s = s + bt * torch.outer(kt, v[bi, t, h])
                o[bi, t, h] = s.T @ q[bi, t, h] / math.sqrt(dk)

    o = o / torch.sqrt(o.pow(2).mean(-1, keepdim=True) + m.o_norm.eps) * m.o_norm.weight.double()
    if gated:
        o = o * silu(lin(m.g_proj, x).view(b, t_len, nh, dv))
    return lin(m.o_proj, o.reshape(b, t_len, nh * dv))


def randomize_norm(m) -> None:
    """Give the output norm weight values other than its init of ones, so that the test sees them."""
    with torch.no_grad():
        m.o_norm.weight.uniform_(0.5, 1.5)


def check_triton_matches_reference(m) -> None:
    """The layer on the Triton kernels (GPU, or the interpreter on CPU) against the PyTorch path: the output and
    the gradients of the input and of every parameter, float32, two chunks of 16 with a ragged end."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    m = m.to(dev)
    x = torch.randn(2, 20, m.hidden, device=dev, requires_grad=True)
    got = {}
    ct = torch.randn(2, 20, m.hidden, device=dev)  # one random cotangent for both paths
    for name in ("reference", "triton"):
        with backend(name):
            m.zero_grad()
            x.grad = None
            y = m(x)
            y.backward(ct)
            got[name] = {"out": y.detach(), "dx": x.grad.clone()}
            got[name].update({n: p.grad.clone() for n, p in m.named_parameters()})
    tol = TOLERANCE[torch.float32]
    for key, ref in got["reference"].items():
        assert_close(key, ref, got["triton"][key], tol["out"] if key == "out" else tol["grad"])


CASES = {
    "H4-D8-conv4-C16": dict(heads=4, chunk=16),
    "H2-D16-conv4-C64": dict(heads=2),
    "H4-D6-headdim-conv2-C16": dict(heads=4, head_dim=6, conv=2, chunk=16),
    "H1-D32-noconv-C16": dict(heads=1, conv=0, chunk=16),
    "H4-D8-conv1-bias-C32": dict(heads=4, conv=1, bias=True, chunk=32),
}


@pytest.mark.parametrize("opts", list(CASES.values()), ids=list(CASES))
def test_forward_matches_loop_reference(opts):
    torch.manual_seed(0)
    m = DeltaNet(32, **opts)
    randomize_norm(m)
    x = torch.randn(2, 37, 32)  # 37 steps: several chunks of 16 and a ragged last one
    with torch.no_grad():
        got = m(x)
    err = (got.double() - loop_reference(m, x)).abs().max().item()
    assert err < 2e-5, f"forward vs loop reference: max error {err:.2e}"


@pytest.mark.parametrize("opts", list(CASES.values()), ids=list(CASES))
def test_step_matches_forward(opts):
    torch.manual_seed(0)
    check_step_matches_forward(DeltaNet(32, **opts), 32, seq=37)


@pytest.mark.parametrize("opts", [dict(heads=4, chunk=16), dict(heads=2, conv=0, chunk=16)], ids=["conv4", "noconv"])
def test_causal(opts):
    torch.manual_seed(0)
    check_causal(DeltaNet(32, **opts), 32, seq=40)


@pytest.mark.parametrize(
    "opts",
    [dict(heads=2, conv=2, chunk=16), dict(heads=2, conv=0, bias=True, chunk=16)],
    ids=["conv2", "noconv-bias"],
)
def test_gradcheck(opts):
    torch.manual_seed(0)
    check_gradcheck(DeltaNet(8, **opts), 8, seq=5)


def test_dtypes():
    torch.manual_seed(0)
    check_dtypes(DeltaNet(32, heads=4, chunk=16), 32, seq=40)


def test_trains():
    check_trains(lambda h: DeltaNet(h, heads=2, chunk=16), hidden=32, steps=150)


def test_triton_path_matches_reference():
    torch.manual_seed(0)
    check_triton_matches_reference(DeltaNet(16, heads=2, chunk=16))


def test_parameter_count_matches_layout():
    hidden, heads, conv = 48, 4, 4
    m = DeltaNet(hidden, heads=heads, conv=conv)
    d = hidden // heads
    kd = vd = heads * d
    # q, k, v, beta and output projections; three depthwise convs without bias; one norm weight per head width
    want = hidden * (2 * kd + vd) + hidden * heads + vd * hidden + conv * (2 * kd + vd) + d
    assert sum(p.numel() for p in m.parameters()) == want


def test_state_bytes_counts_init_state():
    m = DeltaNet(32, heads=4, conv=4)
    st = m.init_state(3)
    assert st["S"].dtype == torch.float32 and st["S"].shape == (3, 4, 8, 8)
    per_seq = sum(t.numel() * t.element_size() for t in st.values()) // 3
    assert m.state_bytes(1000, dtype_bytes=4) == per_seq  # float32 module: every buffer has 4-byte entries
    assert m.state_bytes(1) == m.state_bytes(10**6)  # recurrent: independent of the length


@pytest.mark.parametrize(
    "opts,hidden,needle",
    [
        (dict(heads=3), 32, "heads (3) must divide hidden (32)"),
        (dict(heads=4, chunk=24), 32, "chunk must be a power of two >= 16"),
    ],
    ids=["heads-not-dividing", "chunk-not-pow2"],
)
def test_validate_rejects(opts, hidden, needle):
    msg = SPEC.validate({**SPEC.defaults(), **opts}, hidden)
    assert msg is not None and needle in msg
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        DeltaNet(hidden, **opts)


def test_validate_accepts():
    assert SPEC.validate(SPEC.defaults(), 32) is None
    assert SPEC.validate({**SPEC.defaults(), "heads": 3, "head_dim": 8}, 32) is None  # head_dim frees heads


@pytest.mark.parametrize(
    "name,value,needle",
    [
        ("heads", 0, ">= 1"),
        ("conv", -1, ">= 0"),
        ("chunk", 8, ">= 16"),
        ("heads", "4", "integer"),
        ("bias", 1, "true or false"),
    ],
    ids=["heads0", "conv-neg", "chunk8", "heads-str", "bias-int"],
)
def test_option_check(name, value, needle):
    msg = SPEC.option(name).check(value)
    assert msg is not None and needle in msg and name in msg


def test_names():
    from hybriddsl import registry

    for n in ("delta_net", "D", "delta", "DELTA"):
        assert registry.get(n) is SPEC or registry.get(n).name == "delta_net"
    assert SPEC.recurrent and SPEC.letter == "D"
