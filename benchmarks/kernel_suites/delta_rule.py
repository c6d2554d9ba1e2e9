"""Benchmark suite: chunked delta rule and gated delta rule, B=8, T=2048, H=16, K=V=128, bf16.

Compared: our Triton op, our chunked PyTorch path (the CPU fast path, run eagerly on the same
device), and flash-linear-attention's ``chunk_delta_rule`` / ``chunk_gated_delta_rule`` (with
``FLA_DISABLE_BACKEND_DISPATCH=1``, as DESIGN.md §8 says). q and k are L2-normalized outside the timed
region (the layers do it), so every implementation gets the same inputs.
"""

from __future__ import annotations

import os

import torch

from benchmarks.common import Timing, fwd_and_fwdbwd
from hybriddsl.kernels import backend
from hybriddsl.kernels.delta_rule import chunk_delta_rule, delta_rule_torch

SUITE = "delta_rule"


def _inputs(bsz: int, t: int, h: int, d: int, device: str, dtype: torch.dtype):
    gen = torch.Generator(device=device).manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, device=device, generator=gen)

    q = torch.nn.functional.normalize(randn(bsz, t, h, d), dim=-1).to(dtype)
    k = torch.nn.functional.normalize(randn(bsz, t, h, d), dim=-1).to(dtype)
    v = randn(bsz, t, h, d).to(dtype)
    beta = torch.sigmoid(randn(bsz, t, h)).to(dtype)
    g = torch.nn.functional.logsigmoid(randn(bsz, t, h) + 3.0).to(dtype)  # alpha around 0.95
    return [x.requires_grad_() for x in (q, k, v, beta, g)]


def run(device: str, quick: bool) -> list[Timing]:
    """Time forward and forward+backward (``quick``: a tiny shape, e.g. on CPU)."""
    bsz, t, h, d = (1, 64, 2, 32) if quick else (8, 2048, 16, 128)
    dtype = torch.bfloat16
    q, k, v, beta, g = _inputs(bsz, t, h, d, device, dtype)
    out: list[Timing] = []

    for gated in (False, True):
        case = f"B{bsz}-T{t}-H{h}-D{d}-bf16-{'gated' if gated else 'delta'}"
        inputs = [q, k, v, beta] + ([g] if gated else [])

        def add(impl: str, fn, note: str = "", case=case, inputs=inputs) -> None:
            try:
                fwd, fb = fwd_and_fwdbwd(fn, inputs)
                out.append(Timing(SUITE, case, impl, fwd, fb, note))
            except Exception as e:  # one failing implementation should not stop the suite
                out.append(Timing(SUITE, case, impl, None, None, f"failed: {type(e).__name__}: {e}"[:200]))

        if device == "cuda":

            def ours(q, k, v, beta, g=None):
                with backend("triton"):
                    return chunk_delta_rule(q, k, v, beta, g)

            add("hybriddsl-triton", ours)
        else:
            out.append(Timing(SUITE, case, "hybriddsl-triton", None, None, "needs CUDA"))

        add("eager-chunked (ours, CPU path)", lambda q, k, v, beta, g=None: delta_rule_torch(q, k, v, beta, g))

        os.environ.setdefault("FLA_DISABLE_BACKEND_DISPATCH", "1")
        try:
            if gated:
                from fla.ops.gated_delta_rule import chunk_gated_delta_rule as fla_fn
            else:
                from fla.ops.delta_rule import chunk_delta_rule as fla_fn
        except Exception:
            out.append(Timing(SUITE, case, "fla", None, None, "not installed"))
            continue
        name = "fla-chunk_gated_delta_rule" if gated else "fla-chunk_delta_rule"
        if device != "cuda":
            out.append(Timing(SUITE, case, name, None, None, "needs CUDA"))
        elif gated:
            add(name, lambda q, k, v, beta, g: fla_fn(q=q, k=k, v=v, g=g, beta=beta))
        else:
            add(name, lambda q, k, v, beta: fla_fn(q=q, k=k, v=v, beta=beta))
    return out


if __name__ == "__main__":
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    for row in run(dev, quick=dev == "cpu"):
        print(row)
