"""SSD (scalar-decay GLA with q/k groups): Triton (interpreter on CPU, fp32/fp16 only: the interpreter's bf16
``tl.dot`` is wrong) and the chunked PyTorch path against the float32 loop-over-time definition ``ssd_naive``
(outputs, final state, every gradient), plus ``ssd_naive`` itself against the general GLA loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hybriddsl.kernels.dispatch import backend
from hybriddsl.kernels.gla import gla_naive
from hybriddsl.kernels.ssd import ssd, ssd_naive, ssd_step, ssd_torch
from hybriddsl.kernels.testing import TOLERANCE, assert_close
from tests.kernels.helpers import random_loss

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")


def make_inputs(B, T, G, H, K, V, dtype, use_h0=False, decay=1.0, seed=0):
    """q, k [B, T, G, K], v [B, T, H, V], g [B, T, H] = logsigmoid * decay (float32), h0 [B, H, K, V] or None."""
    gen = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=gen)
    q, k, v = rnd(B, T, G, K), rnd(B, T, G, K), rnd(B, T, H, V)
    g = F.logsigmoid(rnd(B, T, H)) * decay
    h0 = rnd(B, H, K, V) if use_h0 else None
    leaf = lambda x, dt: None if x is None else x.to(dt).requires_grad_(True)
    return leaf(q, dtype), leaf(k, dtype), leaf(v, dtype), leaf(g, torch.float32), leaf(h0, torch.float32)


def run(fn, inputs, seed=1):
    """Output, final state and the gradients of every given input under a random cotangent."""
    o, s = fn(*inputs)
    given = [x for x in inputs if x is not None]
    return o, s, torch.autograd.grad(random_loss((o, s), seed), given)


def check(fn, case, dtype, tol=None):
    B, T, G, H, K, V, use_h0 = case
    inputs = make_inputs(B, T, G, H, K, V, dtype, use_h0, decay=2.0)
    ref_in = [None if x is None else x.detach().float().requires_grad_(True) for x in inputs]
    o_ref, s_ref, g_ref = run(lambda q, k, v, g, h0: ssd_naive(q, k, v, g, None, h0, True), ref_in)
    o, s, g_got = run(fn, inputs)
    assert o.dtype == dtype and s.dtype == torch.float32
    tol = tol or TOLERANCE[dtype]
    assert_close("o", o_ref, o, tol["out"])
    assert_close("final_state", s_ref, s, tol["out"])
    names = [n for n, x in zip(["dq", "dk", "dv", "dg", "dh0"], inputs) if x is not None]
    for name, r, got in zip(names, g_ref, g_got):
        assert_close(name, r, got, tol["grad"])


# (B, T, G, H, K, V, h0): T not a multiple of the chunk, groups shared by 2 heads, K over one 64-wide block, T = 1.
TRITON_CASES = [
    ((1, 37, 2, 4, 16, 16, True), torch.float32, 16),
    ((1, 70, 1, 2, 80, 16, True), torch.float32, 32),
    ((2, 1, 1, 1, 16, 32, False), torch.float32, 16),
    ((1, 50, 1, 2, 16, 32, True), torch.float16, 64),
]


def _id(p):
    (B, T, G, H, K, V, h0), dt, c = p
    return f"B{B}-T{T}-G{G}-H{H}-K{K}-V{V}{'-h0' if h0 else ''}-C{c}-{str(dt)[6:]}"


@pytest.mark.parametrize("param", TRITON_CASES, ids=[_id(p) for p in TRITON_CASES])
def test_triton_matches_naive(param):
    case, dtype, chunk = param
    with backend("triton"):
        check(lambda q, k, v, g, h0: ssd(q, k, v, g, None, h0, True, chunk), case, dtype)


TORCH_CASES = [((2, 200, 1, 4, 16, 8, True), 64), ((1, 131, 2, 2, 8, 16, True), 32), ((2, 5, 2, 2, 8, 8, False), 16)]


@pytest.mark.parametrize("case,chunk", TORCH_CASES, ids=[f"{_id((c, torch.float32, n))[:-8]}" for c, n in TORCH_CASES])
def test_torch_path_matches_naive(case, chunk):
    check(lambda q, k, v, g, h0: ssd_torch(q, k, v, g, None, h0, True, chunk), case, torch.float32)


def test_torch_path_bf16_against_fp32():
    """The PyTorch path in bf16 against the fp32 loop by relative error (not only finiteness)."""
    check(lambda q, k, v, g, h0: ssd(q, k, v, g, None, h0, True), (1, 90, 1, 2, 16, 16, True), torch.bfloat16)


def test_naive_equals_gla_definition():
    """The SSD loop is the GLA loop with the groups' q, k repeated for their heads and the decay broadcast."""
    q, k, v, g, h0 = make_inputs(2, 23, 2, 4, 8, 4, torch.float32, use_h0=True)
    o, s = ssd_naive(q, k, v, g, 0.7, h0, True)
    o_ref, s_ref = gla_naive(q.repeat_interleave(2, 2), k.repeat_interleave(2, 2), v, g, None, 0.7, h0, True)
    assert (o - o_ref).abs().max().item() <= 1e-5 and (s - s_ref).abs().max().item() <= 1e-5


def test_strong_decay_long_sequence_is_finite():
    """Decays up to e^-40 per token over 4096 tokens: every exponent the chunked path takes is <= 0."""
    q, k, v, g, _ = make_inputs(1, 4096, 1, 2, 8, 8, torch.float32, decay=40.0)
    o, s = ssd(q, k, v, g, output_final_state=True)
    (o.sum() + s.sum()).backward()
    assert all(torch.isfinite(x).all() for x in (o, s, q.grad, k.grad, v.grad, g.grad))


def test_step_matches_naive():
    """A chunked prefill, then token-by-token steps, equals the loop over the whole sequence."""
    q, k, v, g, h0 = make_inputs(2, 24, 2, 4, 8, 8, torch.float32, use_h0=True)
    o_ref, s_ref = ssd_naive(q, k, v, g, None, h0, True)
    o_pre, state = ssd(q[:, :17], k[:, :17], v[:, :17], g[:, :17], None, h0, True, 16)
    outs = [o_pre]
    for t in range(17, 24):
        o_t, state = ssd_step(q[:, t], k[:, t], v[:, t], g[:, t], None, state)
        outs.append(o_t[:, None])
    assert (torch.cat(outs, 1) - o_ref).abs().max().item() <= 1e-4
    assert (state - s_ref).abs().max().item() <= 1e-4


def test_torch_path_gradcheck():
    inputs = [x.detach().double().requires_grad_(True) for x in make_inputs(1, 19, 1, 2, 3, 2, torch.float64, True)]
    assert torch.autograd.gradcheck(lambda *a: ssd_torch(*a[:4], None, a[4], True, 16), tuple(inputs), atol=1e-6)


def test_empty_sequence_returns_empty_and_initial_state():
    q, k, v, g, h0 = make_inputs(2, 0, 1, 2, 8, 4, torch.float32, use_h0=True)
    o, s = ssd(q, k, v, g, None, h0, True)
    assert o.shape == (2, 0, 2, 4) and torch.equal(s, h0)


def test_custom_op_opcheck():
    from hybriddsl.kernels.ssd import triton as ssd_triton_mod

    q, k, v, g, h0 = make_inputs(1, 16, 1, 2, 16, 16, torch.float32, use_h0=True)
    args = (q, k, v, g, h0.detach(), 0.25, 16)
    torch.library.opcheck(ssd_triton_mod.ssd_fwd_op, args, test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize(
    "shapes,match",
    [
        (((1, 4, 2, 8), (1, 4, 2, 6), (1, 4, 4, 8), (1, 4, 4)), "q and k"),
        (((1, 4, 2, 8), (1, 4, 2, 8), (1, 5, 4, 8), (1, 4, 4)), "v must"),
        (((1, 4, 2, 8), (1, 4, 2, 8), (1, 4, 3, 8), (1, 4, 3)), "groups"),
        (((1, 4, 2, 8), (1, 4, 2, 8), (1, 4, 4, 8), (1, 4, 4, 8)), "g must"),
    ],
    ids=["qk", "v", "groups", "g"],
)
def test_bad_shapes_raise(shapes, match):
    q, k, v, g = (torch.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=match):
        ssd(q, k, v, g)


def test_bad_state_chunk_dtype_raise():
    q, v, g = torch.zeros(1, 4, 1, 8), torch.zeros(1, 4, 2, 8), torch.zeros(1, 4, 2)
    with pytest.raises(ValueError, match="initial_state must"):
        ssd(q, q, v, g, initial_state=torch.zeros(1, 2, 8, 7))
    with pytest.raises(ValueError, match="chunk_size"):
        ssd(q, q, v, g, chunk_size=48)
    with pytest.raises(ValueError, match="floating"):
        ssd(q.long(), q, v, g)
    with pytest.raises(ValueError, match="state must"):
        ssd_step(q[:, 0], q[:, 0], v[:, 0], g[:, 0], state=torch.zeros(1, 2, 8))


# The eager CPU path (kernels/ssd/chunked.py: hand-written backward, chunks processed in blocks of BLOCK_TILES
# tiles). Block sizes 1 (a block per chunk), 8 (two chunks per block here, the last block partial) and 64 (one
# block): the state pass across and within blocks.
BLOCKS = [1, 8, 64]


@pytest.mark.parametrize("tiles", BLOCKS)
@pytest.mark.parametrize("use_h0,final", [(True, True), (False, False), (True, False)])
def test_chunked_backward_gradcheck(monkeypatch, tiles, use_h0, final):
    """float64 gradcheck of the hand-written backward: batch 2, groups shared by 2 heads, T = 37 over chunks of
    16 (not a multiple), with and without initial and final state."""
    from hybriddsl.kernels.ssd import chunked

    monkeypatch.setattr(chunked, "BLOCK_TILES", tiles)
    inputs = make_inputs(2, 37, 2, 4, 3, 2, torch.float64, use_h0=use_h0, seed=3)
    inputs = [None if x is None else x.detach().double().requires_grad_(True) for x in inputs]
    given = tuple(x for x in inputs if x is not None)

    def fn(*a):
        h0 = a[4] if use_h0 else None
        o, s = ssd_torch(*a[:4], 0.7, h0, final, 16)
        return (o, s) if final else o

    assert torch.autograd.gradcheck(fn, given, atol=1e-7)


@pytest.mark.parametrize("tiles", BLOCKS)
@pytest.mark.parametrize("decay", [1e-6, 1.0, 30.0], ids=["near1", "mid", "near0"])
def test_chunked_float32_against_float64_naive(monkeypatch, tiles, decay):
    """float32 chunked path against the float64 loop (output, final state, every gradient), with decays per
    token from exp(-1e-6 logsigmoid) (near 1) to about exp(-30) (near 0)."""
    from hybriddsl.kernels.ssd import chunked

    monkeypatch.setattr(chunked, "BLOCK_TILES", tiles)
    inputs = make_inputs(2, 150, 2, 4, 16, 8, torch.float32, use_h0=True, decay=decay, seed=5)
    ref_in = [x.detach().double().requires_grad_(True) for x in inputs]
    o_ref, s_ref, g_ref = run(lambda q, k, v, g, h0: ssd_naive(q, k, v, g, None, h0, True), ref_in)
    o, s, g_got = run(lambda q, k, v, g, h0: ssd_torch(q, k, v, g, None, h0, True, 64), inputs)
    tol = TOLERANCE[torch.float32]
    assert_close("o", o_ref.float(), o, tol["out"])
    assert_close("final_state", s_ref.float(), s, tol["out"])
    for name, r, got in zip(["dq", "dk", "dv", "dg", "dh0"], g_ref, g_got):
        assert_close(name, r.float(), got, tol["grad"])


def test_chunked_no_grad_equals_grad_path():
    """Under no_grad the forward runs without keeping states; it must give the autograd path's values."""
    q, k, v, g, h0 = make_inputs(2, 70, 2, 4, 8, 8, torch.float32, use_h0=True)
    o, s = ssd_torch(q, k, v, g, None, h0, True, 32)
    with torch.no_grad():
        o2, s2 = ssd_torch(q, k, v, g, None, h0, True, 32)
    assert torch.equal(o.detach(), o2) and torch.equal(s.detach(), s2)


def test_chunked_does_not_modify_inputs():
    """The chunk copies are fresh: in-place work on them never reaches the caller's (contiguous) tensors."""
    q, k, v, g, h0 = make_inputs(1, 64, 1, 1, 8, 8, torch.float32, use_h0=True)
    before = [x.detach().clone() for x in (q, k, v, g, h0)]
    o, s = ssd_torch(q, k, v, g, None, h0, True, 64)
    (o.sum() + s.sum()).backward()
    assert all(torch.equal(a, b) for a, b in zip(before, (q, k, v, g, h0)))
