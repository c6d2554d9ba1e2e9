"""Compile speed: parse + passes + lowering time of long patterns (target: under 1 s on CPU for 1,000 layers).

    python benchmarks/compile_speed.py                       # the two rows of docs/benchmarks.md
    python benchmarks/compile_speed.py --layers 1000 --hidden 64
    python benchmarks/compile_speed.py --layers 9990 --no-lower --check   # what `hybdsl check` does, ~10k layers

Prints one Markdown row per configuration, as docs/benchmarks.md shows them (median of ``--repeats`` runs).
Lowering allocates real weights, so its time grows with ``hidden``; parse and passes do not (parameters are
counted on the meta device). ``--check`` lints after every pass and skips ``count``, as ``hybdsl check`` does;
``--no-lower`` skips lowering. Times are wall-clock, with the process CPU time of parse + passes beside them
(``cpu``), which a loaded machine disturbs less.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hybriddsl import syntax
from hybriddsl.lower import lower
from hybriddsl.passes import PIPELINE, count, run

GROUP = "M M A(window=128, ffn=false) M GLA FFN M D GD L"  # 10 kinds mixed
CONFIGS = ((1000, 64), (100, 256))  # (stack layers, hidden): the rows of docs/benchmarks.md


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 0.1 else f"{seconds:.2f} s"


def measure(layers: int, hidden: int, repeats: int, lower_too: bool = True, check: bool = False) -> str:
    """One Markdown row: pattern | IR nodes | parameters | parse | passes (cpu) | lowering | total (medians)."""
    n_groups = max(1, layers // 10)
    n = n_groups * 10
    where = ",".join(str(p) for p in sorted({max(1, n // 200), max(1, n // 20), max(1, n // 2)}))
    src = f"hidden = {hidden}, heads = 4\nmamba.state = 8\n({GROUP})*{n_groups}\nshared A(ffn=false)@{where}"
    passes = [p for p in PIPELINE if p is not count] if check else None
    stages: dict[str, list[float]] = {"parse": [], "passes": [], "cpu": [], "lower": [], "total": []}
    model = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        prog = syntax.parse(src)
        t1, c1 = time.perf_counter(), time.process_time()
        graph = run(prog, passes=passes, debug=check)
        t2, c2 = time.perf_counter(), time.process_time()
        if lower_too:
            model = None  # the previous repeat's model is freed first, as in a process that builds one model
            model = lower(graph)
        t3 = time.perf_counter()
        for k, v in zip(stages, (t1 - t0, t2 - t1, c2 - c1, t3 - t2, t3 - t0)):
            stages[k].append(v)
    params = f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M" if model is not None else "-"
    shared = len(where.split(","))
    med = {k: statistics.median(v) for k, v in stages.items()}
    return (
        f"| {n:,} layers (10 kinds mixed + {shared} shared uses), hidden {hidden}{', check' if check else ''} | "
        f"{len(graph):,} | {params} | {_ms(med['parse'])} | {_ms(med['passes'])} (cpu {_ms(med['cpu'])}) | "
        f"{_ms(med['lower']) if lower_too else '-'} | {_ms(med['total'])} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, help="stack layers of one configuration (default: both rows of the docs)")
    ap.add_argument("--hidden", type=int, default=64, help="hidden size with --layers")
    ap.add_argument("--repeats", type=int, default=5, help="runs per configuration (the median is shown)")
    ap.add_argument("--no-lower", action="store_true", help="parse and passes only")
    ap.add_argument("--check", action="store_true", help="lint after every pass and skip count (hybdsl check)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    run(syntax.parse("M A GLA D GD L FFN", "warmup"))  # import and registry loading are not compile time
    configs = ((args.layers, args.hidden),) if args.layers else CONFIGS
    print(f"torch {torch.__version__}, median of {args.repeats}\n")
    print("| pattern | IR nodes | parameters | parse | passes | lowering | total |")
    print("|---|---|---|---|---|---|---|")
    for layers, hidden in configs:
        print(measure(layers, hidden, args.repeats, not args.no_lower, args.check), flush=True)


if __name__ == "__main__":
    main()
