"""Streaming latency of Edifice's real-time Hybrid (``edifice.build(embed_dim, **recommended_defaults())``).

Per-frame latency (p50, p99 over thousands of frames after warm-up) at batch 1 on 1 and 2 CPU threads for
(a) ``model.stream()`` (one frame in, one output out, state kept in place), eager and compiled
(``compile="aot"``: AOTInductor; ``compile="dynamo"``: torch.compile), and (b) re-running the full 60-frame
window every frame, as a last-position model must; plus frames per second at batch 64. Dropout 0, eval mode,
no_grad / inference_mode.

    python -m benchmarks.streaming [--embed-dim 64] [--frames 3000] [--compile aot,dynamo] [--weights bf16,int8]
                                   [--bf16] [--device cpu]

``--weights``: batch-1 ``compile="aot"`` streams on bfloat16 / int8 copies of the linear weights
(``model.stream(1, compile=True, weights=...)``), timed in the same interleaving, with their output error vs the
float32 stream.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import subprocess

import torch

from hybriddsl import edifice
from hybriddsl.latency import format_table, latency_table, matvec_floor
from hybriddsl.streaming import Stream


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
    ap.add_argument(
        "--weights",
        default="bf16,int8",
        help="weight formats of more compile='aot' batch-1 streams, comma-separated: bf16, int8 ('' for none)",
    )
    ap.add_argument("--error-frames", type=int, default=3000, help="frames over which --weights errors are measured")
    ap.add_argument(
        "--bf16",
        action="store_true",
        help="also time a bfloat16 copy of the model (compile=True) and its matvec floor, and report its error",
    )
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    opts = {**edifice.recommended_defaults(), "dropout": 0.0}
    model = edifice.build(embed_dim=a.embed_dim, **opts).eval().to(a.device)
    extra, note = {}, ""
    if a.bf16:
        extra, note = bf16_rows(model)
    rows = latency_table(
        model,
        window=opts["window_size"],
        threads=tuple(int(t) for t in a.threads.split(",")),
        frames=a.frames,
        rerun_frames=a.rerun_frames,
        compile=tuple(k for k in a.compile.split(",") if k),
        extra=extra,
        weights=tuple(w for w in a.weights.split(",") if w),
    )
    dev = torch.cuda.get_device_name() if a.device.startswith("cuda") else cpu_name()
    params = sum(p.numel() for p in model.parameters())
    print(
        f"Edifice Hybrid recommended_defaults, embed_dim {a.embed_dim}, {params:,} parameters (float32); "
        f"{dev}; torch {torch.__version__}; {datetime.date.today()}\n"
    )
    print(format_table(rows))
    for w in (w for w in a.weights.split(",") if w):
        print("\n" + weights_error(model, w, a.error_frames))
    if note:
        print("\n" + note)


def weights_error(model: torch.nn.Module, weights: str, frames: int) -> str:
    """The output error of a ``weights=...`` compiled stream vs the float32 eager stream over ``frames`` frames:
    ||y - y_fp32|| / ||y_fp32|| over all of them, and the largest per-frame relative error."""
    s, ref = Stream(model, 1, compile="aot", weights=weights), Stream(model, 1)
    p = next(model.parameters())
    xs = torch.randn(frames, 1, model.embed_dim, generator=torch.Generator().manual_seed(1)).to(p.device)
    num = den = worst = 0.0
    for x in xs:
        y, y32 = s.push(x), ref.push(x)
        d, n = (y - y32).norm().item() ** 2, y32.norm().item() ** 2
        num, den, worst = num + d, den + n, max(worst, (d / n) ** 0.5)
    return (
        f"weights={weights}: over {frames} frames, ||y - y_fp32|| / ||y_fp32|| = {(num / den) ** 0.5:.2e} "
        f"(largest in one frame {worst:.2e})"
    )


def bf16_rows(model: torch.nn.Module, frames: int = 300) -> tuple[dict, str]:
    """Rows for a bfloat16 copy of ``model`` (half the weight bytes a batch-1 frame reads), and its error: the
    largest |bf16 - fp32| over ``frames`` streamed frames, relative to the fp32 outputs' mean magnitude."""
    m16 = copy.deepcopy(model).to(torch.bfloat16)
    s16, s32 = Stream(m16, 1, compile=True), Stream(model, 1)
    p = next(model.parameters())
    xs = torch.randn(frames, 1, model.embed_dim, device=p.device)
    err = scale = 0.0
    for x in xs:
        y32, y16 = s32.push(x), s16.push(x).float()
        err, scale = max(err, (y16 - y32).abs().max().item()), scale + y32.abs().mean().item() / frames
    s16.reset()
    note = (
        f"bf16 rows: the same model in bfloat16 (weights and activations), compile=True. Over {frames} frames its "
        f"outputs differ from float32 by at most {err:.4f} (mean |y| {scale:.3f}: {err / scale:.1%})."
    )
    return {"stream-aot-bf16": s16.push, "matvec-floor-bf16": matvec_floor(m16)}, note


if __name__ == "__main__":
    main()
