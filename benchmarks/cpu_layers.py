"""Every layer kind on the CPU, ours against transformers' module at the same config, in ONE interleaved run.

    python benchmarks/cpu_layers.py                          # every kind, (2, 256) and (1, 2048), hidden 256 and 1024
    python benchmarks/cpu_layers.py --only mamba2,mamba --hidden 256 --md out.md
    python benchmarks/cpu_layers.py --quick                  # tiny shapes: a smoke run of the script itself

For kinds transformers also implements (mamba, mamba2, griffin, attention with and without a window, moe, ffn)
the other side is transformers' module built from its own config class (``MambaConfig`` ...), float32, its
PyTorch path (the CUDA kernels it would call do not exist on a CPU). For kinds it lacks (gla, rwkv, delta_net,
gated_delta_net) the other side is the layer's own step-by-step recurrence (``layer.step`` token by token).
Every row also gives the achieved GFLOP/s of our layer (the registry's FLOPs per token; x3 for
forward + backward) as a share of ``torch.matmul``'s GFLOP/s measured in the same run on the projections' shape.

Timing: ``torch.set_num_threads`` threads (1 by default: the machine is shared), the two sides alternated
round by round and the median taken per side; forward runs under ``torch.no_grad()``, forward + backward
differentiates the sum of the output with respect to the input and every parameter. ``ratio`` is the other
side's time over ours: above 1, ours is faster. transformers is a benchmark dependency only.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hybriddsl import registry  # noqa: E402
from hybriddsl.latency import call_times  # noqa: E402

SHARED = ("mamba", "mamba2", "griffin", "attention", "attention_window", "moe", "ffn")
OWN = ("gla", "rwkv", "delta_net", "gated_delta_net")
WINDOW = 128  # the sliding window of the attention_window rows


# ---------------------------------------------------------------------------------------------
# The pairs: (our module, their module as a callable x -> y)
# ---------------------------------------------------------------------------------------------


def _ours(kind: str, hidden: int, **opts) -> nn.Module:
    m = registry.get(kind).factory(hidden, **opts)
    m.bench_opts = opts  # for the registry's FLOP count
    return m


def pair_mamba(h: int, T: int):
    from transformers import MambaConfig
    from transformers.models.mamba.modeling_mamba import MambaMixer

    cfg = MambaConfig(hidden_size=h, state_size=16, expand=2, conv_kernel=4, use_bias=False, use_conv_bias=True)
    ours = _ours("mamba", h, state=16, expand=2, conv=4, dt_rank=cfg.time_step_rank)
    theirs = MambaMixer(cfg, layer_idx=0)
    return ours, theirs, theirs


def pair_mamba2(h: int, T: int):
    from transformers import Mamba2Config
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    # transformers' defaults (state 128, head_dim 64, 8 groups) with chunk 64 on both sides: its PyTorch path is
    # faster at 64 than at its default 256 (measured), so this is the harder comparison for ours.
    groups = min(8, 2 * h // 64)
    cfg = Mamba2Config(hidden_size=h, num_heads=2 * h // 64, head_dim=64, state_size=128, n_groups=groups, expand=2,
                       chunk_size=64, use_bias=False, use_conv_bias=True, layer_norm_epsilon=1e-5)  # fmt: skip
    ours = _ours("mamba2", h, state=128, expand=2, conv=4, head_dim=64, groups=groups, chunk=64)
    theirs = Mamba2Mixer(cfg, layer_idx=0)
    return ours, theirs, theirs


def pair_griffin(h: int, T: int):
    from transformers import RecurrentGemmaConfig
    from transformers.models.recurrent_gemma.modeling_recurrent_gemma import RecurrentGemmaRecurrentBlock

    heads = max(1, h // 128)
    cfg = RecurrentGemmaConfig(hidden_size=h, lru_width=h, num_attention_heads=heads, conv1d_width=4)
    # RecurrentGemma's block exactly: block-diagonal gates (one block per head), reset at position 0, tanh GELU
    ours = _ours("griffin", h, width=h, conv=4, mlp=False, gate_blocks=heads, reset=True, gelu_tanh=True)
    theirs = RecurrentGemmaRecurrentBlock(cfg, layer_idx=0)
    pos = {}

    def call(x):
        if x.shape[:2] not in pos:
            pos[x.shape[:2]] = torch.arange(x.shape[1]).expand(x.shape[0], -1)
        y = theirs(x, pos[x.shape[:2]], None, use_cache=False)
        return y[0] if isinstance(y, tuple) else y

    return ours, theirs, call


def _pair_attention(h: int, T: int, window: int | None):
    from transformers import MistralConfig
    from transformers.models.mistral.modeling_mistral import MistralAttention, MistralRotaryEmbedding

    heads = max(1, h // 64)
    cfg = MistralConfig(hidden_size=h, num_attention_heads=heads, num_key_value_heads=heads, head_dim=64,
                        sliding_window=window, attn_implementation="sdpa")  # fmt: skip
    ours = _ours("attention", h, heads=heads, head_dim=64, window=window, rope=True, ffn=False)
    theirs = MistralAttention(cfg, layer_idx=0)
    rotary = MistralRotaryEmbedding(cfg)
    cache: dict = {}

    def call(x):
        B, t = x.shape[:2]
        if (B, t) not in cache:  # the mask and angles are built once per model in transformers, so once here
            pos = torch.arange(t)[None].expand(B, -1)
            mask = None
            if window is not None and window < t:
                d = torch.arange(t)[:, None] - torch.arange(t)[None, :]
                keep = (d >= 0) & (d < window)
                mask = torch.zeros(t, t).masked_fill(~keep, float("-inf"))[None, None]
            cache[(B, t)] = (pos, mask)
        pos, mask = cache[(B, t)]
        return theirs(x, rotary(x, pos), mask)[0]

    return ours, theirs, call


def pair_attention(h: int, T: int):
    return _pair_attention(h, T, None)


def pair_attention_window(h: int, T: int):
    return _pair_attention(h, T, WINDOW)


def pair_moe(h: int, T: int):
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    cfg = MixtralConfig(hidden_size=h, intermediate_size=2 * h, num_local_experts=8, num_experts_per_tok=2)
    ours = _ours("moe", h, experts=8, top_k=2, mult=2.0, act="swiglu", aux_weight=0.0)
    theirs = MixtralSparseMoeBlock(cfg)

    def call(x):
        y = theirs(x)
        return y[0] if isinstance(y, tuple) else y

    return ours, theirs, call


def pair_ffn(h: int, T: int):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    cfg = LlamaConfig(hidden_size=h, intermediate_size=4 * h, hidden_act="silu", mlp_bias=False)
    ours = _ours("ffn", h, inner=4 * h, act="swiglu", bias=False)
    theirs = LlamaMLP(cfg)
    return ours, theirs, theirs


def pair_own(kind: str, h: int, T: int):
    """Ours against its own step-by-step recurrence (layer.step over the tokens)."""
    opts = {
        "gla": dict(heads=4),
        "rwkv": dict(cmix=False),
        "delta_net": dict(heads=4),
        "gated_delta_net": dict(heads=4),
    }
    ours = _ours(kind, h, **opts[kind])

    def steps(x):
        state = ours.init_state(x.shape[0])
        ys = []
        for t in range(x.shape[1]):
            y, state = ours.step(x[:, t], state)
            ys.append(y)
        return torch.stack(ys, 1)

    return ours, ours, steps


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


def _fwd(fn: Callable, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            fn(x)

    return run


def _fwdbwd(fn: Callable, module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    params = [p for p in module.parameters() if p.requires_grad]

    def run() -> None:
        xg = x.detach().requires_grad_(True)
        y = fn(xg)
        torch.autograd.grad(y.float().sum(), [xg, *params], allow_unused=True)

    return run


class TooSlow(Exception):
    """Raised by the alarm when one call runs past ``--limit`` seconds."""


def _alarm(signum, frame):
    raise TooSlow


def timed(f: Callable[[], None], limit_s: float | None) -> float:
    """Seconds of one call of f; inf if it ran past ``limit_s`` (stopped by SIGALRM between two torch ops)."""
    old = signal.signal(signal.SIGALRM, _alarm) if limit_s else None
    if limit_s:
        signal.setitimer(signal.ITIMER_REAL, limit_s)
    try:
        return call_times(f, 1)[0]  # the one timer (hybriddsl.latency); the alarm only bounds a hopeless side
    except TooSlow:
        return math.inf
    finally:
        if limit_s:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


def interleaved(
    fns: list[Callable[[], None]], budget_s: float, max_reps: int, limit_s: float | None = None
) -> list[float]:
    """Median ms of each fn, run alternately; one warm-up each, then as many rounds as fit ``budget_s``. A fn
    after the first (the other side) whose warm-up ran past ``limit_s`` is not run again and reports inf; when the
    warm-ups alone exceed the budget, they are the measurement."""
    warm = [timed(f, limit_s if i else None) for i, f in enumerate(fns)]  # the limit is for the other side
    if sum(w for w in warm if math.isfinite(w)) > budget_s:
        return [w * 1e3 for w in warm]
    reps = max(1, min(max_reps, int(budget_s / max(sum(warm), 1e-6))))
    # A side that is many times faster than the slowest runs several calls a round (up to 8): a slow step loop
    # otherwise leaves it one or two samples, each the first call after the loop's thousands of small allocations
    # (measured: gated_delta_net's forward 60-90 ms right after its step loop, 36 ms in a process of its own).
    slowest = max((w for w in warm if math.isfinite(w)), default=0.0)
    calls = [max(1, min(8, int(slowest / (4 * w)))) if math.isfinite(w) and w > 0 else 1 for w in warm]
    times: list[list[float]] = [[] if math.isfinite(w) else [math.inf] for w in warm]
    for _ in range(reps):
        for i, f in enumerate(fns):
            if math.isfinite(warm[i]):
                times[i].extend(timed(f, None) * 1e3 for _ in range(calls[i]))
    return [statistics.median(t) for t in times]


def matmul_gflops(m: int, k: int, n: int, budget_s: float = 1.0) -> float:
    """GFLOP/s of torch.matmul [m, k] @ [k, n] float32 on this machine, now."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    (ms,) = interleaved([lambda: torch.matmul(a, b)], budget_s, 20)
    return 2 * m * k * n / ms / 1e6


def layer_flops(kind: str, module: nn.Module, hidden: int, T: int) -> int:
    """The registry's forward FLOPs per token of ``module`` (built by :func:`_ours`)."""
    spec = registry.get(kind.replace("_window", ""))
    opts = {**spec.defaults(), **module.bench_opts}
    params = sum(p.numel() for p in module.parameters())
    return spec.flops(opts, hidden, params, T) if spec.flops else 2 * params


def run_case(kind: str, B: int, T: int, h: int, budget_s: float, max_reps: int, limit_s: float | None) -> dict:
    make = globals().get(f"pair_{kind}")
    ours, theirs_mod, theirs = make(h, T) if make else pair_own(kind, h, T)
    ours.train(), theirs_mod.train()
    x = torch.randn(B, T, h)
    fwd = interleaved([_fwd(ours, x), _fwd(theirs, x)], budget_s, max_reps, limit_s)
    fb = interleaved([_fwdbwd(ours, ours, x), _fwdbwd(theirs, theirs_mod, x)], budget_s, max_reps, limit_s)
    mm = matmul_gflops(B * T, h, 2 * h)
    fl = layer_flops(kind, ours, h, T) * B * T
    return dict(
        kind=kind,
        shape=f"B{B}-T{T}-h{h}",
        other="transformers" if make else "step loop",
        params=(sum(p.numel() for p in ours.parameters()), sum(p.numel() for p in theirs_mod.parameters())),
        fwd=fwd,
        fwdbwd=fb,
        gflops=(fl / fwd[0] / 1e6, 3 * fl / fb[0] / 1e6),
        matmul=mm,
        limit=limit_s or math.inf,
    )


def fmt_row(r: dict) -> str:
    (of, tf), (ob, tb) = r["fwd"], r["fwdbwd"]
    gf, gb = r["gflops"]

    def ms(x: float) -> str:
        return f"{x:.1f}" if math.isfinite(x) else f"> {r['limit'] * 1e3:.0f}"

    def ratio(ours: float, other: float) -> str:
        return f"**{other / ours:.2f}x**" if math.isfinite(other) else f"**> {r['limit'] * 1e3 / ours:.1f}x**"

    share = f"{gf / r['matmul']:.0%} / {gb / r['matmul']:.0%}"
    return (
        f"| {r['kind']} | {r['shape']} | {r['other']} | {r['params'][0]:,} / {r['params'][1]:,} | "
        f"{ms(of)} / {ms(tf)} | {ratio(of, tf)} | {ms(ob)} / {ms(tb)} | {ratio(ob, tb)} | "
        f"{gf:.1f} / {gb:.1f} | {r['matmul']:.1f} | {share} |"
    )


HEADER = (
    "| layer | shape | other | params ours / other | fwd ms ours / other | fwd ratio | fwd+bwd ms ours / other "
    "| fwd+bwd ratio | ours GFLOP/s fwd / fwd+bwd | matmul GFLOP/s | share of matmul |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def environment(threads: int) -> str:
    import transformers

    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} | {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores | torch {torch.__version__} | transformers {transformers.__version__} | "
        f"{threads} thread(s) | load average at start {load[0]:.1f}"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", help="comma-separated kinds (default: all)")
    p.add_argument("--hidden", default="256,1024")
    p.add_argument("--shapes", default="2x256,1x2048", help="BATCHxSEQ,...")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--budget", type=float, default=6.0, help="seconds of timed rounds per case and direction")
    p.add_argument("--reps", type=int, default=7, help="at most this many rounds")
    p.add_argument("--limit", type=float, default=120.0, help="stop a call after this many seconds (ratio: a bound)")
    p.add_argument("--quick", action="store_true", help="hidden 64, (1, 64): a smoke run")
    p.add_argument("--md", help="append the Markdown table to this file")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    kinds = a.only.split(",") if a.only else [*SHARED, *OWN]
    hiddens = [64] if a.quick else [int(h) for h in a.hidden.split(",")]
    shapes = [(1, 64)] if a.quick else [tuple(int(n) for n in s.split("x")) for s in a.shapes.split(",")]
    lines = [environment(a.threads), "", HEADER]
    print("\n".join(lines), flush=True)
    for h in hiddens:  # every kind at the first hidden size first: a run cut short still covers every kind
        for kind in kinds:
            for B, T in shapes:
                try:
                    row = fmt_row(run_case(kind, B, T, h, a.budget, 1 if a.quick else a.reps, a.limit))
                except Exception as e:  # a benchmark row failing should not lose the others
                    row = f"| {kind} | B{B}-T{T}-h{h} | failed: {type(e).__name__}: {e} |"
                print(row, flush=True)
                lines.append(row)
    if a.md:
        with open(a.md, "a") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
