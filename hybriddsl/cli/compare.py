"""``hybdsl compare A.hyb B.hyb ... --task mqar``: train each architecture with the same seeds and data order.

Fair by default (as Zoology): every model is trained at every learning rate of ``--lr`` (default
1e-3,3e-3,1e-2) and with ``--seeds`` seeds (default 3); each model is reported at its best learning rate (by
mean final accuracy over the seeds), with the mean and spread over the seeds. Seed ``s`` gives the same batches
in the same order to every model and learning rate.

Writes the numbers (``-o results.csv`` one row per logged step of every run, with its lr, seed and whether that
lr is the model's best; or ``.json``, a list of runs) and a PNG plot (``--plot``) of each model at its best lr:
eval accuracy against steps, or final accuracy against sequence length when ``--seq-lens 64,128,256`` gives
several. Prints a table at the end.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from hybriddsl.cli.common import add_build, overrides, require
from hybriddsl.cli.train import add_task_options, check_output, config_from, make_task_from, results_table
from hybriddsl.errors import HybOptionError, Span


def add_parser(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="train several .hyb architectures on one task (same seed and data) and plot accuracy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", help=".hyb files to compare")
    p.add_argument(
        "-s", "--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting in every file"
    )
    add_task_options(p, lr=False)
    add_build(p)
    p.add_argument(
        "--lr",
        default="1e-3,3e-3,1e-2",
        help="peak learning rates to sweep, comma-separated (default 0.001,0.003,0.01); each model's best is kept",
    )
    p.add_argument("--seeds", type=int, default=3, help="seeds per model and lr: --seed, --seed+1, ... (default 3)")
    p.add_argument("--seq-lens", help="comma-separated sequence lengths, e.g. 64,128,256 (default: the task's)")
    p.add_argument("-o", "--output", help="write the numbers: results.csv or results.json")
    p.add_argument("--plot", help="write a PNG plot of accuracy")
    p.set_defaults(func=run)


def parse_lrs(text: str) -> list[float]:
    """'1e-3,3e-3' -> [0.001, 0.003] (sorted, distinct); HybOptionError on anything but positive numbers."""
    out = []
    for part in str(text).split(","):
        try:
            lr = float(part)
        except ValueError:
            lr = 0.0
        if not (lr > 0 and math.isfinite(lr)):
            raise HybOptionError(
                f"--lr takes positive numbers separated by commas, got '{text}'", Span(0, 0, 1, "<command line>")
            )
        out.append(lr)
    return sorted(set(out))


def parse_lengths(text: str | None) -> list[int | None]:
    """'64,128' -> [64, 128]; None -> [None] (the task's default)."""
    if text is None:
        return [None]
    out = []
    for part in text.split(","):
        try:
            n = int(part)
        except ValueError:
            n = 0
        if n < 1:
            raise HybOptionError(
                f"--seq-lens takes positive integers separated by commas, got '{text}'", Span.none("<command line>")
            )
        out.append(n)
    return sorted(set(out))


def run(args: argparse.Namespace) -> int:
    from hybriddsl.workbench.compare import compare, plot, summarize, summary_table, write_results
    from hybriddsl.workbench.train import build_for_task

    out = check_output(args.output, (".csv", ".json"))
    png = check_output(args.plot, (".png",))
    if png is not None:  # before any training, not after it
        require("matplotlib", "--plot", "pip install 'hybriddsl[plot]' (or pip install matplotlib)")
    seen = {}
    for f in args.files:  # results and plot lines are keyed by file name
        if f in seen:
            raise HybOptionError(f"'{f}' is given twice: compare different files", Span(0, 0, 1, "<command line>"))
        seen[f] = True
    lengths = parse_lengths(args.seq_lens)
    tasks = {n: make_task_from(args, n) for n in lengths}  # every bad task option before any training
    lrs = parse_lrs(args.lr)
    if args.seeds < 1:
        raise HybOptionError(f"--seeds must be >= 1, got {args.seeds}", Span(0, 0, 1, "<command line>"))
    cfg = config_from(args, lr=lrs[0])
    sets = overrides(args)
    sources = []
    for f in args.files:
        src = Path(f)  # a path: errors name the file and line
        for task in tasks.values():
            build_for_task(src, task, "cpu", **sets)  # a compile error in any file stops before training
        sources.append((f, src))
    results = compare(sources, tasks.__getitem__, lengths, cfg, lrs=lrs, seeds=args.seeds, **sets)
    print(results_table(results))
    print()
    print(summary_table(summarize(results)))
    if out is not None:
        write_results(results, out)
        print(f"wrote {out}")
    if png is not None:
        plot(results, png, title=_title(args, tasks))
        print(f"wrote {png}")
    return 0


def _title(args: argparse.Namespace, tasks: dict) -> str:
    task = next(iter(tasks.values()))
    opts = {k: v for k, v in task.options().items() if k != "seq_len" or len(tasks) == 1}
    sweep = f"{args.steps} steps, best of lr {args.lr}, {args.seeds} seed{'s' * (args.seeds > 1)}"
    return f"{task.name} " + ", ".join(f"{k}={v}" for k, v in opts.items()) + f" ({sweep})"
