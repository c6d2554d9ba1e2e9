"""Sliding-window attention: the dense boolean mask (the reference) vs the fast paths, in one interleaved run.

    python -m benchmarks.attention                        # CPU: T = 2048, 4096 (dense, chunked); short
    python -m benchmarks.attention --device cuda          # GPU: T = 2048 .. 16384, dense / chunked / flex (compiled)
    python -m benchmarks.attention --seq 2048,8192 --window 512 --md out.md

Each row: median ms of forward and of forward + backward (the sum of the output) per implementation, and the
dense / this ratio (above 1: this is faster than the dense mask). Implementations are timed in turn, repetition by
repetition, so a load change on a shared machine hits all of them alike. The dense path is skipped where its
[T, T] scores would exceed --dense-max-gb.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from hybriddsl.latency import call_times  # noqa: E402
from hybriddsl.layers import window_attention as wa  # noqa: E402


def _time(fn, device: str) -> float:
    """Milliseconds of one call (CUDA events on a GPU)."""
    return call_times(fn, 1, cuda=device == "cuda")[0] * 1e3


def run(device: str, seqs: list[int], window: int, batch: int, heads: int, dim: int, reps: int, dense_max_gb: float):
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    impls = ["dense", "chunked"] + (["flex"] if device == "cuda" and wa._flex() is not None else [])
    rows = []
    for t in seqs:
        g = torch.Generator(device="cpu").manual_seed(0)
        q, k, v = (torch.randn(batch, heads, t, dim, generator=g).to(device, dtype).requires_grad_() for _ in range(3))
        scores_gb = batch * heads * t * t * 4 / 1e9
        here = [i for i in impls if i != "dense" or scores_gb <= dense_max_gb]

        def fwd(impl, q=q, k=k, v=v):
            with torch.no_grad():
                wa.sliding_window_attention(q, k, v, window, impl)

        def fwdbwd(impl, q=q, k=k, v=v):
            o = wa.sliding_window_attention(q, k, v, window, impl)
            torch.autograd.grad(o.float().sum(), (q, k, v))

        times = {(i, m): [] for i in here for m in ("fwd", "fwdbwd")}
        for impl in here:  # warm-up (flex compiles here)
            fwd(impl)
            fwdbwd(impl)
        for _ in range(reps):
            for impl in here:
                times[(impl, "fwd")].append(_time(lambda impl=impl: fwd(impl), device))
                times[(impl, "fwdbwd")].append(_time(lambda impl=impl: fwdbwd(impl), device))
        med = {key: statistics.median(v) for key, v in times.items()}
        for impl in impls:
            if impl not in here:
                rows.append((t, impl, None, None, None, None, f"skipped: dense scores {scores_gb:.1f} GB"))
                continue
            f, fb = med[(impl, "fwd")], med[(impl, "fwdbwd")]
            rf = med[("dense", "fwd")] / f if "dense" in here else None
            rb = med[("dense", "fwdbwd")] / fb if "dense" in here else None
            rows.append((t, impl, f, fb, rf, rb, ""))
    return rows


def table(rows, header: str) -> str:
    fmt = lambda x, spec: "-" if x is None else format(x, spec)
    out = [
        header,
        "",
        "| T | impl | fwd ms | fwd+bwd ms | dense/this fwd | dense/this fwd+bwd | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for t, impl, f, fb, rf, rb, note in rows:
        out.append(
            f"| {t} | {impl} | {fmt(f, '.2f')} | {fmt(fb, '.2f')} | {fmt(rf, '.2f')} | {fmt(rb, '.2f')} | {note} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seq", default=None, help="comma-separated T (default: 2048..16384 on cuda, 2048,4096 on cpu)")
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--batch", type=int, default=None, help="default 4 on cuda, 1 on cpu")
    ap.add_argument("--heads", type=int, default=None, help="default 16 on cuda, 4 on cpu")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--reps", type=int, default=None, help="default 20 on cuda, 3 on cpu")
    ap.add_argument("--dense-max-gb", type=float, default=None, help="default 40 on cuda, 2 on cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads on cpu")
    ap.add_argument("--md", help="also write the table to this file")
    a = ap.parse_args(argv)
    gpu = a.device == "cuda"
    seqs = [int(s) for s in (a.seq or ("2048,4096,8192,16384" if gpu else "2048,4096")).split(",")]
    if a.threads:
        torch.set_num_threads(a.threads)
    batch, heads = a.batch or (4 if gpu else 1), a.heads or (16 if gpu else 4)
    reps, max_gb = a.reps or (20 if gpu else 3), a.dense_max_gb or (40.0 if gpu else 2.0)
    rows = run(a.device, seqs, a.window, batch, heads, a.dim, reps, max_gb)
    dev = torch.cuda.get_device_name() if gpu else f"CPU, {torch.get_num_threads()} threads"
    header = (
        f"{time.strftime('%Y-%m-%d')} | {dev} | torch {torch.__version__} | B={batch} H={heads} d={a.dim} "
        f"window={a.window} {'bf16' if gpu else 'fp32'} | median of {reps}, interleaved"
    )
    text = table(rows, header)
    print(text)
    if a.md:
        Path(a.md).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
