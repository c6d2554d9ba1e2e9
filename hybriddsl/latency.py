"""Per-call timing, and the streaming latency harness behind ``hybdsl bench --stream`` and
``python -m benchmarks.streaming``.

:func:`call_times` is the one timer of the project (the benchmark scripts' ``bench_ms``, ``hybdsl bench`` and
the streaming tables all call it): the seconds each call of a function took, by the wall clock on CPU and by
CUDA events on a GPU. Nothing here asserts a speed: tests never time anything.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hybriddsl.streaming import Stream, compile_kind


def call_times(
    fn: Callable[..., Any],
    n: int,
    *,
    warmup: int = 0,
    inputs: Sequence[Any] | torch.Tensor | None = None,
    cuda: bool = False,
    after: Callable[[], Any] | None = None,
) -> list[float]:
    """Seconds taken by each of ``n`` calls of ``fn``, after ``warmup`` untimed calls.

    ``inputs``: call ``i`` (warm-up calls too) gets ``inputs[i % len(inputs)]`` (a frame [batch, ...] of a
    [frames, batch, ...] tensor), else ``fn()`` takes nothing. ``cuda``: each call is timed by a pair of CUDA
    events (the device time of that call), else by ``time.perf_counter``. ``after``: called after every timed
    call, outside the timing (a progress bar's update)."""
    import time

    m = len(inputs) if inputs is not None else 0

    def call(i: int) -> None:
        fn(inputs[i % m]) if m else fn()

    for i in range(warmup):
        call(i)
    out: list[float] = []
    if cuda:
        torch.cuda.synchronize()
        for i in range(n):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call(i)
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) / 1e3)
            if after is not None:
                after()
        return out
    clock = time.perf_counter
    for i in range(n):
        t0 = clock()
        call(i)
        out.append(clock() - t0)
        if after is not None:
            after()
    return out


def frame_latencies(push: Callable[[torch.Tensor], Any], frames: torch.Tensor, warmup: int) -> list[float]:
    """Seconds per ``push(frame)`` call over ``frames`` [n, ...] (cycled), after ``warmup`` untimed calls."""
    return call_times(push, frames.shape[0], warmup=warmup, inputs=frames)


def interleaved_latencies(
    fns: dict[str, Callable[[torch.Tensor], Any]], frames: torch.Tensor, block: int = 100
) -> dict[str, list[float]]:
    """Seconds per call of each function on every frame of ``frames`` [n, ...]. The functions take turns in
    blocks of ``block`` consecutive frames (each block as a deployed stream runs: warm caches), so that all
    of them see the same stretches of a shared machine's load."""
    out: dict[str, list[float]] = {n: [] for n in fns}
    for start in range(0, frames.shape[0], block):
        part = frames[start : start + block]
        for name, fn in fns.items():
            out[name] += call_times(fn, part.shape[0], inputs=part)
    return out


def percentile(xs: list[float], q: float) -> float:
    """The q-quantile (0..1) of xs, nearest rank."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def matvec_floor(model: nn.Module) -> Callable[[Any], None]:
    """A function doing one matrix-vector product per weight matrix of ``model`` (in its dtype) and nothing
    else: the floor of any batch-1 step of that model in that dtype, which reads every weight once per frame."""
    mats = [w for w in model.parameters() if w.dim() == 2]
    vecs = [w.new_ones(1, w.shape[1]) for w in mats]
    cuda = bool(mats) and mats[0].is_cuda

    def matvecs(_frame: Any = None) -> None:
        with torch.no_grad():
            for w, v in zip(mats, vecs):
                F.linear(v, w)
        if cuda:
            torch.cuda.synchronize()

    return matvecs


def latency_table(
    model: nn.Module,
    *,
    window: int,
    threads: tuple[int, ...] = (1, 2),
    frames: int = 3000,
    rerun_frames: int = 200,
    warmup: int = 200,
    compile: tuple[str, ...] = (),
    fps_batch: int = 64,
    extra: dict[str, Callable[[torch.Tensor], Any]] | None = None,
    weights: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Per-frame latency of streaming vs re-running the last ``window`` frames, batch 1, per thread count;
    and frames per second at ``fps_batch``. ``compile``: compiled streams to time beside the eager one
    (``"aot"``, ``"dynamo"``: rows ``stream-aot``, ``stream-dynamo``; on CUDA also ``stream-cudagraph``); row
    ``matvec-floor`` times just one matrix-vector product per weight matrix of the model (no step can be
    faster). One dict per row: threads, batch, mode, p50_ms, p99_ms, fps, and for streams ``state_in_place``
    (same data_ptrs after every frame) and ``rss_growth_mb``. ``extra``: more batch-1 rows, name -> a function of
    one frame [1, ...] (another model's stream, say), timed in the same interleaving. ``weights``: weight formats
    (``"bf16"``, ``"int8"``) of more batch-1 ``compile="aot"`` streams, rows ``stream-aot-<format>``."""
    model.eval()
    p = next(model.parameters())
    dev = p.device

    def inputs(b: int, n: int) -> torch.Tensor:
        if model.vocab:
            return torch.randint(0, model.vocab, (n, b), device=dev)
        return torch.randn(n, b, model.embed_dim, device=dev, dtype=p.dtype)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    rows: list[dict[str, Any]] = []
    old_threads = torch.get_num_threads()
    matvecs = matvec_floor(model)
    kinds = [compile_kind(k) for k in compile]
    streams = {"stream": Stream(model, 1), **{f"stream-{k}": Stream(model, 1, compile=k) for k in kinds}}
    streams.update({f"stream-aot-{w}": Stream(model, 1, compile="aot", weights=w) for w in weights})
    big = {"stream": Stream(model, fps_batch), **{f"stream-{k}": Stream(model, fps_batch, compile=k) for k in kinds}}
    if dev.type == "cuda":  # one eager push captured and replayed: no launch overhead per kernel
        streams["stream-cudagraph"] = Stream(model, 1, cuda_graph=True)
        big["stream-cudagraph"] = Stream(model, fps_batch, cuda_graph=True)
    try:
        for nt in threads:
            torch.set_num_threads(nt)
            xs = inputs(1, frames)
            # batch 1: the streams and the matvec floor take turns every 100 frames, so that all of them see the
            # same stretches of a shared machine's load (it moves the timings by 2x within minutes)
            fns = {
                mode: s.push if dev.type != "cuda" else (lambda f, s=s: (s.push(f), sync()))
                for mode, s in streams.items()
            }
            fns["matvec-floor"] = matvecs
            fns.update(extra or {})
            ptrs = {mode: s.data_ptrs() for mode, s in streams.items()}
            interleaved_latencies(fns, xs[:warmup])  # warm-up first: allocator and caches settle
            rss0 = rss_bytes()
            lats = interleaved_latencies(fns, xs)
            grown = (rss_bytes() - rss0) / 2**20
            for mode, lat in lats.items():
                row = {
                    "threads": nt,
                    "batch": 1,
                    "mode": mode,
                    "frames": frames,
                    "p50_ms": percentile(lat, 0.5) * 1e3,
                    "p99_ms": percentile(lat, 0.99) * 1e3,
                    "fps": 1 / percentile(lat, 0.5),
                }
                if mode in streams:
                    row.update(state_in_place=streams[mode].data_ptrs() == ptrs[mode], rss_growth_mb=grown)
                rows.append(row)
            buf = inputs(1, window).transpose(0, 1).contiguous()  # [1, window, ...]

            def rerun(f: torch.Tensor) -> None:
                nonlocal buf
                buf = torch.cat([buf[:, 1:], f.unsqueeze(1)], 1)  # the last `window` frames
                with torch.inference_mode():
                    model(buf)
                sync()

            lat = frame_latencies(rerun, xs[:rerun_frames], min(warmup, 20))
            rows.append(
                {
                    "threads": nt,
                    "batch": 1,
                    "mode": f"rerun-{window}",
                    "frames": rerun_frames,
                    "p50_ms": percentile(lat, 0.5) * 1e3,
                    "p99_ms": percentile(lat, 0.99) * 1e3,
                    "fps": 1 / percentile(lat, 0.5),
                }
            )
            # throughput at a large batch: frames (rows x pushes) per second
            xb = inputs(fps_batch, 100)
            for mode, s in big.items():
                lat = frame_latencies(lambda f, s=s: (s.push(f), sync()), xb, 10)
                rows.append(
                    {
                        "threads": nt,
                        "batch": fps_batch,
                        "mode": mode,
                        "frames": 100,
                        "p50_ms": percentile(lat, 0.5) * 1e3,
                        "p99_ms": percentile(lat, 0.99) * 1e3,
                        "fps": fps_batch / percentile(lat, 0.5),
                    }
                )
            wb = inputs(fps_batch, window).transpose(0, 1).contiguous()
            with torch.inference_mode():
                lat = frame_latencies(lambda f, wb=wb: (model(wb), sync()), xb[:3], 1)
            rows.append(
                {
                    "threads": nt,
                    "batch": fps_batch,
                    "mode": f"rerun-{window}",
                    "frames": 3,
                    "p50_ms": percentile(lat, 0.5) * 1e3,
                    "p99_ms": percentile(lat, 0.99) * 1e3,
                    "fps": fps_batch / percentile(lat, 0.5),
                }
            )
    finally:
        torch.set_num_threads(old_threads)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of :func:`latency_table` rows, with the speed-up of streaming over the re-run."""
    ref = {(r["threads"], r["batch"]): r for r in rows if r["mode"].startswith("rerun")}
    base_modes = ("rerun", "matvec-floor")
    lines = [
        "| threads | batch | mode | p50 ms/frame | p99 ms/frame | frames/s | vs re-run (p50) | state in place |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = ref.get((r["threads"], r["batch"]))
        speed = f"{base['p50_ms'] / r['p50_ms']:.1f}x" if base and not r["mode"].startswith(base_modes) else ""
        place = r.get("state_in_place")
        place = "" if place is None else ("yes" if place else "NO")
        if place and r["batch"] == 1:
            place += f" (RSS {r['rss_growth_mb']:+.1f} MB over {r['frames']} frames)"
        lines.append(
            f"| {r['threads']} | {r['batch']} | {r['mode']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
            f"{r['fps']:,.0f} | {speed} | {place} |"
        )
    return "\n".join(lines)
