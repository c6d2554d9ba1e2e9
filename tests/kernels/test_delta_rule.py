"""delta_rule: Triton (interpreter on CPU), chunked PyTorch path and step vs the float32 loop."""

from __future__ import annotations

import pytest
import torch

from hybriddsl.kernels import backend
from hybriddsl.kernels.delta_rule import (
    chunk_delta_rule,
    delta_rule_naive,
    delta_rule_step,
    delta_rule_torch,
)
from hybriddsl.kernels.testing import TOLERANCE, assert_close
from tests.kernels.helpers import DTYPES, grads_of, leaf_copies, random_loss


def _inputs(bsz, t, h, dk, dv, dtype=torch.float32, seed=0, gated=True, decay=0.3):
    """L2-normalized q, k (the layer's job), beta in (0, 1), log decays g <= 0, a random initial state."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(bsz, t, h, dk, generator=gen), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(bsz, t, h, dk, generator=gen), dim=-1)
    v = torch.randn(bsz, t, h, dv, generator=gen)
    beta = torch.sigmoid(torch.randn(bsz, t, h, generator=gen))
    g = -decay * torch.rand(bsz, t, h, generator=gen) if gated else None
    h0 = torch.randn(bsz, h, dk, dv, generator=gen)
    cast = [x.to(dtype) for x in (q, k, v, beta)]
    return (*cast, None if g is None else g.to(dtype), h0)


@pytest.mark.parametrize(
    ("t", "gated", "with_h0"),
    [(1, True, True), (17, False, True), (64, True, False), (100, True, True), (256, False, False),
     (256, True, True)],
    ids=["T1-gated-h0", "T17-delta-h0", "T64-gated-noh0", "T100-gated-h0", "T256-delta-noh0", "T256-gated-h0"],
)  # fmt: skip
def test_chunked_matches_naive(t: int, gated: bool, with_h0: bool) -> None:
    q, k, v, beta, g, h0 = _inputs(2, t, 2, 16, 8, seed=t, gated=gated)
    h0 = h0 if with_h0 else None
    ref_o, ref_s = delta_rule_naive(q, k, v, beta, g, initial_state=h0)
    for chunk in (64, 16):
        o, s = delta_rule_torch(q, k, v, beta, g, initial_state=h0, chunk_size=chunk)
        assert (o - ref_o).abs().max() <= 1e-4
        assert (s - ref_s).abs().max() <= 1e-4


def test_scale_and_beta_one_overwrites_memory() -> None:
    # beta = 1 and a unit key replace the value stored along that key: S^T k = v exactly
    k = torch.nn.functional.normalize(torch.randn(1, 3, 1, 4), dim=-1)
    k[:, 2] = k[:, 0]
    v = torch.randn(1, 3, 1, 5)
    o, s = chunk_delta_rule(k, k, v, torch.ones(1, 3, 1), scale=1.0, output_final_state=True)
    torch.testing.assert_close(o[0, 2, 0], v[0, 2, 0], atol=1e-5, rtol=1e-5)
    o2, _ = chunk_delta_rule(k, k, v, torch.ones(1, 3, 1), scale=0.5)
    torch.testing.assert_close(o2, 0.5 * o)


@pytest.mark.parametrize("gated", [False, True], ids=["delta", "gated"])
def test_step_matches_naive_and_continues_prefill(gated: bool) -> None:
    q, k, v, beta, g, h0 = _inputs(2, 40, 3, 8, 6, seed=1, gated=gated)
    ref_o, ref_s = delta_rule_naive(q, k, v, beta, g, initial_state=h0)
    # prefill the first 25 steps with the public function, then go on one token at a time
    gp = None if g is None else g[:, :25]
    o, state = chunk_delta_rule(
        q[:, :25], k[:, :25], v[:, :25], beta[:, :25], gp, initial_state=h0, output_final_state=True
    )
    outs = [o]
    for t in range(25, 40):
        gt = None if g is None else g[:, t]
        o_t, state = delta_rule_step(q[:, t], k[:, t], v[:, t], beta[:, t], gt, state=state)
        assert state.dtype == torch.float32 and o_t.shape == (2, 3, 6)
        outs.append(o_t[:, None])
    assert (torch.cat(outs, dim=1) - ref_o).abs().max() <= 1e-5
    assert (state - ref_s).abs().max() <= 1e-5


def test_step_from_zero_state() -> None:
    q, k, v, beta, g, _ = _inputs(2, 3, 2, 4, 3, seed=5)
    ref_o, _ = delta_rule_naive(q, k, v, beta, g)
    state = None
    for t in range(3):
        o_t, state = delta_rule_step(q[:, t], k[:, t], v[:, t], beta[:, t], g[:, t], state=state)
        assert (o_t - ref_o[:, t]).abs().max() <= 1e-6


@pytest.mark.parametrize("gated", [False, True], ids=["delta", "gated"])
def test_chunked_gradcheck_float64(gated: bool) -> None:
    q, k, v, beta, g, h0 = _inputs(1, 6, 1, 3, 2, torch.float64, seed=2, gated=gated)
    leaves = [x.double().requires_grad_() for x in (q, k, v, beta, h0) + ((g,) if gated else ())]

    def fn(q, k, v, beta, h0, g=None):
        return delta_rule_torch(q, k, v, beta, g, scale=0.7, initial_state=h0, chunk_size=4)

    assert torch.autograd.gradcheck(fn, leaves)


@pytest.mark.parametrize("gated", [False, True], ids=["delta", "gated"])
@pytest.mark.parametrize(("t", "chunk"), [(11, 4), (9, 8), (4, 4)], ids=["T11-C4", "T9-C8", "T4-C4"])
def test_chunked_gradcheck_float64_several_chunks(gated: bool, t: int, chunk: int) -> None:
    # the hand-written backward across chunk boundaries (the reverse state pass), with padding, 2 batches x 2 heads
    q, k, v, beta, g, h0 = _inputs(2, t, 2, 3, 2, torch.float64, seed=t, gated=gated, decay=0.8)
    leaves = [x.requires_grad_() for x in (q, k, v, beta, h0.double()) + ((g,) if gated else ())]

    def fn(q, k, v, beta, h0, g=None):
        return delta_rule_torch(q, k, v, beta, g, scale=0.9, initial_state=h0, chunk_size=chunk)

    assert torch.autograd.gradcheck(fn, leaves)


@pytest.mark.parametrize("gated", [False, True], ids=["delta", "gated"])
@pytest.mark.parametrize(("t", "chunk"), [(37, 16), (100, 32), (130, 64), (64, 64), (200, 16)])
def test_chunked_grads_match_step_loop(gated: bool, t: int, chunk: int) -> None:
    # outputs, final state and every gradient against autograd through the float64 step-by-step loop
    q, k, v, beta, g, h0 = _inputs(2, t, 2, 16, 8, torch.float64, seed=t + chunk, gated=gated)
    ins = [q, k, v, beta, h0.double(), g]
    gen = torch.Generator().manual_seed(7)
    w_o = torch.randn(2, t, 2, 8, generator=gen, dtype=torch.float64)
    w_s = torch.randn(2, 2, 16, 8, generator=gen, dtype=torch.float64)
    results = []
    for run in (delta_rule_naive, lambda *a, **kw: delta_rule_torch(*a, **kw, chunk_size=chunk)):
        leaves = leaf_copies(*ins)
        q_, k_, v_, b_, h_, g_ = leaves
        o, s = run(q_, k_, v_, b_, g_, initial_state=h_)
        loss = (o * w_o).sum() + (s * w_s).sum()
        results.append([o, s, *grads_of(loss, leaves)])
    for ours, ref in zip(*results, strict=True):
        if ref is not None:
            torch.testing.assert_close(ours, ref, atol=1e-9, rtol=1e-9)


def test_chunked_no_initial_state_grads() -> None:
    # without an initial state (zeros, no gradient) and only o used: the reverse pass starts from dS = 0
    q, k, v, beta, g, _ = _inputs(1, 50, 3, 8, 4, torch.float64, seed=3)
    results = []
    for run in (delta_rule_naive, lambda *a: delta_rule_torch(*a, chunk_size=16)):
        leaves = leaf_copies(q, k, v, beta, g)
        o, _ = run(*leaves)
        results.append([o, *grads_of((o * o).sum(), leaves)])
    for ours, ref in zip(*results, strict=True):
        torch.testing.assert_close(ours, ref, atol=1e-9, rtol=1e-9)


def test_auto_backend_on_cpu_is_reference() -> None:
    q, k, v, beta, g, h0 = _inputs(1, 9, 2, 8, 4)
    o, ht = chunk_delta_rule(q, k, v, beta, g, initial_state=h0)
    assert ht is None
    assert (o - delta_rule_naive(q, k, v, beta, g, initial_state=h0)[0]).abs().max() <= 1e-5


# 16-bit cases are fp16, never bf16: Triton 3.9's CPU interpreter computes bf16 tl.dot wrongly (relative errors
# ~1e10 where fp16 and fp32 agree), so a bf16 result there is no evidence about the GPU (bf16 runs on a GPU:
# benchmarks/gpu_session.sh runs this file there).
CASES = [
    # (B, T, H, K, V, dtype, gated, initial state, chunk size)
    (2, 37, 1, 16, 32, "fp32", True, True, 16),  # T not a multiple of the chunk, three chunks
    (1, 37, 2, 16, 32, "fp32", False, False, 16),
    (1, 1, 1, 16, 16, "fp32", True, True, 64),  # T = 1, batch 1
    (1, 70, 1, 32, 24, "fp32", True, True, 64),  # default chunk size; V not a power of two
    (1, 40, 2, 32, 16, "fp16", True, True, 32),
    (2, 33, 1, 64, 16, "fp16", False, False, 64),  # a second head dim
    (1, 20, 1, 16, 80, "fp16", True, False, 16),  # several value blocks
]


def _case_id(c) -> str:
    b, t, h, dk, dv, dt, gated, h0, chunk = c
    return f"B{b}-T{t}-H{h}-K{dk}-V{dv}-{dt}-{'gated' if gated else 'delta'}-{'h0' if h0 else 'noh0'}-C{chunk}"


@pytest.mark.parametrize(
    ("bsz", "t", "h", "dk", "dv", "dt", "gated", "with_h0", "chunk"), CASES, ids=[_case_id(c) for c in CASES]
)
def test_triton_matches_naive(bsz, t, h, dk, dv, dt, gated, with_h0, chunk) -> None:
    dtype = DTYPES[dt]
    q, k, v, beta, g, h0 = _inputs(bsz, t, h, dk, dv, dtype, seed=bsz * 100 + t, gated=gated)
    h0 = h0 if with_h0 else None
    names = ["dq", "dk", "dv", "dbeta", "dg", "dh0"]

    def run(fn, *args):
        leaves = leaf_copies(*args)
        o, s = fn(*leaves)
        # the loss uses both outputs, so the final-state gradient path is checked too
        return o, s, grads_of(random_loss((o, s), seed=7), leaves)

    def up(x):
        return None if x is None else x.float()

    # the reference sees the same (rounded) inputs, upcast to float32
    ref_o, ref_s, ref_grads = run(
        lambda q, k, v, b, g, h0: delta_rule_naive(q, k, v, b, g, 0.5, h0),
        *map(up, (q, k, v, beta, g, h0)),
    )
    with backend("triton"):
        o, s, grads = run(
            lambda q, k, v, b, g, h0: chunk_delta_rule(q, k, v, b, g, 0.5, h0, True, chunk), q, k, v, beta, g, h0
        )
    assert o.dtype == dtype and s.dtype == torch.float32
    tol = TOLERANCE[dtype]
    assert_close("o", ref_o, o, tol["out"])
    assert_close("final_state", ref_s, s, tol["out"])
    for name, r, got in zip(names, ref_grads, grads):
        assert (r is None) == (got is None), name
        if got is not None:
            assert got.dtype == (dtype if name != "dh0" else torch.float32), name
            assert_close(name, r, got, tol["grad"])


def test_triton_only_output_used() -> None:
    # no final-state gradient flows (output_final_state=False): the backward must not need one
    q, k, v, beta, g, h0 = _inputs(1, 20, 1, 16, 16, seed=9)
    leaves = [x.clone().requires_grad_() for x in (q, k, v, beta, g, h0)]
    with backend("triton"):
        o, _ = chunk_delta_rule(*leaves[:5], initial_state=leaves[5], chunk_size=16)
    grads = torch.autograd.grad(o.sum(), leaves)
    ref_leaves = [x.clone().requires_grad_() for x in (q, k, v, beta, g, h0)]
    ref_o, _ = delta_rule_naive(*ref_leaves[:5], initial_state=ref_leaves[5])
    ref_grads = torch.autograd.grad(ref_o.sum(), ref_leaves)
    assert_close("o", ref_o, o, 1e-4)
    for name, r, got in zip(["dq", "dk", "dv", "dbeta", "dg", "dh0"], ref_grads, grads):
        assert_close(name, r, got, 1e-3)


def test_bf16_long_sequence_finite() -> None:
    # T = 16384 on the fast path, decays close to 1 (long memory) and strong writes
    q, k, v, beta, g, h0 = _inputs(1, 16384, 1, 16, 8, torch.bfloat16, seed=3, decay=0.02)
    o, s = chunk_delta_rule(q, k, v, beta, g, initial_state=h0, output_final_state=True)
    assert torch.isfinite(o).all() and torch.isfinite(s).all()
    # the state forgets the far past: the last 3000 steps from zeros give the same tail
    tail = slice(16384 - 3000, None)
    ref_o, _ = delta_rule_naive(q[:, tail], k[:, tail], v[:, tail], beta[:, tail], g[:, tail])
    assert_close("tail", ref_o[:, -200:], o[:, -200:].float(), 2e-2)


def test_triton_fp16_long_sequence_finite() -> None:
    # fp16, not bf16: see CASES (the interpreter's bf16 tl.dot defect)
    q, k, v, beta, g, h0 = _inputs(1, 2048, 1, 16, 16, torch.float16, seed=4, decay=0.02)
    with backend("triton"):
        o, s = chunk_delta_rule(q, k, v, beta, g, initial_state=h0, output_final_state=True)
    assert torch.isfinite(o).all() and torch.isfinite(s).all()
    ref_o, ref_s = delta_rule_torch(q.float(), k.float(), v.float(), beta.float(), g.float(), initial_state=h0)
    assert_close("o", ref_o, o, TOLERANCE[torch.float16]["out"])
    assert_close("final_state", ref_s, s, TOLERANCE[torch.float16]["out"])


def test_opcheck_custom_op() -> None:
    from hybriddsl.kernels.delta_rule.triton import delta_rule_op

    q, k, v, beta, g, h0 = _inputs(1, 5, 1, 16, 16)
    args = [x.requires_grad_() for x in (q, k, v, beta, g, h0)]
    torch.library.opcheck(delta_rule_op, (*args, 0.25, 16))
    fast = ("test_schema", "test_faketensor")
    torch.library.opcheck(delta_rule_op, (q, k, v, beta, None, None, 0.25, 16), test_utils=fast)


def _bad(**over):
    q, k, v, beta, g, h0 = _inputs(2, 3, 2, 4, 5)
    args = dict(q=q, k=k, v=v, beta=beta, g=g, initial_state=h0)
    args.update(over)
    return args


@pytest.mark.parametrize(
    ("over", "msg"),
    [
        (dict(q=torch.randn(2, 3, 4)), r"\[B, T, H, K\]"),
        (dict(k=torch.randn(2, 3, 2, 6)), "k "),
        (dict(v=torch.randn(2, 4, 2, 5)), "v must be"),
        (dict(beta=torch.rand(2, 3)), "beta must be"),
        (dict(g=torch.rand(2, 3, 1)), "g must be"),
        (dict(initial_state=torch.randn(2, 2, 5, 4)), "initial_state"),
    ],
    ids=["rank", "k", "v", "beta", "g", "state"],
)  # fmt: skip
def test_bad_arguments(over, msg) -> None:
    with pytest.raises(ValueError, match=msg):
        chunk_delta_rule(**_bad(**over))


def test_triton_rejects_bad_chunk_size() -> None:
    with backend("triton"), pytest.raises(ValueError, match="power of two"):
        chunk_delta_rule(**_bad(), chunk_size=24)


@pytest.mark.parametrize("tiles", [1, 12, 10**6], ids=["block-per-chunk", "partial-last-block", "one-block"])
@pytest.mark.parametrize("gated,decay", [(False, 0.0), (True, 1e-6), (True, 0.3), (True, 30.0)],
                         ids=["delta", "decay-near1", "gated", "decay-near0"])  # fmt: skip
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_no_grad_blocked_forward_matches_naive(monkeypatch, tiles, gated, decay, dtype) -> None:
    """Inputs without grad take the blocked forward (chunked.BLOCK_TILES tiles per block): against the float64
    loop, batch 2, T = 150 over chunks of 16 (10 chunks, not a multiple), with an initial and final state."""
    from hybriddsl.kernels.delta_rule import chunked

    monkeypatch.setattr(chunked, "BLOCK_TILES", tiles)
    q, k, v, beta, g, h0 = _inputs(2, 150, 2, 16, 8, seed=7, gated=gated, decay=decay)
    ref_o, ref_s = delta_rule_naive(*(None if x is None else x.double() for x in (q, k, v, beta, g)),
                                    initial_state=h0.double())  # fmt: skip
    args = [None if x is None else x.to(dtype) for x in (q, k, v, beta, g)]
    o, s = delta_rule_torch(*args, initial_state=h0.to(dtype), chunk_size=16)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    assert (o.double() - ref_o).abs().max() <= tol
    assert (s.double() - ref_s).abs().max() <= tol
