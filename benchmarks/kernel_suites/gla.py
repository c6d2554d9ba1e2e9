"""Benchmark suite: chunked gated linear attention, B=8, T=2048, H=16, K=V=128, bf16.

Three variants: per-key decay (GLA), scalar decay per head (Mamba-2/SSD) and the RWKV-6 bonus ``u``.
Compared: our Triton op, our eager PyTorch path (``gla_torch``, the CPU path), and
flash-linear-attention (``fla.ops.gla.chunk_gla``, ``fla.ops.simple_gla.chunk_simple_gla``,
``fla.ops.rwkv6.chunk_rwkv6``) with ``FLA_DISABLE_BACKEND_DISPATCH=1``. fla's chunk_simple_gla refuses
Hopper with Triton 3.4 - 3.7.0 (DESIGN.md section 8); that shows up as a "failed" note.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from benchmarks.common import Timing, fwd_and_fwdbwd
from hybriddsl.kernels import backend
from hybriddsl.kernels.gla import chunk_gla, gla_torch

SUITE = "gla"


def _fla(variant: str):
    """fla's function for a variant, called with our argument layout ([B, T, H, K])."""
    os.environ.setdefault("FLA_DISABLE_BACKEND_DISPATCH", "1")
    if variant == "gk":
        from fla.ops.gla import chunk_gla as fla_gla

        return lambda q, k, v, g: fla_gla(q, k, v, g)
    if variant == "gs":
        from fla.ops.simple_gla import chunk_simple_gla

        return lambda q, k, v, g: chunk_simple_gla(q, k, v, g)
    from fla.ops.rwkv6 import chunk_rwkv6

    return lambda q, k, v, g, u: chunk_rwkv6(q, k, v, g, u)


def _case(device: str, quick: bool, variant: str) -> list[Timing]:
    B, T, H, D = (1, 64, 2, 16) if quick else (8, 2048, 16, 128)
    dtype = torch.bfloat16
    case = f"B{B}-T{T}-H{H}-D{D}-bf16-{variant}"
    gen = torch.Generator(device=device).manual_seed(0)
    rnd = lambda *s: torch.randn(*s, device=device, generator=gen, dtype=torch.float32)
    q, k, v = (rnd(B, T, H, D).to(dtype).requires_grad_() for _ in range(3))
    g_raw = rnd(B, T, H) if variant == "gs" else rnd(B, T, H, D)
    g = (F.logsigmoid(g_raw) / 16).to(dtype).requires_grad_()  # GLA's gate parameterisation
    inputs = [q, k, v, g]
    if variant == "u":
        inputs.append((rnd(H, D) * 0.1).to(dtype).requires_grad_())
    out: list[Timing] = []

    def add(impl: str, fn, note: str = "") -> None:
        try:
            fwd, fb = fwd_and_fwdbwd(fn, inputs)
            out.append(Timing(SUITE, case, impl, fwd, fb, note))
        except Exception as e:  # one failing implementation should not stop the suite
            out.append(Timing(SUITE, case, impl, None, None, f"failed: {type(e).__name__}: {e}"[:200]))

    if device == "cuda":

        def ours(*a):
            with backend("triton"):
                return chunk_gla(*a)[0]

        add("hybriddsl-triton", ours)
    else:
        out.append(Timing(SUITE, case, "hybriddsl-triton", None, None, "needs CUDA"))
    add("eager-ours (gla_torch)", lambda *a: gla_torch(*a)[0])

    try:
        fla_fn = _fla(variant)
    except Exception as e:
        out.append(Timing(SUITE, case, "fla", None, None, f"not installed ({type(e).__name__})"))
    else:
        if device == "cuda":
            add("fla", lambda *a: fla_fn(*a)[0])
        else:
            out.append(Timing(SUITE, case, "fla", None, None, "needs CUDA"))
    return out


def run(device: str, quick: bool) -> list[Timing]:
    """Forward and forward+backward timings of every implementation for the three decay variants."""
    out: list[Timing] = []
    for variant in ("gk", "gs", "u"):
        out += _case(device, quick, variant)
    return out


if __name__ == "__main__":
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    for t in run(dev, quick=dev != "cuda"):
        print(t)
