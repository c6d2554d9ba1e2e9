"""Timing helpers shared by the benchmark scripts (not tests: nothing here asserts a speed)."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from hybriddsl.latency import call_times


@dataclass
class Timing:
    """One measured implementation of one case, in milliseconds (median)."""

    suite: str  # kernel family, e.g. "gla"
    case: str  # shape id, e.g. "B8-T2048-H16-D128-bf16"
    impl: str  # "hybriddsl-triton", "fla", "eager", ...
    fwd_ms: float | None
    fwdbwd_ms: float | None
    note: str = ""


def bench_ms(fn: Callable[[], object], warmup: int = 5, rep: int = 20) -> float:
    """Median milliseconds of ``fn()`` over ``rep`` calls after ``warmup`` calls: CUDA events on a GPU (the
    device time of each call), wall clock on CPU (:func:`hybriddsl.latency.call_times`, the one timer)."""
    times = sorted(call_times(fn, rep, warmup=warmup, cuda=torch.cuda.is_available()))
    return times[len(times) // 2] * 1e3


def fwd_and_fwdbwd(fn: Callable[..., torch.Tensor | tuple], inputs: list[torch.Tensor], **kw) -> tuple[float, float]:
    """Median ms of ``fn(*inputs)`` and of forward + backward of its first output's sum."""

    def fwd() -> object:
        with torch.no_grad():
            return fn(*inputs)

    def fwdbwd() -> None:
        out = fn(*inputs)
        out = out[0] if isinstance(out, tuple) else out
        grads = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
        torch.autograd.grad(out.float().sum(), grads)

    return bench_ms(fwd, **kw), bench_ms(fwdbwd, **kw)


def environment() -> str:
    """One line naming device, date and versions, for docs/benchmarks.md."""
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    try:
        import triton

        tv = triton.__version__
    except Exception:
        tv = "none"
    return f"{time.strftime('%Y-%m-%d')} | {dev} | torch {torch.__version__} | triton {tv}"
