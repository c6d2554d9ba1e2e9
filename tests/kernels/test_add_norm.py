"""add_norm: Triton (interpreter on CPU) and the F.rms_norm/F.layer_norm path vs the float32 formulas."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from hybriddsl.kernels import backend
from hybriddsl.kernels.add_norm import add_norm, add_norm_naive, add_norm_torch
from hybriddsl.kernels.testing import TOLERANCE, assert_close
from tests.kernels.helpers import DTYPES, grads_of, leaf_copies, random_loss


def _inputs(shape, dtype, residual=True, weight=True, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = shape[-1]
    x = (torch.randn(*shape, generator=g) * 2 + 0.5).to(dtype)  # nonzero mean: LayerNorm centering matters
    res = torch.randn(*shape, generator=g).to(dtype) if residual else None
    w = 1 + 0.3 * torch.randn(d, generator=g) if weight else None
    b = 0.3 * torch.randn(d, generator=g) if bias else None
    return x, res, w, b


def _run(fn, x, res, w, b, norm, fp32res, eps=1e-5):
    """Outputs and the gradients of every tensor input under a loss that uses both y and r."""
    leaves = leaf_copies(x, res, w, b)
    y, r = fn(*leaves, eps, norm, fp32res)
    loss = random_loss((y, r), seed=11)  # r in the loss: the gradient reaching r directly is tested
    return y, r, grads_of(loss, leaves)


FLAGS = list(itertools.product(["rms", "layer"], [True, False], [True, False], [True, False]))


@pytest.mark.parametrize(
    ("norm", "residual", "affine", "fp32res"),
    FLAGS,
    ids=[f"{n}-{'res' if r else 'nores'}-{'affine' if a else 'plain'}-{'r32' if f else 'rx'}" for n, r, a, f in FLAGS],
)
def test_reference_matches_naive(norm, residual, affine, fp32res) -> None:
    x, res, w, b = _inputs((3, 7, 48), torch.float32, residual, affine, affine)
    ref = _run(add_norm_naive, x, res, w, b, norm, fp32res)
    got = _run(add_norm_torch, x, res, w, b, norm, fp32res)
    assert (ref[0] - got[0]).abs().max() <= 1e-5 and torch.equal(ref[1], got[1])
    for r, g in zip(ref[2], got[2]):
        assert (r is None) == (g is None)
        if r is not None:
            assert (r - g).abs().max() <= 1e-4


def test_matches_torch_functional_directly() -> None:
    # the spec: y is exactly F.rms_norm / F.layer_norm of (x + residual)
    x, res, w, b = _inputs((4, 64), torch.float32)
    y, r = add_norm(x, res, w, b, 1e-6, "layer")
    assert torch.equal(r, x + res)
    assert (y - F.layer_norm(x + res, (64,), w, b, 1e-6)).abs().max() <= 1e-6
    y, _ = add_norm(x, res, w, None, 1e-6, "rms")
    assert (y - F.rms_norm(x + res, (64,), w, 1e-6)).abs().max() <= 1e-6


@pytest.mark.parametrize("norm", ["rms", "layer"])
def test_reference_gradcheck_float64(norm) -> None:
    x, res, w, b = (t.double().requires_grad_() for t in _inputs((2, 3, 6), torch.float32))
    assert torch.autograd.gradcheck(lambda *a: add_norm_torch(*a, 1e-5, norm), (x, res, w, b))


# bf16 cases run in the interpreter too: this kernel has no tl.dot, the one operation whose bf16 result Triton 3.9's
# interpreter gets wrong (errors ~1e10 where fp16 and fp32 agree); its bf16 loads, stores and float32 math are right.
CASES = [
    # (rows shape, D, dtype, norm, residual, affine, residual_in_fp32)
    ((3, 5), 40, "fp32", "rms", True, True, False),
    ((3, 5), 40, "fp32", "layer", True, True, False),
    ((2,), 256, "fp32", "layer", False, True, True),
    ((1,), 40, "fp32", "rms", True, False, False),  # one row, no affine
    ((2, 9), 40, "bf16", "rms", True, True, False),
    ((2, 9), 40, "bf16", "layer", True, True, True),
    ((17,), 256, "bf16", "layer", True, True, False),
    ((17,), 256, "bf16", "rms", False, True, True),
    ((4, 3), 96, "fp16", "layer", True, False, False),
]


def _case_id(c) -> str:
    rows, d, dt, norm, res, affine, r32 = c
    rows_id = "x".join(map(str, rows))
    return f"N{rows_id}-D{d}-{dt}-{norm}-{'res' if res else 'nores'}-{'affine' if affine else 'plain'}" + (
        "-r32" if r32 else ""
    )


@pytest.mark.parametrize(("rows", "d", "dt", "norm", "residual", "affine", "fp32res"), CASES, ids=map(_case_id, CASES))
def test_triton_matches_naive(rows, d, dt, norm, residual, affine, fp32res) -> None:
    dtype = DTYPES[dt]
    x, res, w, b = _inputs((*rows, d), dtype, residual, affine, affine, seed=d)
    ref_y, ref_r, ref_grads = _run(add_norm_naive, x, res, w, b, norm, fp32res)
    with backend("triton"):
        y, r, grads = _run(add_norm, x, res, w, b, norm, fp32res)
    assert y.dtype == dtype and r.dtype == (torch.float32 if fp32res else dtype)
    tol = TOLERANCE[dtype]
    assert_close("y", ref_y, y, tol["out"])
    assert_close("r", ref_r, r, tol["out"])
    for name, rg, gg, inp in zip(["dx", "dresidual", "dweight", "dbias"], ref_grads, grads, (x, res, w, b)):
        assert (rg is None) == (gg is None), name
        if rg is not None:
            assert gg.dtype == inp.dtype, name
            # the reference's grads pass through the same bf16 roundings, so compare at grad tolerance
            assert_close(name, rg, gg, tol["grad"])


@pytest.mark.parametrize("kernel", ["reference", "triton"])
@pytest.mark.parametrize("norm", ["rms", "layer"])
def test_gradients_reach_norm_module_parameters(kernel, norm) -> None:
    d = 32
    module = torch.nn.RMSNorm(d, eps=1e-6) if norm == "rms" else torch.nn.LayerNorm(d)
    with torch.no_grad():
        module.weight.add_(0.1 * torch.randn(d))
    x, res, _, _ = _inputs((2, 6, d), torch.float32, seed=5)
    bias = getattr(module, "bias", None)
    with backend(kernel):
        y, r = add_norm(x, res, module.weight, bias, module.eps, norm)
    (y.square().sum() + r.sum()).backward()
    y_ref = module.__class__(d, eps=module.eps)
    y_ref.load_state_dict(module.state_dict())
    (y_ref(x + res).square().sum()).backward()
    assert module.weight.grad is not None
    assert (module.weight.grad - y_ref.weight.grad).abs().max() <= 1e-4
    if bias is not None:
        assert (bias.grad - y_ref.bias.grad).abs().max() <= 1e-4


def test_triton_large_values_bf16_finite() -> None:
    x, res, w, b = _inputs((8, 512), torch.bfloat16)
    with backend("triton"):
        y, r = add_norm(x * 1000, res * 1000, w, b, 1e-5, "layer")
    assert torch.isfinite(y).all()
    assert_close("y", add_norm_naive(x * 1000, res * 1000, w, b, 1e-5, "layer")[0], y, 5e-3)


def test_opcheck_custom_op() -> None:
    from hybriddsl.kernels.add_norm.triton import add_norm_op

    x, res, w, b = (t.requires_grad_() for t in _inputs((3, 16), torch.float32))
    torch.library.opcheck(add_norm_op, (x, res, w, b, 1e-5, False, False))
    torch.library.opcheck(
        add_norm_op, (x, None, None, None, 1e-5, True, True), test_utils=("test_schema", "test_faketensor")
    )


def test_compiles_fullgraph_as_one_op() -> None:
    x, res, w, b = (t.requires_grad_() for t in _inputs((2, 5, 16), torch.float32))

    def block(x, res, w, b):
        return add_norm(x, res, w, b, 1e-5, "layer")

    with backend("triton"):
        y, r = torch.compile(block, fullgraph=True, backend="aot_eager")(x, res, w, b)
        (y.sum() + r.sum()).backward()
    ref_y, _ = add_norm_naive(x.detach(), res.detach(), w.detach(), b.detach(), 1e-5, "layer")
    assert (y - ref_y).abs().max() <= 1e-5 and w.grad is not None and x.grad is not None


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"norm": "batch"}, "norm must be"),
        ({"residual": torch.zeros(4, 7)}, "residual"),
        ({"weight": torch.zeros(7)}, "weight"),
        ({"bias": torch.zeros(3, 8)}, "bias"),
    ],
    ids=["norm", "residual", "weight", "bias"],
)
def test_bad_arguments_raise(kwargs, msg) -> None:
    with pytest.raises(ValueError, match=msg):
        add_norm(torch.zeros(4, 8), **kwargs)
