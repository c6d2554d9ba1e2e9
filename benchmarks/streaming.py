"""Streaming latency of Edifice's real-time Hybrid (``edifice.build(embed_dim, **recommended_defaults())``).

Per-frame latency (p50, p99 over thousands of frames after warm-up) at batch 1 on 1 and 2 CPU threads for
(a) ``model.stream()`` (one frame in, one output out, state kept in place), eager and compiled
(``compile="aot"``: AOTInductor; ``compile="dynamo"``: torch.compile), and (b) re-running the full 60-frame
window every frame, as a last-position model must; plus frames per second at batch 64. Dropout 0, eval mode,
no_grad / inference_mode.

    python -m benchmarks.streaming [--embed-dim 64] [--frames 3000] [--compile aot,dynamo] [--device cpu]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess

import torch

from hybriddsl import edifice
from hybriddsl.streaming import format_table, latency_table


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embed-dim", type=int, default=64)
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--rerun-frames", type=int, default=200)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument(
        "--compile",
        default="aot,dynamo",
        help="compiled streams to time beside the eager one, comma-separated: aot, dynamo ('' for none)",
    )
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    opts = {**edifice.recommended_defaults(), "dropout": 0.0}
    model = edifice.build(embed_dim=a.embed_dim, **opts).eval().to(a.device)
    rows = latency_table(
        model,
        window=opts["window_size"],
        threads=tuple(int(t) for t in a.threads.split(",")),
        frames=a.frames,
        rerun_frames=a.rerun_frames,
        compile=tuple(k for k in a.compile.split(",") if k),
    )
    dev = torch.cuda.get_device_name() if a.device.startswith("cuda") else cpu_name()
    params = sum(p.numel() for p in model.parameters())
    print(
        f"Edifice Hybrid recommended_defaults, embed_dim {a.embed_dim}, {params:,} parameters (float32); "
        f"{dev}; torch {torch.__version__}; {datetime.date.today()}\n"
    )
    print(format_table(rows))


if __name__ == "__main__":
    main()
