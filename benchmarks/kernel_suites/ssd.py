"""Benchmark suite: SSD (Mamba-2's scan), B=8, T=2048, 32 heads of 64, state 128, one B/C group, bf16.

Compared on the same inputs (x, dt, A, B, C as Mamba-2 hands them over): our Triton op (``ssd`` with
``q = C``, ``k = B``, ``v = dt x``, ``g = dt A``; the two products are timed with it), our chunked PyTorch path
(``ssd_torch``, the CPU path) and mamba_ssm's Triton ``mamba_chunk_scan_combined`` (the bar of issue 15:
ours <= 1.2x its time, forward and forward + backward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.common import Timing, fwd_and_fwdbwd
from hybriddsl.kernels import backend
from hybriddsl.kernels.ssd import ssd, ssd_torch

SUITE = "ssd"


def run(device: str, quick: bool) -> list[Timing]:
    """Forward and forward+backward timings of every implementation."""
    B, T, H, P, G, N = (1, 64, 2, 16, 1, 16) if quick else (8, 2048, 32, 64, 1, 128)
    dtype = torch.bfloat16
    case = f"B{B}-T{T}-H{H}-P{P}-G{G}-N{N}-bf16"
    gen = torch.Generator(device=device).manual_seed(0)
    rnd = lambda *s: torch.randn(*s, device=device, generator=gen, dtype=torch.float32)
    x = rnd(B, T, H, P).to(dtype).requires_grad_()
    dt = F.softplus(rnd(B, T, H) - 4.0).requires_grad_()  # Δ around 0.02, as Mamba-2's init
    A = (-torch.rand(H, device=device, generator=gen) * 15 - 1).requires_grad_()
    Bm, Cm = (rnd(B, T, G, N).to(dtype).requires_grad_() for _ in range(2))
    inputs = [x, dt, A, Bm, Cm]
    out: list[Timing] = []

    def add(impl: str, fn, note: str = "") -> None:
        try:
            fwd, fb = fwd_and_fwdbwd(fn, inputs)
            out.append(Timing(SUITE, case, impl, fwd, fb, note))
        except Exception as e:  # one failing implementation should not stop the suite
            out.append(Timing(SUITE, case, impl, None, None, f"failed: {type(e).__name__}: {e}"[:200]))

    def ours(x, dt, A, Bm, Cm, torch_path=False):
        v, g = (x * dt[..., None]).to(x.dtype), dt * A
        if torch_path:
            return ssd_torch(Cm, Bm, v, g, 1.0)[0]
        with backend("triton"):
            return ssd(Cm, Bm, v, g, 1.0)[0]

    if device == "cuda":
        add("hybriddsl-triton", ours)
    else:
        out.append(Timing(SUITE, case, "hybriddsl-triton", None, None, "needs CUDA"))
    add("eager-ours (ssd_torch)", lambda *a: ours(*a, torch_path=True))
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception as e:
        out.append(Timing(SUITE, case, "mamba_ssm", None, None, f"not installed ({type(e).__name__})"))
    else:
        if device == "cuda":
            add("mamba_ssm", lambda x, dt, A, Bm, Cm: mamba_chunk_scan_combined(x, dt, A, Bm, Cm, 64))
        else:
            out.append(Timing(SUITE, case, "mamba_ssm", None, None, "needs CUDA"))
    return out


if __name__ == "__main__":
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    for t in run(dev, quick=dev != "cuda"):
        print(t)
