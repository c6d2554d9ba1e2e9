"""``hybdsl bench FILE``: forward and forward+backward throughput of the compiled model on this device.

``--stream``: per-frame latency table instead: ``model.stream()`` (one frame in, one output out) against
re-running the last ``--window`` frames each frame (default: the model's largest attention window, else 64), at
batch 1 per thread count, and frames/s at ``--batch``.

The configuration is printed first, and a progress bar per phase on stderr when it is a terminal.
"""

from __future__ import annotations

import argparse

from hybriddsl.cli.common import add_build, add_file, overrides, require, source_arg
from hybriddsl.errors import HybOptionError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="measure forward / forward+backward tokens per second",
        description=__doc__,
    )
    add_file(p)
    add_build(p)
    p.add_argument("--batch", type=int, default=4, help="sequences per call")
    p.add_argument("--seq", type=int, default=256, help="tokens per sequence")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="weights and inputs")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--kernels",
        default=None,
        choices=("auto", "triton", "reference"),
        help="kernel backend (default: $HYBDSL_KERNELS, else auto: Triton on CUDA, PyTorch reference on CPU)",
    )
    p.add_argument("--iters", type=int, default=3, help="timed calls per phase (after one warm-up call)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--window",
        type=int,
        default=None,
        help="--stream: frames re-run per frame (default: the model's largest attention window, else 64)",
    )
    p.add_argument("--stream", action="store_true", help="per-frame streaming latency table (see hybriddsl.latency)")
    p.add_argument("--frames", type=int, default=2000, help="--stream: timed frames per row (default 2000)")
    p.add_argument("--threads", default="1,2", help="--stream: CPU thread counts, comma separated (default 1,2)")
    p.add_argument(
        "--compile",
        nargs="?",
        const="aot",
        choices=["aot", "dynamo"],
        help="--stream: also time the compiled step: aot (AOTInductor, the default) or dynamo (torch.compile)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from hybriddsl import api
    from hybriddsl.kernels import backend, get_backend
    from hybriddsl.latency import call_times

    if args.batch < 1 or args.seq < 1 or args.iters < 1:
        raise HybOptionError("--batch, --seq and --iters must be at least 1")
    kernels = args.kernels or get_backend()  # HYBDSL_KERNELS when --kernels is not given
    if kernels == "triton":
        require("triton", "--kernels triton", "pip install 'hybriddsl[triton]' (or use --kernels reference)")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HybOptionError("--device cuda was asked for but no CUDA device is available")
    if kernels == "triton" and not device.startswith("cuda"):
        from hybriddsl.kernels.dispatch import interpreting

        if not interpreting():
            raise HybOptionError(
                "--kernels triton on the CPU needs TRITON_INTERPRET=1 (Triton's interpreter, slow); "
                "use --device cuda, or --kernels reference"
            )
    dtype = getattr(torch, args.dtype)
    model = api.parse_and_build(source_arg(args), device=device, dtype=dtype, **overrides(args))
    if args.stream:
        return run_stream(args, model)
    g = model.graph
    s = g.settings
    print(
        f"model: {g.totals['params']:,} parameters, batch {args.batch} x seq {args.seq}, {args.dtype}, {device}, "
        f"kernels={kernels}; 1 warm-up + {args.iters} timed calls per phase",
        flush=True,
    )
    if s["vocab"]:
        x = torch.randint(0, s["vocab"], (args.batch, args.seq), device=device)
    else:
        x = torch.randn(args.batch, args.seq, s["embed_dim"], device=device, dtype=dtype)
    tokens = args.batch * args.seq

    def timed(fn, phase: str) -> float:
        with progress(total=args.iters, desc=phase, disable=args.no_progress) as bar:
            times = call_times(fn, args.iters, warmup=1, cuda=device.startswith("cuda"), after=bar.update)
            return sum(times) / len(times)

    def fwd() -> None:
        with torch.no_grad():
            model(x)

    def fwdbwd() -> None:
        model(x).float().pow(2).mean().backward()

    with backend(kernels):
        model.eval()
        tf = timed(fwd, "forward")
        model.train()
        tb = timed(fwdbwd, "forward+backward")
    print(f"forward           {tf * 1e3:9.2f} ms   {tokens / tf:12,.0f} tokens/s")
    print(f"forward+backward  {tb * 1e3:9.2f} ms   {tokens / tb:12,.0f} tokens/s")
    return 0


def run_stream(args: argparse.Namespace, model) -> int:
    """The streaming latency table (rows of hybriddsl.latency.latency_table) for this file's model."""
    from hybriddsl.latency import format_table, latency_table
    from hybriddsl.streaming import growing_state

    try:
        threads = tuple(int(t) for t in args.threads.split(","))
    except ValueError:
        raise HybOptionError(f"--threads takes comma-separated integers, got '{args.threads}'") from None
    if args.frames < 1 or any(t < 1 for t in threads):
        raise HybOptionError("--frames and every --threads value must be at least 1")
    if args.compile and growing_state(model):
        raise HybOptionError("--compile needs a fixed-shape state: give every attention layer a window")
    window = args.window or default_window(model.graph)
    if window < 1:
        raise HybOptionError(f"--window must be at least 1, got {window}")
    modes = ["stream", *([f"stream-{args.compile}"] if args.compile else []), f"re-run {window}"]
    print(
        f"model: {model.graph.totals['params']:,} parameters, re-run window {window} frames, {args.dtype}; "
        f"{args.frames} frames per row, threads {args.threads}: {', '.join(modes)}",
        flush=True,
    )
    if args.compile:
        print(f"compiling the step ({args.compile}) first: this takes a minute or more on 2 CPU cores", flush=True)
    rows = latency_table(
        model.eval(),
        window=window,
        threads=threads,
        frames=args.frames,
        rerun_frames=min(args.frames, 100),
        warmup=min(args.frames, 200),
        compile=(args.compile,) if args.compile else (),
        fps_batch=args.batch,
    )
    print(format_table(rows))
    return 0


def default_window(graph) -> int:
    """The largest attention window of the model (what a real-time user re-runs), else 64 frames."""
    from hybriddsl.ir import Op

    windows = [graph[n]["opts"].get("window") for n in graph.nodes(Op.MIXER) if graph[n]["kind"] == "attention"]
    windows = [w for w in windows if w]
    return max(windows) if windows else 64


def progress(total: int, desc: str, disable: bool = False):
    """A tqdm bar on stderr, shown only when stderr is a terminal."""
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=True if disable else None, file=sys.stderr, leave=False)
