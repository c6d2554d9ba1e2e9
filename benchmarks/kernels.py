"""Kernel benchmarks: every family's suite in ONE run, with ratios against the other implementations.

    python benchmarks/kernels.py                  # full shapes (needs a GPU for the Triton rows)
    python benchmarks/kernels.py --quick          # tiny shapes, a CPU smoke run of the script itself
    python benchmarks/kernels.py --only gla,delta_rule --md out.md

Each suite (benchmarks/kernel_suites/<family>.py) times forward and forward+backward (bf16, median of
triton.testing.do_bench on CUDA) for our Triton op, our eager PyTorch path and the best existing implementation
(fla, mamba_ssm, torch SDPA...). This script prints one table per case with ``ours / other`` ratios (below 1:
ours is faster) and, with ``--md``, writes the Markdown kept in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Timing, environment  # noqa: E402

SUITES = ("selective_scan", "gla", "delta_rule", "linear_scan", "add_norm")
OURS = "hybriddsl-triton"


def _ms(x: float | None) -> str:
    return f"{x:.3f}" if x is not None else "-"


def _ratio(ours: float | None, other: float | None) -> str:
    return f"{ours / other:.2f}x" if ours and other else "-"


def table(rows: list[Timing]) -> str:
    """Markdown: one block per (suite, case); each row an implementation, with ours / that row ratios."""
    out = []
    cases: dict[tuple[str, str], list[Timing]] = {}
    for r in rows:
        cases.setdefault((r.suite, r.case), []).append(r)
    for (suite, case), rs in cases.items():
        ours = next((r for r in rs if r.impl == OURS), None)
        out += [
            f"### {suite} · {case}",
            "",
            "| implementation | fwd ms | fwd+bwd ms | ours/this fwd | ours/this fwd+bwd | note |",
            "|---|---|---|---|---|---|",
        ]
        for r in rs:
            rf = _ratio(ours.fwd_ms, r.fwd_ms) if ours and r is not ours else ""
            rb = _ratio(ours.fwdbwd_ms, r.fwdbwd_ms) if ours and r is not ours else ""
            out.append(f"| {r.impl} | {_ms(r.fwd_ms)} | {_ms(r.fwdbwd_ms)} | {rf} | {rb} | {r.note} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny shapes (CPU smoke run)")
    ap.add_argument("--only", default=",".join(SUITES), help="comma-separated suites")
    ap.add_argument(
        "--md",
        nargs="?",
        const="",
        metavar="FILE",
        help="the tables are Markdown (printed); with FILE, also write them there",
    )
    args = ap.parse_args()
    os.environ.setdefault("FLA_DISABLE_BACKEND_DISPATCH", "1")  # time fla's own kernels, as DESIGN §8 says
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows: list[Timing] = []
    for name in args.only.split(","):
        mod = importlib.import_module(f"benchmarks.kernel_suites.{name.strip()}")
        print(f"running {name} ...", file=sys.stderr)
        rows += mod.run(device, args.quick)
    text = f"Device, date, versions: {environment()}{' (quick shapes)' if args.quick else ''}\n\n" + table(rows)
    print(text)
    if args.md:
        Path(args.md).write_text(text)


if __name__ == "__main__":
    main()
