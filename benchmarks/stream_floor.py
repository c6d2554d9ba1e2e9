"""Batch-1 compiled streams of Edifice's recommended model against the matvec floor, and nothing else.

The short form of ``python -m benchmarks.streaming`` for the "streaming at the memory floor" rows of issue 15:
only the ``compile=True`` streams (float32 and the ``--weights`` formats) and the float32 matvec floor, timed in
the same interleaving (blocks of 100 frames), ``--reps`` times per thread count; p50 in ms and as a multiple
of the floor measured beside it, with the load average when each repetition ended.

    python -m benchmarks.stream_floor [--embed-dim 64] [--frames 2000] [--threads 1,2] [--reps 2]
                                      [--weights bf16,int8] [--error-frames 2000]
"""

from __future__ import annotations

import argparse
import datetime
import os

import torch

from benchmarks.streaming import cpu_name, weights_error
from hybriddsl import edifice
from hybriddsl.latency import interleaved_latencies, matvec_floor, percentile


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embed-dim", type=int, default=64)
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--weights", default="bf16,int8", help="more compile=True streams: bf16, int8 ('' for none)")
    ap.add_argument("--error-frames", type=int, default=2000, help="0: do not measure the output errors")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    opts = {**edifice.recommended_defaults(), "dropout": 0.0}
    model = edifice.build(embed_dim=a.embed_dim, **opts).eval()
    fmts = [w for w in a.weights.split(",") if w]
    streams = {"float32": model.stream(1, compile=True)}
    streams.update({w: model.stream(1, compile=True, weights=w) for w in fmts})
    fns = {name: s.push for name, s in streams.items()}
    fns["floor"] = matvec_floor(model)
    print(
        f"Edifice Hybrid recommended_defaults, embed_dim {a.embed_dim}, batch 1; {cpu_name()}, "
        f"{os.cpu_count()} CPUs; torch {torch.__version__}; {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    )
    print(f"p50 ms/frame over {a.frames} frames (x the float32 matvec floor beside it)\n")
    print("| threads | " + " | ".join(f"compile=True {n}" for n in streams) + " | matvec floor | load avg |")
    print("|---" * (len(streams) + 3) + "|")
    old = torch.get_num_threads()
    try:
        for nt in (int(t) for t in a.threads.split(",")):
            torch.set_num_threads(nt)
            for _ in range(a.reps):
                xs = torch.randn(a.frames, 1, a.embed_dim)
                interleaved_latencies(fns, xs[:200])  # warm-up: allocator and caches settle
                p50 = {n: percentile(t, 0.5) * 1e3 for n, t in interleaved_latencies(fns, xs).items()}
                cells = [f"{p50[n]:.3f} ({p50[n] / p50['floor']:.2f}x)" for n in streams]
                load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
                print(f"| {nt} | " + " | ".join(cells) + f" | {p50['floor']:.3f} | {load} |", flush=True)
    finally:
        torch.set_num_threads(old)
    if a.error_frames:
        print()
        for w in ["float32", *fmts]:
            print(weights_error(model, None if w == "float32" else w, a.error_frames))


if __name__ == "__main__":
    main()
