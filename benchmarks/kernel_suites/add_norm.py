"""Benchmark suite: fused residual add + RMSNorm / LayerNorm, rows 8*2048, D=4096, bf16.

Memory bound: the forward reads x and residual and writes y and r (8 bytes per element in bf16); a
``clone()`` of the same bytes is the yardstick. Compared: our Triton op, eager ``x + res`` then
``F.rms_norm`` / ``F.layer_norm`` (our CPU path), torch.compile of that eager code, and fla's fused
norm with residual (``fla.modules.layernorm``).
"""

from __future__ import annotations

import torch

from benchmarks.common import Timing, bench_ms, fwd_and_fwdbwd
from hybriddsl.kernels import backend
from hybriddsl.kernels.add_norm import add_norm, add_norm_torch

SUITE = "add_norm"


def _clone_ms(n_elems: int, device: str, dtype: torch.dtype) -> float:
    src = torch.empty(n_elems, device=device, dtype=dtype)
    return bench_ms(lambda: src.clone())


def _case(device: str, quick: bool, norm: str) -> list[Timing]:
    rows, d = (64, 256) if quick else (8 * 2048, 4096)
    dtype = torch.bfloat16
    case = f"N{rows}-D{d}-bf16-{norm}"
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(rows, d, device=device, generator=gen, dtype=dtype).requires_grad_()
    res = torch.randn(rows, d, device=device, generator=gen, dtype=dtype).requires_grad_()
    w = torch.ones(d, device=device, dtype=dtype, requires_grad=True)
    b = torch.zeros(d, device=device, dtype=dtype, requires_grad=True) if norm == "layer" else None
    inputs = [x, res, w] + ([b] if b is not None else [])
    eps = 1e-5
    out: list[Timing] = []

    def add(impl: str, fn, note: str = "") -> None:
        try:
            fwd, fb = fwd_and_fwdbwd(fn, inputs)
            out.append(Timing(SUITE, case, impl, fwd, fb, note))
        except Exception as e:  # one failing implementation should not stop the suite
            out.append(Timing(SUITE, case, impl, None, None, f"failed: {type(e).__name__}: {e}"[:200]))

    def eager(x, res, w, b=None):
        r = x + res
        if norm == "rms":
            return torch.nn.functional.rms_norm(r, (d,), w, eps), r
        return torch.nn.functional.layer_norm(r, (d,), w, b, eps), r

    # fwd: read x, res, write y, r; bwd: read dy, r (recompute stats), write dx, dres (dr is zeros)
    clone_fwd = _clone_ms(2 * rows * d, device, dtype)
    clone_fb = _clone_ms(4 * rows * d, device, dtype)
    out.append(Timing(SUITE, case, "clone (same bytes)", clone_fwd, clone_fb, "fwd 8 B/elem, fwd+bwd 16 B/elem"))

    if device == "cuda":

        def ours(*args):
            with backend("triton"):
                return add_norm(*args[:3], args[3] if len(args) > 3 else None, eps, norm)

        add("hybriddsl-triton", ours)
        last = out[-1]
        if last.fwd_ms:
            last.note = f"fwd at {clone_fwd / last.fwd_ms:.0%} of clone bandwidth"
    else:
        out.append(Timing(SUITE, case, "hybriddsl-triton", None, None, "needs CUDA"))

    add("eager (x+res, F.norm)", eager)
    add(
        "eager-ours (CPU path, fp32 norm)",
        lambda *a: add_norm_torch(*a[:3], a[3] if len(a) > 3 else None, eps, norm),
    )
    if not quick:
        add("torch.compile(eager)", torch.compile(eager))

    try:
        from fla.modules.layernorm import layer_norm as fla_layer_norm
        from fla.modules.layernorm import rms_norm as fla_rms_norm
    except Exception:
        out.append(Timing(SUITE, case, "fla-layernorm", None, None, "not installed"))
    else:
        if norm == "rms":
            add(
                "fla-rms_norm",
                lambda x, res, w: fla_rms_norm(x, w, None, residual=res, eps=eps, prenorm=True),
            )
        else:
            add(
                "fla-layer_norm",
                lambda x, res, w, b: fla_layer_norm(x, w, b, residual=res, eps=eps, prenorm=True),
            )
    return out


def run(device: str, quick: bool) -> list[Timing]:
    """Time forward and forward+backward for RMSNorm and LayerNorm (``quick``: a tiny shape)."""
    return _case(device, quick, "rms") + _case(device, quick, "layer")


if __name__ == "__main__":
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    for row in run(dev, quick=dev == "cpu"):
        print(row)
