"""Selective scan (Mamba-1): Triton kernels, the chunked PyTorch path and the one-token step, each
checked against the float32 loop over time (``selective_scan_naive``)."""

from __future__ import annotations

import pytest
import torch

from hybriddsl.kernels import backend
from hybriddsl.kernels.dispatch import interpreting, triton_available
from hybriddsl.kernels.selective_scan import (
    selective_scan,
    selective_scan_inference,
    selective_scan_loop,
    selective_scan_naive,
    selective_scan_step,
    selective_scan_torch,
)
from hybriddsl.kernels.testing import TOLERANCE, assert_close
from tests.kernels.helpers import random_loss

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
needs_triton = pytest.mark.skipif(
    not (triton_available() and (torch.cuda.is_available() or interpreting())),
    reason="needs triton (on CUDA, or TRITON_INTERPRET=1 set by tests/conftest.py)",
)


def make_inputs(
    b: int,
    T: int,
    Dm: int,
    N: int,
    dtype: torch.dtype = torch.float32,
    *,
    options: bool = True,
    h0: bool = False,
    seed: int = 0,
) -> dict[str, torch.Tensor | None]:
    """Leaf tensors shaped as the public API wants; ``options`` adds D, z and delta_bias."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0, shift=0.0, dt=dtype):
        return (torch.randn(*shape, generator=g) * scale + shift).to(dt).requires_grad_()

    x = {
        "u": rnd(b, T, Dm),
        "delta": rnd(b, T, Dm, scale=0.5, shift=-1.0),  # softplus(.) ~ 0.3: real decay per step
        "A": (-torch.exp(torch.randn(Dm, N, generator=g) * 0.5)).requires_grad_(),
        "B": rnd(b, T, N),
        "C": rnd(b, T, N),
        "D": rnd(Dm, dt=torch.float32) if options else None,
        "z": rnd(b, T, Dm) if options else None,
        "delta_bias": rnd(Dm, scale=0.3, dt=torch.float32) if options else None,
        "initial_state": rnd(b, Dm, N, dt=torch.float32) if h0 else None,
    }
    return x


def as_f32_leaves(x: dict) -> dict:
    """Independent float32 copies (the same rounded values) for the reference."""
    return {k: None if v is None else v.detach().float().requires_grad_() for k, v in x.items()}


def run(fn, x: dict, softplus: bool = True, final: bool = True, seed: int = 1):
    """Output, final state and gradients of every given input for a fixed random cotangent."""
    args = [x[k] for k in NAMES[:8]]
    y, h = fn(*args, softplus, x["initial_state"], final)
    loss = random_loss((y, h if final else None), seed)
    leaves = {k: v for k, v in x.items() if v is not None}
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return y, h, dict(zip(leaves, grads))


def compare(ref, got, dtype: torch.dtype) -> None:
    tol = TOLERANCE[dtype]
    y_ref, h_ref, g_ref = ref
    y, h, g = got
    assert y.dtype == dtype
    assert_close("y", y_ref, y, tol["out"])
    if h_ref is not None:
        assert h.dtype == torch.float32
        assert_close("final_state", h_ref, h, tol["out"])
    else:
        assert h is None
    assert g.keys() == g_ref.keys()
    for k in g_ref:
        assert_close(f"d{k}", g_ref[k], g[k], tol["grad"])


# ----------------------------------------------------------------------------- Triton (interpreter on CPU)
# bf16 cases run in the interpreter too: these kernels have no tl.dot, the one operation whose bf16 result Triton
# 3.9's interpreter gets wrong (errors ~1e10 where fp16 and fp32 agree); bf16 loads, stores and float32 math are right.
TRITON_CASES = [
    # (b, T, Dm, N, dtype, options, h0, final, softplus, chunk): chunk 8 makes a short T cross several
    # checkpoints in the interpreter; Dm=40 spans two channel blocks of 32 (dB/dC block reduction).
    pytest.param(2, 20, 40, 16, torch.float32, True, True, True, True, 8, id="B2-T20-D40-N16-fp32-h0-ck8"),
    pytest.param(1, 1, 8, 4, torch.float32, True, True, True, True, 64, id="B1-T1-D8-N4-fp32-h0"),
    pytest.param(1, 70, 16, 6, torch.float32, False, False, True, False, 64, id="B1-T70-D16-N6-fp32-bare"),
    pytest.param(2, 13, 40, 16, torch.bfloat16, True, True, True, True, 8, id="B2-T13-D40-N16-bf16-h0-ck8"),
    pytest.param(1, 20, 24, 6, torch.bfloat16, True, False, False, True, 8, id="B1-T20-D24-N6-bf16-ck8"),
]


@needs_triton
@pytest.mark.parametrize("b,T,Dm,N,dtype,options,h0,final,softplus,chunk", TRITON_CASES)
def test_triton_matches_naive(b, T, Dm, N, dtype, options, h0, final, softplus, chunk, monkeypatch):
    from hybriddsl.kernels.selective_scan import triton as ss_triton

    monkeypatch.setattr(ss_triton, "CHUNK", chunk)
    x = make_inputs(b, T, Dm, N, dtype, options=options, h0=h0)
    if not softplus:  # delta is used as dt directly: keep it positive
        x["delta"] = x["delta"].detach().abs().requires_grad_()
    ref = run(selective_scan_naive, as_f32_leaves(x), softplus, final)
    with backend("triton"):
        got = run(selective_scan, x, softplus, final)
    compare(ref, got, dtype)


@needs_triton
def test_triton_accepts_strided_views():
    """u/z as the two halves of one projection, B/C as slices of another, delta batch-strided:
    the kernels read them in place (only the last dimension must be contiguous)."""
    b, T, Dm, N = 2, 9, 8, 4
    g = torch.Generator().manual_seed(5)
    xz = torch.randn(b, T, 2 * Dm, generator=g).requires_grad_()
    bcd = torch.randn(b, T, 3 + 2 * N, generator=g).requires_grad_()
    dl = torch.randn(T, b, Dm, generator=g).requires_grad_()
    A = (-torch.exp(torch.randn(Dm, N, generator=g) * 0.5)).requires_grad_()
    h0 = torch.randn(b, Dm, N, generator=g)
    dy = torch.randn(b, T, Dm, generator=g)

    def grads(fn):
        u, z = xz[..., :Dm], xz[..., Dm:]
        B, C = bcd[..., 3 : 3 + N], bcd[..., 3 + N :]
        y, _ = fn(u, dl.transpose(0, 1), A, B, C, None, z, None, True, h0, False)
        return [y, *torch.autograd.grad((y * dy).sum(), [xz, bcd, dl, A])]

    ref = grads(selective_scan_naive)
    with backend("triton"):
        got = grads(selective_scan)
    for name, r, o in zip(["y", "dxz", "dbcd", "ddelta", "dA"], ref, got):
        assert_close(name, r, o, TOLERANCE[torch.float32]["grad"])


@needs_triton
def test_triton_bf16_long_sequence_is_finite():
    """bf16 over several real 64-step checkpoints with large dt (exp(dt A) underflows) and large
    inputs: no NaN/Inf in y or state. T=2048 costs 10-50 s in the interpreter (one Python-level step
    per token and program), too slow for CI; the kernel has no quantity that grows with T (each
    step multiplies the state by exp2(dt A) <= 1), so 320 steps exercise the same arithmetic."""
    x = make_inputs(1, 320, 4, 2, torch.bfloat16, options=True, h0=True)
    with torch.no_grad():
        x["delta"].mul_(8.0).add_(4.0)  # dt up to ~ 30: exp(dt A) underflows to 0, softplus linear
        x["u"].mul_(100.0)
    with backend("triton"), torch.no_grad():
        y, h = selective_scan(*(x[k] for k in NAMES[:8]), True, x["initial_state"], True)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()


@needs_triton
def test_opcheck_custom_ops():
    from hybriddsl.kernels.selective_scan import triton as ss_triton  # noqa: F401 (registers the ops)

    x = make_inputs(1, 3, 4, 2, torch.float32, options=True, h0=True)
    args = tuple(x[k] for k in NAMES) + (True,)
    torch.library.opcheck(
        torch.ops.hybriddsl.selective_scan_fwd.default,
        args,
        test_utils=("test_schema", "test_faketensor", "test_autograd_registration"),
    )
    y, hT, ckpt = torch.ops.hybriddsl.selective_scan_fwd(*args)
    bwd_args = (torch.ones_like(y), torch.ones_like(hT)) + tuple(x[k] for k in NAMES[:8]) + (ckpt, True)
    torch.library.opcheck(
        torch.ops.hybriddsl.selective_scan_bwd.default,
        tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in bwd_args),
        test_utils=("test_schema", "test_faketensor"),
    )


# ----------------------------------------------------------------------------- fast PyTorch path
@pytest.mark.parametrize(
    "b,T,Dm,N,options,h0,chunk",
    [
        pytest.param(2, 256, 32, 16, True, True, 32, id="B2-T256-D32-N16-h0"),
        pytest.param(1, 1, 8, 4, True, False, 32, id="B1-T1-D8-N4"),
        pytest.param(2, 77, 12, 5, False, True, 16, id="B2-T77-D12-N5-bare-h0-ck16"),
    ],
)
def test_chunked_matches_naive(b, T, Dm, N, options, h0, chunk):
    x = make_inputs(b, T, Dm, N, options=options, h0=h0)
    ref = run(selective_scan_naive, as_f32_leaves(x))
    got = run(lambda *a: selective_scan_torch(*a, chunk_size=chunk), x)
    assert (ref[0] - got[0]).abs().max() <= 1e-4
    assert (ref[1] - got[1]).abs().max() <= 1e-4
    compare(ref, got, torch.float32)


@pytest.mark.parametrize(
    "b,T,Dm,N,options,h0,chunk",
    [
        pytest.param(2, 70, 24, 16, True, True, 16, id="B2-T70-D24-N16-h0"),
        pytest.param(1, 1, 8, 4, False, False, 16, id="B1-T1-D8-N4-bare"),
        pytest.param(2, 77, 12, 5, True, True, 32, id="B2-T77-D12-N5-h0-ck32"),
    ],
)
def test_inference_path_matches_naive(b, T, Dm, N, options, h0, chunk):
    """The no-grad path (one in-place op per token) against the loop: output and final state; the public
    function takes it under torch.no_grad()."""
    x = make_inputs(b, T, Dm, N, options=options, h0=h0)
    args = [x[k] for k in NAMES[:8]]
    y_ref, h_ref = selective_scan_naive(*args, True, x["initial_state"], True)
    y, h = selective_scan_inference(*args, True, x["initial_state"], True, chunk_size=chunk)
    assert not y.requires_grad
    assert (y - y_ref).abs().max() <= 1e-5 * y_ref.abs().max() and (h - h_ref).abs().max() <= 1e-5 * h_ref.abs().max()
    with torch.no_grad(), backend("reference"):
        y2, h2 = selective_scan(*args, True, x["initial_state"], True)
    assert torch.equal(y2, selective_scan_inference(*args, True, x["initial_state"], True)[0])
    assert (h2 - h_ref).abs().max() <= 1e-5 * h_ref.abs().max()


@pytest.mark.parametrize(
    "b,T,Dm,N,options,h0,chunk",
    [
        pytest.param(2, 70, 24, 16, True, True, 16, id="B2-T70-D24-N16-h0"),
        pytest.param(1, 1, 8, 4, False, False, 16, id="B1-T1-D8-N4-bare"),
        pytest.param(2, 77, 12, 5, False, True, 32, id="B2-T77-D12-N5-bare-h0-ck32"),
    ],
)
def test_loop_path_matches_naive(b, T, Dm, N, options, h0, chunk):
    """The training path (in-place loop, hand-written backward): outputs, final state and every gradient."""
    x = make_inputs(b, T, Dm, N, options=options, h0=h0)
    ref = run(selective_scan_naive, as_f32_leaves(x))
    got = run(lambda *a: selective_scan_loop(*a, chunk_size=chunk), x)
    compare(ref, got, torch.float32)


def test_loop_path_float64_gradients_match_autograd_of_the_loop():
    """In float64 the hand-written backward equals autograd through the definition to rounding (1e-10)."""
    x = make_inputs(2, 21, 6, 3, torch.float64, h0=True)
    x = {k: None if v is None else v.detach().double().requires_grad_() for k, v in x.items()}
    ref = run(selective_scan_naive, x)
    got = run(lambda *a: selective_scan_loop(*a, chunk_size=8), x)
    for r, g in zip([ref[0], ref[1], *ref[2].values()], [got[0], got[1], *got[2].values()]):
        assert (r - g).abs().max() <= 1e-10 * (1 + r.abs().max())


def test_public_function_on_cpu_uses_fast_path_and_matches_naive():
    x = make_inputs(2, 40, 8, 4, torch.bfloat16, h0=True)
    ref = run(selective_scan_naive, as_f32_leaves(x))
    with backend("reference"):
        got = run(selective_scan, x)
    compare(ref, got, torch.bfloat16)


def test_chunked_bf16_very_long_sequence_is_finite():
    """bf16 at T=16384, including very large dt (decays underflow) and large inputs."""
    x = make_inputs(1, 16384, 4, 4, torch.bfloat16, h0=True)
    with torch.no_grad():
        x["delta"].mul_(8.0).add_(4.0)
        x["u"].mul_(100.0)
        y, h = selective_scan_torch(*(x[k] for k in NAMES[:8]), True, x["initial_state"], True)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()


def test_chunked_gradcheck_float64():
    g = torch.Generator().manual_seed(3)
    b, T, Dm, N = 1, 5, 3, 2
    args = [
        torch.randn(b, T, Dm, generator=g, dtype=torch.float64),  # u
        torch.randn(b, T, Dm, generator=g, dtype=torch.float64) * 0.5,  # delta
        -torch.exp(torch.randn(Dm, N, generator=g, dtype=torch.float64)),  # A
        torch.randn(b, T, N, generator=g, dtype=torch.float64),  # B
        torch.randn(b, T, N, generator=g, dtype=torch.float64),  # C
        torch.randn(Dm, generator=g, dtype=torch.float64),  # D
        torch.randn(b, T, Dm, generator=g, dtype=torch.float64),  # z
        torch.randn(Dm, generator=g, dtype=torch.float64) * 0.3,  # delta_bias
        torch.randn(b, Dm, N, generator=g, dtype=torch.float64),  # initial_state
    ]
    args = [a.requires_grad_() for a in args]

    def f(u, delta, A, B, C, D, z, bias, h0):
        y, h = selective_scan_torch(u, delta, A, B, C, D, z, bias, True, h0, True, chunk_size=2)
        return y, h

    assert torch.autograd.gradcheck(f, args)


# ----------------------------------------------------------------------------- one-token step
def step_at(x: dict, t: int, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`selective_scan_step` (softplus on) on token ``t`` of the sequence inputs ``x``, from state ``h``."""

    def tok(v):
        return None if v is None else v[:, t]

    return selective_scan_step(
        tok(x["u"]), tok(x["delta"]), x["A"], tok(x["B"]), tok(x["C"]), x["D"], tok(x["z"]), x["delta_bias"], True, h
    )


@pytest.mark.parametrize("options", [True, False], ids=["D-z-bias", "bare"])
def test_step_matches_naive(options):
    b, T, Dm, N = 2, 12, 8, 4
    x = make_inputs(b, T, Dm, N, options=options, h0=True)
    with torch.no_grad():
        y_ref, h_ref = selective_scan_naive(*(x[k] for k in NAMES[:8]), True, x["initial_state"], True)
        h = x["initial_state"]
        ys = []
        for t in range(T):
            y, h = step_at(x, t, h)
            ys.append(y)
    assert h.dtype == torch.float32
    assert (torch.stack(ys, 1) - y_ref).abs().max() <= 1e-5
    assert (h - h_ref).abs().max() <= 1e-5


def test_chunked_prefill_then_step_continues_the_sequence():
    x = make_inputs(1, 24, 8, 4)
    with torch.no_grad():
        y_all, _ = selective_scan_naive(*(x[k] for k in NAMES[:8]), True, None, False)
        _, h = selective_scan(
            *(x[k][:, :20] if k in ("u", "delta", "B", "C", "z") else x[k] for k in NAMES[:8]),
            True,
            None,
            True,
        )
        for t in range(20, 24):
            y, h = step_at(x, t, h)
            assert (y - y_all[:, t]).abs().max() <= 1e-5


# ----------------------------------------------------------------------------- argument checks
def test_bad_shapes_raise_clear_errors():
    x = make_inputs(1, 4, 8, 4)
    args = [x[k] for k in NAMES[:8]]
    with pytest.raises(ValueError, match="u must be"):
        selective_scan(args[0][0], *args[1:])
    bad_B = list(args)
    bad_B[3] = torch.randn(1, 4, 5)
    with pytest.raises(ValueError, match="B must have shape"):
        selective_scan(*bad_B)
    with pytest.raises(ValueError, match="A must be"):
        selective_scan(args[0], args[1], torch.randn(7, 4), *args[3:])
    with pytest.raises(ValueError, match="initial_state"):
        selective_scan(*args, initial_state=torch.zeros(1, 8, 3))
    with pytest.raises(ValueError, match="state must have shape"):
        selective_scan_step(
            args[0][:, 0],
            args[1][:, 0],
            args[2],
            args[3][:, 0],
            args[4][:, 0],
            None,
            None,
            None,
            True,
            torch.zeros(1, 8, 5),
        )
