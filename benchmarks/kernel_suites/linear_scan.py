"""Benchmark suite: the linear scan h_t = a_t h_{t-1} + b_t (Griffin RG-LRU), bf16.

Memory bound: the forward reads a and b and writes h (6 bytes per element in bf16), so the
yardstick is a ``clone()`` moving the same bytes; notes give ours as a fraction of that bandwidth.
Compared: our Triton op, our chunked PyTorch path, the eager loop over time, torch.compile of the
chunked path, and fla's HGRN kernels (h = exp(g) h + x: we pass g = log a, x = b, prepared outside
the timed region).
"""

from __future__ import annotations

import torch

from benchmarks.common import Timing, bench_ms, fwd_and_fwdbwd
from hybriddsl.kernels import backend
from hybriddsl.kernels.linear_scan import linear_scan, linear_scan_loop, linear_scan_naive, linear_scan_torch

SUITE = "linear_scan"


def _clone_ms(n_elems: int, device: str, dtype: torch.dtype) -> float:
    """Milliseconds to clone ``n_elems`` elements (reads and writes n_elems each)."""
    src = torch.empty(n_elems, device=device, dtype=dtype)
    return bench_ms(lambda: src.clone())


def run(device: str, quick: bool) -> list[Timing]:
    """Time forward and forward+backward at B=8, T=2048, D=4096 bf16 (``quick``: a tiny shape)."""
    bsz, t, d = (2, 64, 32) if quick else (8, 2048, 4096)
    dtype = torch.bfloat16
    case = f"B{bsz}-T{t}-D{d}-bf16"
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.sigmoid(torch.randn(bsz, t, d, device=device, generator=gen) + 2).to(dtype).requires_grad_()
    b = torch.randn(bsz, t, d, device=device, generator=gen, dtype=dtype).requires_grad_()
    out: list[Timing] = []

    def add(impl: str, fn, inputs, note: str = "") -> None:
        try:
            fwd, fb = fwd_and_fwdbwd(fn, inputs)
            out.append(Timing(SUITE, case, impl, fwd, fb, note))
        except Exception as e:  # one failing implementation should not stop the suite
            out.append(Timing(SUITE, case, impl, None, None, f"failed: {type(e).__name__}: {e}"[:200]))

    # bytes of the ideal kernels: fwd reads a, b, writes h; bwd reads a, h, dh, writes da, db
    clone_fwd = _clone_ms(3 * bsz * t * d // 2, device, dtype)
    clone_fb = _clone_ms(8 * bsz * t * d // 2, device, dtype)
    out.append(Timing(SUITE, case, "clone (same bytes)", clone_fwd, clone_fb, "fwd 6 B/elem, fwd+bwd 16 B/elem"))

    if device == "cuda":

        def ours(a, b):
            with backend("triton"):
                return linear_scan(a, b)

        add("hybriddsl-triton", ours, [a, b])
        last = out[-1]
        if last.fwd_ms:
            last.note = f"fwd at {clone_fwd / last.fwd_ms:.0%} of clone bandwidth" + (
                f", fwd+bwd at {clone_fb / last.fwdbwd_ms:.0%} (incl. loss traffic)" if last.fwdbwd_ms else ""
            )
    else:
        out.append(Timing(SUITE, case, "hybriddsl-triton", None, None, "needs CUDA"))

    add("eager-chunked-loop (ours, CPU path)", linear_scan_loop, [a, b], "chunks scanned side by side")
    add("eager-doubling", linear_scan_torch, [a, b], "chunked recursive doubling, autograd")
    add("eager-loop", linear_scan_naive, [a, b], "float32 loop over time")
    if not quick:
        add("torch.compile(chunked)", torch.compile(linear_scan_torch), [a, b])

    try:
        from fla.ops.hgrn import chunk_hgrn, fused_recurrent_hgrn
    except Exception:
        for impl in ("fla-chunk_hgrn", "fla-fused_recurrent_hgrn"):
            out.append(Timing(SUITE, case, impl, None, None, "not installed"))
    else:
        g = a.detach().float().clamp_min(1e-30).log().to(dtype).requires_grad_()  # log decay, bf16
        x = b.detach().clone().requires_grad_()
        add("fla-chunk_hgrn", lambda x, g: chunk_hgrn(x, g), [x, g], "x=b, g=log a")
        add("fla-fused_recurrent_hgrn", lambda x, g: fused_recurrent_hgrn(x, g), [x, g], "x=b, g=log a")
    return out


if __name__ == "__main__":
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    for row in run(dev, quick=dev == "cpu"):
        print(row)
