"""griffin: the recurrent block against a float64 loop over time written here from the module's raw weights
(De et al. 2024, eq. 1-4), plus the shared checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hybriddsl import registry
from hybriddsl.kernels.testing import TOLERANCE, assert_close
from hybriddsl.layers.griffin import SPEC, GriffinBlock, rglru_coeffs
from hybriddsl.layers.rglru_gates import rglru_scan_coeffs
from tests.layers.checks import (
    check_causal,
    check_dtypes,
    check_gradcheck,
    check_step_matches_forward,
    check_trains,
    check_triton_path,
    grads_vs_reference,
)
from tests.layers.checks import randomize as randomize_all


def randomize(m: GriffinBlock, std: float = 0.3) -> GriffinBlock:
    """Every weight and bias off its initial value; Λ is kept (it sets the decays)."""
    return randomize_all(m, std, keep=("lam",))


def reference(m: GriffinBlock, x: torch.Tensor) -> torch.Tensor:
    """The block in float64, token by token: an explicit conv window and h_t = a_t h_{t-1} + sqrt(1-a_t^2) i_t z_t,
    with a_t = sigmoid(Λ)^(c r_t) taken literally (a power, not the log-space form), c = 8."""
    x = x.double()
    b, t, _ = x.shape
    P = {n: p.double() for n, p in m.named_parameters()}

    def lin(name, z):
        return z @ P[f"{name}.weight"].T + P[f"{name}.bias"]

    y = F.gelu(lin("in_y", x))
    u = lin("in_x", x)  # [b, t, width]
    cw = P["conv.conv.weight"][:, 0]  # [width, size]: tap j multiplies u_{t - (size - 1 - j)}
    size = cw.shape[1]
    base = torch.sigmoid(P["lam"])
    h = torch.zeros(b, m.width, dtype=torch.float64)
    out = []
    for i in range(t):
        z = P["conv.conv.bias"].clone().expand(b, -1)
        for j in range(size):
            s = i - (size - 1 - j)
            if s >= 0:
                z = z + cw[:, j] * u[:, s]
        r = torch.sigmoid(lin("gate_a", z))
        ig = torch.sigmoid(lin("gate_i", z))
        a = base ** (8.0 * r)
        h = a * h + torch.sqrt(1 - a**2) * (ig * z)
        out.append(h)
    hs = torch.stack(out, 1)
    return lin("out_proj", hs * y)


CASES = {
    "D16-W16-conv4": dict(),
    "D16-W24-conv4": dict(width=24),
    "D16-W8-conv1": dict(width=8, conv=1),
    "D16-W16-conv7": dict(conv=7),
}


@pytest.mark.parametrize("opts", list(CASES.values()), ids=list(CASES))
def test_matches_loop_reference(opts):
    torch.manual_seed(0)
    m = randomize(GriffinBlock(16, **opts))
    x = torch.randn(2, 37, 16)
    with torch.no_grad():
        got = m(x)
    ref = reference(m, x)
    err = (got.double() - ref).abs().max().item()
    assert err < 1e-4 * ref.abs().max().item(), f"max error {err:.2e}"


def test_fast_decays_match_reference():
    """Λ far from the init (decays from ~0 to ~1) still matches: covers the sqrt(1 - a^2) form near a = 0 and 1."""
    torch.manual_seed(0)
    m = randomize(GriffinBlock(16))
    with torch.no_grad():
        m.lam.copy_(torch.linspace(-4.0, 9.0, 16))
    x = torch.randn(2, 29, 16)
    with torch.no_grad():
        got = m(x)
    ref = reference(m, x)
    assert (got.double() - ref).abs().max().item() < 1e-4 * ref.abs().max().item()


@pytest.mark.parametrize("opts", list(CASES.values()), ids=list(CASES))
def test_step_matches_forward(opts):
    check_step_matches_forward(randomize(GriffinBlock(16, **opts)), 16)


def test_recurrent_gemma_options_step_matches_forward():
    """Block-diagonal gates, tanh GELU and the reset at position 0 (the HF comparison is in tests/interop)."""
    opts = dict(width=24, gate_blocks=4, gelu_tanh=True, reset=True)
    check_step_matches_forward(randomize(GriffinBlock(16, **opts)), 16)
    with pytest.raises(ValueError, match="gate_blocks"):
        GriffinBlock(16, width=24, gate_blocks=5)


@pytest.mark.parametrize("opts", [dict(), dict(width=12, conv=2)], ids=["W16-conv4", "W12-conv2"])
def test_shared_checks(opts):
    torch.manual_seed(0)
    check_causal(randomize(GriffinBlock(16, **opts)), 16)
    small = {**opts, "width": 6} if "width" in opts else opts
    check_gradcheck(randomize(GriffinBlock(8, **small)), 8)
    check_dtypes(GriffinBlock(16, **opts), 16)


def test_gradients_match_reference():
    """Gradients of the real forward (float32 scan) equal those of the float64 loop reference."""
    torch.manual_seed(0)
    got, ref = grads_vs_reference(randomize(GriffinBlock(16, width=12)), reference, torch.randn(2, 23, 16))
    for n in got:
        assert_close(n, ref[n], got[n], TOLERANCE[torch.float32]["grad"])


def _coeffs_reference(pre, z, lam, reset):
    """The autograd composition the layer used before its fused function: rglru_coeffs on the two gate
    halves, and b = i z at position 0 with reset. pre [blocks, B*T, 2 blk], z [B, T, width]."""
    blk = pre.shape[2] // 2

    def unblock(x):  # [blocks, B*T, blk] -> [B, T, width]
        return x.transpose(0, 1).reshape(z.shape)

    r, i = unblock(torch.sigmoid(pre[..., :blk])), unblock(torch.sigmoid(pre[..., blk:]))
    a, b = rglru_coeffs(lam, r, i, z)
    if reset:
        b = torch.cat([i[:, :1] * z[:, :1], b[:, 1:]], dim=1)
    return a, b


@pytest.mark.parametrize("reset", [False, True], ids=["noreset", "reset"])
@pytest.mark.parametrize("blocks", [1, 3])
@pytest.mark.parametrize("lam_range", [(-4.0, 9.0), (-20.0, 30.0)], ids=["wide", "extreme"])
def test_fused_coeffs_match_autograd_composition(reset, blocks, lam_range):
    """The fused RG-LRU coefficient function (forward and hand-written backward) against rglru_coeffs
    differentiated by autograd, in float64 and float32; Λ spans decays from ~0 to within 1e-12 of 1."""
    g = torch.Generator().manual_seed(blocks)
    bsz, t, blk = 2, 7, 4
    pre = torch.randn(blocks, bsz * t, 2 * blk, generator=g, dtype=torch.float64) * 3
    z = torch.randn(bsz, t, blocks * blk, generator=g, dtype=torch.float64)
    lam = torch.linspace(*lam_range, blocks * blk, dtype=torch.float64)
    da, db = torch.randn(2, bsz, t, blocks * blk, generator=g, dtype=torch.float64)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        runs = []
        for fn in (_coeffs_reference, rglru_scan_coeffs):
            args = [x.to(dtype).requires_grad_() for x in (pre, z, lam)]
            a, b = fn(*args, reset)
            grads = torch.autograd.grad((a * da.to(dtype)).sum() + (b * db.to(dtype)).sum(), args)
            runs.append([a, b, *grads])
        for name, ref, got in zip(("a", "b", "dpre", "dz", "dlam"), *runs):
            assert got.dtype == dtype, name
            err = (got.double() - ref.double()).abs().max().item()
            assert err <= tol * max(1.0, ref.abs().max().item()), f"{dtype} {name}: {err:.2e}"


def test_fused_coeffs_gradcheck():
    g = torch.Generator().manual_seed(0)
    pre = torch.randn(2, 2 * 5, 6, generator=g, dtype=torch.float64)
    z = torch.randn(2, 5, 6, generator=g, dtype=torch.float64)
    lam = torch.linspace(-3.0, 6.0, 6, dtype=torch.float64)
    for reset in (False, True):
        args = [x.clone().requires_grad_() for x in (pre, z, lam)]
        assert torch.autograd.gradcheck(lambda p, z, lam, reset=reset: rglru_scan_coeffs(p, z, lam, reset), args)


def test_recurrent_gemma_options_gradcheck():
    """The layer with block-diagonal gates, reset and tanh GELU, over a sequence long enough for the scan's
    chunks (and a tail), through the fused coefficient function: gradcheck in float64."""
    torch.manual_seed(0)
    m = randomize(GriffinBlock(8, width=8, gate_blocks=2, reset=True, gelu_tanh=True))
    check_gradcheck(m, 8, seq=23, batch=2)


def test_triton_path_matches_torch_path():
    torch.manual_seed(0)
    check_triton_path(randomize(GriffinBlock(32, width=24)), 32)


def test_trains():
    check_trains(lambda h: GriffinBlock(h), hidden=32, seq=8, steps=100, lr=1e-2)


def test_lambda_init_gives_paper_decay_range():
    """sigmoid(Λ)^c lies in [0.9, 0.999] and spreads over it (paper sec. 2.4)."""
    torch.manual_seed(0)
    m = GriffinBlock(512)
    ac = torch.sigmoid(m.lam.double()) ** 8
    assert ac.min() >= 0.9 - 1e-6 and ac.max() <= 0.999 + 1e-6
    # uniform on [0.9, 0.999]: mean 0.9495, std 0.099 / sqrt(12)
    assert abs(ac.mean().item() - 0.9495) < 0.005
    assert abs(ac.std().item() - 0.099 / math.sqrt(12)) < 0.004


def test_layers_do_not_share_weights():
    """Edifice's griffin_lru ties every layer's weights; ours are separate modules."""
    a, b = GriffinBlock(16), GriffinBlock(16)
    assert not set(map(id, a.parameters())) & set(map(id, b.parameters()))
    assert not torch.equal(a.lam, b.lam)


def test_parameter_count_and_state():
    """Parameters: two input maps 2 (d w + w), conv w (size + 1), dense gates 2 (w^2 + w), Λ w, out w d + d."""
    d, w, k = 16, 24, 4
    m = GriffinBlock(d, width=w, conv=k)
    assert sum(p.numel() for p in m.parameters()) == 2 * (d * w + w) + w * (k + 1) + 2 * (w * w + w) + w + w * d + d
    st = m.init_state(3)
    assert st["h"].shape == (3, w) and st["h"].dtype == torch.float32 and st["conv"].shape == (3, w, k - 1)
    assert m.state_bytes(10**6) == w * 4 + w * (k - 1) * 4


def test_spec_companion_and_bad_options():
    for name in ("griffin", "L", "lru", "rglru", "griffin_lru", "RGLRU"):
        assert registry.get(name) is SPEC
    assert SPEC.letter == "L" and SPEC.recurrent
    assert SPEC.companions({"mlp": True}) == [("ffn", {"act": "geglu", "mult": 3.0})]
    assert SPEC.companions({"mlp": False}) == []
    assert SPEC.validate(SPEC.defaults(), 64) is None
    assert SPEC.validate(SPEC.complete({"conv": 0}), 64) == "conv (the temporal conv width) must be >= 1, got 0"
    assert SPEC.validate(SPEC.complete({"width": 0}), 64) == "width must be >= 1, got 0"
    assert SPEC.option("conv").check(0) == "option 'conv' must be >= 1, got 0"
    assert SPEC.option("width").check(None) is None
    assert SPEC.option("mlp").check(1) == "option 'mlp' takes true or false, got 1"


def test_compiles_fullgraph_on_cpu():
    """torch.compile(fullgraph=True) traces the block on CPU (the plain coefficient ops and the doubling scan in
    the graph) and matches eager's outputs and gradients."""
    torch.manual_seed(0)
    m = randomize(GriffinBlock(16, width=16, gate_blocks=2, reset=True, gelu_tanh=True))
    x = torch.randn(2, 40, 16)
    runs = []
    for fn in (m, torch.compile(m, fullgraph=True, backend="aot_eager")):
        xg = x.clone().requires_grad_()
        y = fn(xg)
        (y * torch.linspace(-1, 1, 16)).sum().backward()
        runs.append((y.detach(), xg.grad, {n: p.grad.clone() for n, p in m.named_parameters()}))
        m.zero_grad(set_to_none=True)
    (ye, gxe, gpe), (yc, gxc, gpc) = runs
    torch.testing.assert_close(yc, ye, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gxc, gxe, rtol=1e-5, atol=1e-5)
    for n in gpe:
        torch.testing.assert_close(gpc[n], gpe[n], rtol=1e-4, atol=1e-5)
