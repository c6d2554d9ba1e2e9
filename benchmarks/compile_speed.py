"""Compile speed: parse + passes + lowering time for a 1,000-layer pattern (target: under 1 s on CPU).

    python benchmarks/compile_speed.py [--layers 1000] [--hidden 64]

Prints the time of each stage (median of 5 runs). Lowering allocates real weights, so its time grows with
``hidden``; parse and passes do not (parameters are counted on the meta device).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hybriddsl import syntax
from hybriddsl.lower import lower
from hybriddsl.passes import run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=1000)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    group = "M M A(window=128, ffn=false) M GLA FFN M D GD L"  # 10 kinds mixed
    n_groups = args.layers // 10
    n = n_groups * 10
    where = ",".join(str(p) for p in sorted({max(1, n // 200), max(1, n // 20), max(1, n // 2)}))
    src = f"hidden = {args.hidden}, heads = 4\nmamba.state = 8\n({group})*{n_groups}\nshared A(ffn=false)@{where}"
    run(syntax.parse("M A GLA D GD L FFN", "warmup"))  # import and registry loading are not compile time
    stages: dict[str, list[float]] = {"parse": [], "passes": [], "lower": [], "total": []}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        prog = syntax.parse(src)
        t1 = time.perf_counter()
        graph = run(prog)
        t2 = time.perf_counter()
        model = lower(graph)
        t3 = time.perf_counter()
        for k, v in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
            stages[k].append(v)
    n_mixers = len(graph.mixers())
    params = sum(p.numel() for p in model.parameters())
    print(
        f"{n_groups * 10} stack layers ({n_mixers} mixer nodes, {len(graph)} IR nodes), hidden {args.hidden}, "
        f"{params:,} parameters, torch {torch.__version__}"
    )
    for k, v in stages.items():
        print(f"  {k:7} {statistics.median(v) * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
