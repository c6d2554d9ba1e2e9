"""linear_scan: Triton (interpreter on CPU), chunked PyTorch path and step vs the float32 loop."""

from __future__ import annotations

import math

import pytest
import torch

from hybriddsl.kernels import backend
from hybriddsl.kernels.linear_scan import (
    linear_scan,
    linear_scan_loop,
    linear_scan_naive,
    linear_scan_step,
    linear_scan_torch,
)
from hybriddsl.kernels.testing import TOLERANCE, assert_close
from tests.kernels.helpers import DTYPES, grads_of, leaf_copies, random_loss


def _inputs(bsz: int, t: int, d: int, dtype: torch.dtype, seed: int = 0, zeros: bool = True):
    g = torch.Generator().manual_seed(seed)
    # Griffin-like decays in (0, 1), close to 1 so information travels far
    a = torch.sigmoid(torch.randn(bsz, t, d, generator=g) + 2.0)
    if zeros and t > 3:
        a[:, 3, : d // 2] = 0.0  # a hard reset: exercises a_t = 0 (no log/division tricks allowed)
    b = torch.randn(bsz, t, d, generator=g)
    h0 = torch.randn(bsz, d, generator=g)
    return a.to(dtype), b.to(dtype), h0


@pytest.mark.parametrize("t", [1, 7, 63, 64, 65, 200, 256])
@pytest.mark.parametrize("with_h0", [False, True], ids=["noh0", "h0"])
def test_chunked_matches_naive(t: int, with_h0: bool) -> None:
    a, b, h0 = _inputs(2, t, 12, torch.float32, seed=t)
    h0 = h0 if with_h0 else None
    ref_h, ref_ht = linear_scan_naive(a, b, h0)
    h, ht = linear_scan_torch(a, b, h0)
    assert (h - ref_h).abs().max() <= 1e-4
    assert (ht - ref_ht).abs().max() <= 1e-4
    # a small chunk size forces several levels of the recursive chunk-summary scan
    h, ht = linear_scan_torch(a, b, h0, chunk_size=4)
    assert (h - ref_h).abs().max() <= 1e-4
    assert (ht - ref_ht).abs().max() <= 1e-4


@pytest.mark.parametrize("t", [1, 2, 65])
@pytest.mark.parametrize("with_h0", [False, True], ids=["noh0", "h0"])
def test_loop_matches_naive_values_and_gradients(t: int, with_h0: bool) -> None:
    a, b, h0 = _inputs(2, t, 12, torch.float32, seed=t)
    h0 = h0 if with_h0 else None
    g = torch.Generator().manual_seed(5)
    dh, dht = torch.randn(2, t, 12, generator=g), torch.randn(2, 12, generator=g)
    grads = []
    for fn in (linear_scan_naive, linear_scan_loop):
        args = [x.clone().requires_grad_() for x in (a, b)] + ([h0.clone().requires_grad_()] if with_h0 else [])
        h, ht = fn(*args[:2], args[2] if with_h0 else None)
        grads.append((h, ht, torch.autograd.grad((h * dh).sum() + (ht * dht).sum(), args)))
    (ref_h, ref_ht, ref_g), (h, ht, got_g) = grads
    assert (h - ref_h).abs().max() <= 1e-5
    assert (ht - ref_ht).abs().max() <= 1e-5
    for got, ref in zip(got_g, ref_g):
        assert (got - ref).abs().max() <= 1e-4 * max(1.0, ref.abs().max().item())


def test_loop_gradcheck_float64() -> None:
    a, b, h0 = _inputs(1, 9, 3, torch.float64, seed=3)
    args = [x.double().requires_grad_() for x in (a, b, h0)]
    assert torch.autograd.gradcheck(lambda a, b, h0: linear_scan_loop(a, b, h0), args)


def _recurrence64(a, b, h0):
    """h_t = a_t h_{t-1} + b_t token by token in float64 (linear_scan_naive computes in float32)."""
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0
    out = []
    for t in range(a.shape[1]):
        h = a[:, t] * h + b[:, t]
        out.append(h)
    return torch.stack(out, dim=1), h


def _loop_vs_naive(a, b, h0, chunk_size, dtype, tol_out, tol_grad, seed=5):
    """linear_scan_loop against the float64 token loop: values, final state and the gradients of a loss on
    both outputs."""
    g = torch.Generator().manual_seed(seed)
    dh = torch.randn(a.shape, generator=g, dtype=torch.float64)
    dht = torch.randn(a.shape[0], a.shape[2], generator=g, dtype=torch.float64)
    results = []
    for fn, dt in ((_recurrence64, torch.float64), (linear_scan_loop, dtype)):
        args = [x.to(dt).clone().requires_grad_() for x in (a, b)]
        args += [h0.to(dt).clone().requires_grad_()] if h0 is not None else []
        kw = {"chunk_size": chunk_size} if fn is linear_scan_loop else {}
        h, ht = fn(args[0], args[1], args[2] if h0 is not None else None, **kw)
        loss = (h.double() * dh).sum() + (ht.double() * dht).sum()
        results.append((h.double(), ht.double(), [x.double() for x in torch.autograd.grad(loss, args)]))
    (ref_h, ref_ht, ref_g), (h, ht, got_g) = results
    scale = ref_h.abs().max().item()
    assert (h - ref_h).abs().max() <= tol_out * max(1.0, scale)
    assert (ht - ref_ht).abs().max() <= tol_out * max(1.0, scale)
    for name, got, ref in zip(("da", "db", "dh0"), got_g, ref_g):
        err = (got - ref).abs().max().item()
        assert err <= tol_grad * max(1.0, ref.abs().max().item()), f"{name}: {err:.2e}"


# (B, T, chunk): chunks with a tail (T not a multiple), chunks without one, a single chunk (the token loop),
# and the automatic choice (None) at lengths where it chunks
CHUNKED = [(2, 11, 3), (3, 64, 8), (1, 40, 7), (2, 9, 9), (2, 200, None), (1, 2048, None)]


@pytest.mark.parametrize(("bsz", "t", "chunk"), CHUNKED, ids=[f"B{b}-T{t}-c{c}" for b, t, c in CHUNKED])
@pytest.mark.parametrize("with_h0", [False, True], ids=["noh0", "h0"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_chunked_loop_matches_naive(bsz: int, t: int, chunk: int | None, with_h0: bool, dtype) -> None:
    a, b, h0 = _inputs(bsz, t, 6, torch.float64, seed=t + bsz)
    tol = (1e-12, 1e-11) if dtype == torch.float64 else (1e-5, 1e-4)
    _loop_vs_naive(a, b, h0 if with_h0 else None, chunk, dtype, *tol)


@pytest.mark.parametrize("log_a", [-50.0, -1e-7, 0.0], ids=["near0", "near1", "one"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_chunked_loop_extreme_decays(log_a: float, dtype) -> None:
    """Decays of e^-50 per step (a chunk's product underflows), within 1e-7 of 1 and exactly 1 (states grow
    linearly), mixed with ordinary ones and hard zeros in other channels."""
    a, b, h0 = _inputs(2, 45, 8, torch.float64, seed=11)
    a[:, :, :4] = math.exp(log_a) if log_a else 1.0
    a[:, 10, 2] = 0.0
    tol = (1e-12, 1e-11) if dtype == torch.float64 else (1e-5, 1e-4)
    for chunk in (4, 6, None):
        _loop_vs_naive(a, b, h0, chunk, dtype, *tol)


@pytest.mark.parametrize(("t", "chunk"), [(11, 3), (12, 4), (7, 2)])
def test_chunked_loop_gradcheck_float64(t: int, chunk: int) -> None:
    a, b, h0 = _inputs(2, t, 3, torch.float64, seed=t)
    args = [x.double().requires_grad_() for x in (a, b, h0)]

    def f(a, b, h0):
        h, ht = linear_scan_loop(a, b, h0, chunk_size=chunk)
        return h, ht * 2.0  # the final state as a second output: its gradient joins the last token's

    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradcheck(lambda a, b: linear_scan_loop(a, b, None, chunk_size=chunk), args[:2])


def test_step_matches_naive_and_continues_prefill() -> None:
    a, b, h0 = _inputs(2, 40, 8, torch.float32, seed=1)
    ref_h, ref_ht = linear_scan_naive(a, b, h0)
    # prefill the first 25 steps with the public function, then go on one token at a time
    h, state = linear_scan(a[:, :25], b[:, :25], h0, output_final_state=True)
    outs = [h]
    for t in range(25, 40):
        state = linear_scan_step(a[:, t], b[:, t], state)
        assert state.dtype == torch.float32
        outs.append(state[:, None])
    assert (torch.cat(outs, dim=1) - ref_h).abs().max() <= 1e-5
    assert (state - ref_ht).abs().max() <= 1e-5


def test_chunked_gradcheck_float64() -> None:
    a, b, h0 = _inputs(1, 10, 3, torch.float64, seed=2)
    args = [x.double().requires_grad_() for x in (a, b, h0)]
    assert torch.autograd.gradcheck(lambda a, b, h0: linear_scan_torch(a, b, h0, chunk_size=4), args)


def test_auto_backend_on_cpu_is_reference() -> None:
    a, b, h0 = _inputs(1, 9, 5, torch.float32)
    h, ht = linear_scan(a, b, h0)
    assert ht is None
    assert (h - linear_scan_naive(a, b, h0)[0]).abs().max() <= 1e-5


# bf16 cases run in the interpreter too: this kernel has no tl.dot, the one operation whose bf16 result Triton 3.9's
# interpreter gets wrong (errors ~1e10 where fp16 and fp32 agree); its bf16 loads, stores and float32 math are right.
CASES = [
    # (B, T, D, dtype, initial state)
    (2, 37, 40, "fp32", True),  # T not a multiple of the tile, D not a multiple of the channel block
    (2, 37, 40, "fp32", False),
    (1, 1, 16, "fp32", True),  # T = 1, batch 1
    (2, 64, 24, "bf16", True),
    (1, 50, 33, "bf16", False),
    (2, 20, 8, "fp16", True),
]


@pytest.mark.parametrize(
    ("bsz", "t", "d", "dt", "with_h0"),
    CASES,
    ids=[f"B{c[0]}-T{c[1]}-D{c[2]}-{c[3]}-{'h0' if c[4] else 'noh0'}" for c in CASES],
)
def test_triton_matches_naive(bsz: int, t: int, d: int, dt: str, with_h0: bool) -> None:
    dtype = DTYPES[dt]
    a, b, h0 = _inputs(bsz, t, d, dtype, seed=bsz * 100 + t)
    h0 = h0 if with_h0 else None

    def run(fn, a, b, h0):
        leaves = leaf_copies(a, b, h0)
        h, ht = fn(*leaves)
        # the loss uses both outputs, so the final-state gradient path is checked too
        return h, ht, grads_of(random_loss((h, ht), seed=7), leaves)

    # the reference sees the same (rounded) inputs, upcast to float32
    ref_h, ref_ht, ref_grads = run(linear_scan_naive, a.float(), b.float(), h0)
    with backend("triton"):
        h, ht, grads = run(lambda a, b, h0: linear_scan(a, b, h0, output_final_state=True), a, b, h0)
    assert h.dtype == dtype and ht.dtype == torch.float32
    tol = TOLERANCE[dtype]
    assert_close("h", ref_h, h, tol["out"])
    assert_close("final_state", ref_ht, ht, tol["out"])
    for name, r, g in zip(["da", "db", "dh0"], ref_grads, grads):
        assert (r is None) == (g is None), name
        if g is not None:
            assert g.dtype == (dtype if name != "dh0" else torch.float32)
            assert_close(name, r, g, tol["grad"])


def test_bf16_long_sequence_finite() -> None:
    # T = 16384 on the fast path; the decays are close to 1 so states grow to ~1/(1-a)
    a, b, h0 = _inputs(1, 16384, 4, torch.bfloat16, seed=3)
    h, ht = linear_scan(a, b, h0, output_final_state=True)
    assert torch.isfinite(h).all() and torch.isfinite(ht).all()
    ref_h, _ = linear_scan_naive(a[:, -3000:], b[:, -3000:], None)  # the state forgets the far past
    assert_close("tail", ref_h[:, -100:], h[:, -100:].float(), 2e-2)


def test_triton_bf16_long_sequence_finite() -> None:
    a, b, h0 = _inputs(1, 2048, 16, torch.bfloat16, seed=4)
    with backend("triton"):
        h, ht = linear_scan(a, b, h0, output_final_state=True)
    assert torch.isfinite(h).all() and torch.isfinite(ht).all()
    assert_close("h", linear_scan_naive(a, b, h0)[0], h, TOLERANCE[torch.bfloat16]["out"])


def test_opcheck_custom_op() -> None:
    from hybriddsl.kernels.linear_scan.triton import linear_scan_op

    a, b, h0 = _inputs(1, 5, 8, torch.float32)
    args = (a.requires_grad_(), b.requires_grad_(), h0.requires_grad_())
    torch.library.opcheck(linear_scan_op, args)
    torch.library.opcheck(linear_scan_op, (a, b, None), test_utils=("test_schema", "test_faketensor"))


def test_compiles_fullgraph_as_one_op() -> None:
    a, b, h0 = (t.requires_grad_() for t in _inputs(1, 9, 8, torch.float32))

    def layer(a, b, h0):
        return linear_scan(a, b, h0, output_final_state=True)

    with backend("triton"):
        h, ht = torch.compile(layer, fullgraph=True, backend="aot_eager")(a, b, h0)
        (h.sum() + ht.sum()).backward()
    assert (h - linear_scan_naive(a.detach(), b.detach(), h0.detach())[0]).abs().max() <= 1e-5
    assert a.grad is not None and b.grad is not None and h0.grad is not None


@pytest.mark.parametrize(
    ("a_shape", "b_shape", "h0_shape", "msg"),
    [
        ((2, 3), (2, 3), None, r"\[B, T, D\]"),
        ((2, 3, 4), (2, 3, 5), None, "same shape"),
        ((2, 3, 4), (2, 3, 4), (2, 5), "initial_state"),
    ],
    ids=["rank", "mismatch", "state"],
)
def test_bad_shapes_raise(a_shape, b_shape, h0_shape, msg) -> None:
    h0 = None if h0_shape is None else torch.zeros(h0_shape)
    with pytest.raises(ValueError, match=msg):
        linear_scan(torch.zeros(a_shape), torch.zeros(b_shape), h0)
