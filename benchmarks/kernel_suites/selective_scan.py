"""Selective scan (Mamba-1) timings: our Triton kernels, our eager chunked PyTorch path, and
mamba_ssm's CUDA ``selective_scan_fn`` (the best existing implementation), forward and
forward+backward in bf16 at B=8, L=2048, d_inner=2048, N=16 (with D, z and delta_bias, softplus)."""

from __future__ import annotations

import torch

from benchmarks.common import Timing, fwd_and_fwdbwd
from hybriddsl.kernels.selective_scan.reference import selective_scan_torch

SUITE = "selective_scan"


def _inputs(b: int, T: int, Dm: int, N: int, device: str) -> list[torch.Tensor]:
    """u, delta, A, B, C, D, z, delta_bias as leaves in our channels-last layout."""
    g = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*shape, dtype=torch.bfloat16, scale=1.0, shift=0.0):
        x = torch.randn(*shape, generator=g) * scale + shift
        return x.to(device=device, dtype=dtype).requires_grad_()

    A = (-torch.exp(torch.randn(Dm, N, generator=g) * 0.5)).to(device).requires_grad_()
    return [
        rnd(b, T, Dm),  # u
        rnd(b, T, Dm, scale=0.5, shift=-1.0),  # delta
        A,
        rnd(b, T, N),  # B
        rnd(b, T, N),  # C
        rnd(Dm, dtype=torch.float32),  # D
        rnd(b, T, Dm),  # z
        rnd(Dm, dtype=torch.float32, scale=0.3),  # delta_bias
    ]


def _measure(impl: str, case: str, fn, inputs, quick: bool) -> Timing:
    kw = {"warmup": 1, "rep": 3} if quick else {}
    try:
        f, fb = fwd_and_fwdbwd(fn, inputs, **kw)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return Timing(SUITE, case, impl, None, None, note="out of memory")
    return Timing(SUITE, case, impl, f, fb)


def run(device: str, quick: bool) -> list[Timing]:
    """Time each implementation; ``quick`` uses tiny shapes so the script runs on CPU."""
    b, T, Dm, N = (1, 64, 32, 16) if quick else (8, 2048, 2048, 16)
    case = f"B{b}-T{T}-D{Dm}-N{N}-bf16"
    inputs = _inputs(b, T, Dm, N, device)
    out: list[Timing] = []

    # ours, Triton (through the public custom op)
    if device.startswith("cuda"):
        from hybriddsl.kernels.selective_scan.triton import selective_scan_triton

        def ours(u, delta, A, B, C, D, z, bias):
            return selective_scan_triton(u, delta, A, B, C, D, z, bias, True)

        out.append(_measure("hybriddsl-triton", case, ours, inputs, quick))
    else:
        out.append(Timing(SUITE, case, "hybriddsl-triton", None, None, note="needs CUDA"))

    # ours, eager chunked PyTorch path
    def eager(u, delta, A, B, C, D, z, bias):
        return selective_scan_torch(u, delta, A, B, C, D, z, bias, True)

    out.append(_measure("eager", case, eager, inputs, quick))

    # mamba_ssm's CUDA kernel; its layout is channels-first: u/delta/z [b, Dm, T], B/C [b, N, T]
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:
        out.append(Timing(SUITE, case, "mamba_ssm", None, None, note="not installed"))
        return out
    if not device.startswith("cuda"):
        out.append(Timing(SUITE, case, "mamba_ssm", None, None, note="needs CUDA"))
        return out
    u, delta, A, B, C, D, z, bias = inputs
    cf = [t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (u, delta, B, C, z)]
    ms_inputs = [cf[0], cf[1], A, cf[2], cf[3], D, cf[4], bias]

    def mamba(u, delta, A, B, C, D, z, bias):
        return selective_scan_fn(u, delta, A, B, C, D, z, bias, delta_softplus=True)

    out.append(_measure("mamba_ssm", case, mamba, ms_inputs, quick))
    return out


if __name__ == "__main__":
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    for t in run(dev, quick=dev == "cpu"):
        print(t)
