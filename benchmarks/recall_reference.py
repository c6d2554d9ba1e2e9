"""Reproduce Zoology's qualitative MQAR result at CPU scale before drawing our own comparisons (a script, not a test).

    python benchmarks/recall_reference.py [--pairs 4,8] [--steps 2000] [--lr 1e-3,3e-3,1e-2] [--seeds 3]
        [--models attention,recurrence,hybrid] [--runs runs.jsonl] [-o results.csv] [--plot mqar.png]

    # the sweep in three background processes (one per model), each appending its runs to its own file;
    # rerunning a command skips the runs its file already holds (a shared machine may stop a job):
    for m in attention recurrence hybrid; do
        nice -n 19 python benchmarks/recall_reference.py --models $m --runs /tmp/ref_$m.jsonl &
    done; wait
    python benchmarks/recall_reference.py --merge /tmp/ref_*.jsonl -o ref.csv --plot docs/img/mqar_compare.png

Zoology (Arora et al. 2023, "Zoology: Measuring and Improving Recall in Efficient Language Models", Fig. 2):
softmax attention solves multi-query associative recall at every number of key-value pairs; a recurrence with a
small fixed state falls below it as the pairs grow at the same width; a hybrid with one attention layer comes
close to attention. Three 2-layer models of the same width, each mixer followed by an MLP block:

    attention   pos = rope; A A        softmax attention with RoPE
    recurrence  L L                    Griffin's RG-LRU (De et al. 2024): a state of `hidden` numbers a layer
    hybrid      pos = rope; L A        one RG-LRU layer, then attention

``--models`` also takes the diagnostic variants in :data:`VARIANTS` (other layer orders and recurrent kinds for
the hybrid) and ``name=SOURCE`` for any other stack (``;`` separates lines).

MQAR with vocabulary 32 and ``pairs`` key-value pairs at sequence length ``4 * pairs``; every model is trained
at every learning rate of ``--lr`` and seed of ``--seeds`` (seed ``s`` fixes the weights and the batches: every
model and learning rate sees the same batches for that seed) and reported at its best learning rate (the best
mean final accuracy over the seeds), with the mean ± std over the seeds. The checks printed at the end, fixed
before measuring (docs/workbench.md): attention's mean >= 0.95 at every number of pairs; the recurrence's mean
more than 0.05 below attention's at the most pairs; the hybrid *close* to attention: its mean within 0.05 of
attention's at every number of pairs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

MODELS = {
    "attention": ("attention (A A)", "pos = rope\nA A"),
    "recurrence": ("recurrence (L L)", "L L"),
    "hybrid": ("hybrid (L A)", "pos = rope\nL A"),
}
# diagnostics for the hybrid: the other order, and the recurrent kinds of Zoology's hybrids (H3/Mamba + attention;
# Based's linear attention, here gated linear attention) and DeltaNet, each with one attention layer and an MLP
# (F) after every mixer as in the reference models (M, G and D have no MLP of their own)
VARIANTS = {
    "hybrid_al": ("hybrid (A L)", "pos = rope\nA L"),
    "hybrid_ma": ("hybrid (M F A)", "pos = rope\nM F A"),
    "hybrid_ga": ("hybrid (G F A)", "pos = rope\nG F A"),
    "hybrid_da": ("hybrid (D F A)", "pos = rope\nD F A"),
}
CLOSE = 0.05  # "close to attention": the hybrid's mean within this of attention's at every number of pairs


def model_list(text: str) -> list[tuple[str, str]]:
    """'attention,hybrid_ma,mine=pos = rope;A L' -> [(name, source), ...]."""
    known = {**MODELS, **VARIANTS}
    out = []
    for part in text.split(","):
        if part in known:
            out.append(known[part])
        elif "=" in part:
            name, src = part.split("=", 1)
            out.append((name, src.replace(";", "\n")))
        else:
            sys.exit(f"unknown model '{part}': one of {', '.join(known)}, or NAME=SOURCE")
    return out


def read_runs(paths: list[str]) -> list:
    """TrainResults from .jsonl (one run a line) or .json (a list of runs) files."""
    from hybriddsl.workbench.train import TrainResult

    out = []
    for f in paths:
        text = Path(f).read_text()
        items = json.loads(text) if f.endswith(".json") else [json.loads(line) for line in text.splitlines() if line]
        out += [TrainResult(**r) for r in items]
    return out


def run_sweep(args: argparse.Namespace) -> list:
    """Train every model x pairs x lr x seed not already in ``--runs``; append each finished run there."""
    from dataclasses import replace

    from hybriddsl.workbench.compare import compare
    from hybriddsl.workbench.tasks import MQAR
    from hybriddsl.workbench.train import TrainConfig

    pairs = sorted(int(p) for p in args.pairs.split(","))
    lrs = sorted(float(x) for x in args.lr.split(","))
    cfg = TrainConfig(steps=args.steps, batch=args.batch, eval_every=max(1, args.steps // 10), progress=False)
    runs_file = Path(args.runs) if args.runs else None
    have = {_key(r): r for r in (read_runs([str(runs_file)]) if runs_file and runs_file.exists() else [])}
    results = []
    for name, src in model_list(args.models):
        for p in pairs:
            task = MQAR(num_kv_pairs=p, seq_len=4 * p, vocab=args.vocab)
            for lr in lrs:
                for seed in seed_list(args.seeds):
                    k = (name, p, args.vocab, args.hidden, args.steps, args.batch, lr, seed)
                    if k in have:
                        results.append(have[k])
                        continue
                    # one run through compare(): seed s fixes the weights and the batches, as in hybdsl compare
                    run_cfg = replace(cfg, seed=seed)
                    opts = {"hidden": args.hidden, "heads": args.heads}
                    (r,) = compare([(name, src)], lambda n, t=task: t, [None], run_cfg, lrs=[lr], seeds=1, **opts)
                    r.config["hidden"] = args.hidden  # for --merge and the resume key
                    results.append(r)
                    print(f"{name:18s} pairs {p} lr {lr:g} seed {seed}: {r.final_accuracy:.3f} ({r.wall_s:.0f} s)")
                    sys.stdout.flush()
                    if runs_file:
                        with runs_file.open("a") as fh:
                            fh.write(json.dumps(r.to_dict()) + "\n")
    return results


def seed_list(text: str) -> list[int]:
    """'3' -> [0, 1, 2]; '1,2' -> [1, 2] (a part of the seeds, e.g. one process each)."""
    return [int(x) for x in text.split(",") if x] if "," in text else list(range(int(text)))


def _key(r) -> tuple:
    o, c = r.task_options, r.config
    return (r.name, o["num_kv_pairs"], o["vocab"], c.get("hidden"), c["steps"], c["batch"], c["lr"], c["seed"])


def report(results: list, args: argparse.Namespace, wall: float) -> None:
    """Print the recipe line and the table (each model's best lr, mean ± std over seeds); write -o and --plot."""
    from hybriddsl.workbench.compare import plot, summarize, summary_table, write_results

    summaries = summarize(results)
    c = results[0].config
    lengths = sorted({s.seq_len for s in summaries})
    lrs = sorted({r.config["lr"] for r in results})
    seeds = sorted({r.config["seed"] for r in results})
    steps = sorted({r.config["steps"] for r in results})
    print(
        f"MQAR vocab {results[0].task_options['vocab']}, pairs {[n // 4 for n in lengths]} (seq_len 4x), hidden "
        f"{c.get('hidden')}, steps {steps}, batch {c['batch']}, lr sweep {lrs} (each model's best), seeds {seeds}; "
        f"torch {torch.__version__}, {args.threads} thread(s); {sum(r.wall_s for r in results):.0f} s of training"
        f" ({wall:.0f} s wall this call)"
    )
    print(summary_table(summaries))
    print()
    print(pairs_table(summaries))
    if args.output:
        write_results(results, args.output)
    if args.plot:
        title = (
            f"MQAR, vocab {results[0].task_options['vocab']}, pairs = seq_len / 4\n"
            f"{'/'.join(map(str, steps))} steps, best of lr {'/'.join(f'{x:g}' for x in lrs)}, {len(seeds)} seeds"
        )
        plot(results, args.plot, title=title)


def pairs_table(summaries: list) -> str:
    """Markdown: one row per model, one column per number of pairs: mean ± std (best lr)."""
    lengths = sorted({s.seq_len for s in summaries})
    names = list(dict.fromkeys(s.name for s in summaries))
    by = {(s.name, s.seq_len): s for s in summaries}
    lines = ["| model | " + " | ".join(f"{n // 4} pairs (length {n})" for n in lengths) + " |"]
    lines.append("|---" * (len(lengths) + 1) + "|")
    for name in names:
        cells = [f"{s.mean:.3f} ± {s.std:.3f} (lr {s.best_lr:g})" if (s := by.get((name, n))) else "" for n in lengths]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check(results: list) -> bool:
    """Print Zoology's three claims as checks (definitions fixed in the module docstring); True if all hold or
    the results lack one of the three reference models."""
    from hybriddsl.workbench.compare import summarize

    acc = {(s.name, s.seq_len): s.mean for s in summarize(results)}
    lengths = sorted({n for _, n in acc})
    att, rec, hyb = (name for name, _ in MODELS.values())
    if not all((m, n) in acc for m in (att, rec, hyb) for n in lengths):
        return True  # a part of the runs (--models): the checks need all three
    checks = {
        "attention >= 0.95 at every number of pairs": all(acc[(att, n)] >= 0.95 for n in lengths),
        "recurrence more than 0.05 below attention at the most pairs": acc[(rec, lengths[-1])]
        < acc[(att, lengths[-1])] - 0.05,
        f"hybrid within {CLOSE} of attention at every number of pairs": all(
            acc[(hyb, n)] >= acc[(att, n)] - CLOSE for n in lengths
        ),
    }
    for what, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
    return all(checks.values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default="4,8", help="key-value pairs, comma-separated (sequence length 4x)")
    ap.add_argument("--models", default="attention,recurrence,hybrid", help="models to train (see VARIANTS)")
    ap.add_argument("--merge", nargs="+", help="read .jsonl/.json results of earlier runs instead of training")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", default="1e-3,3e-3,1e-2", help="learning rates swept per model (each model's best kept)")
    ap.add_argument("--seeds", default="3", help="N: seeds 0..N-1 per model, length and lr; or a list: 0,2")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared machine)")
    ap.add_argument("--runs", help="append each finished run to this .jsonl and skip the runs it already holds")
    ap.add_argument("-o", "--output", help="write every run's history: .csv or .json")
    ap.add_argument("--plot", help="write the PNG (final accuracy against sequence length, each model's best lr)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results = read_runs(args.merge) if args.merge else run_sweep(args)
    results = list({_key(r): r for r in reversed(results)}.values())[::-1]  # a run in two merged files counts once
    order = {name: i for i, (name, _) in enumerate([*MODELS.values(), *VARIANTS.values()])}
    results.sort(key=lambda r: (r.task_options["num_kv_pairs"], order.get(r.name, len(order)), r.config["steps"]))
    if len({r.config["steps"] for r in results}) > 1:  # runs of other budgets are other rows, never one mean
        for r in results:
            r.name = f"{r.name}, {r.config['steps']} steps"
    report(results, args, time.perf_counter() - t0)
    return 0 if check(results) else 1


if __name__ == "__main__":
    sys.exit(main())
