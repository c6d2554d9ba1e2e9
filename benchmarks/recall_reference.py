"""Reproduce Zoology's qualitative MQAR result at CPU scale before drawing our own comparisons (a script, not a test).

    python benchmarks/recall_reference.py [--pairs 2,3,4] [--steps 1000] [--lr 3e-3] [--seeds 1]
        [-o recall_reference.json] [--plot docs/img/mqar_compare.png]

    # the three models in three processes, then one table, plot and the checks from their files:
    for m in attention recurrence hybrid; do
        nice python benchmarks/recall_reference.py --models $m -o /tmp/ref_$m.json &
    done; wait
    python benchmarks/recall_reference.py --merge /tmp/ref_*.json --plot docs/img/mqar_compare.png

Zoology (Arora et al. 2023, "Zoology: Measuring and Improving Recall in Efficient Language Models", Fig. 2):
softmax attention solves multi-query associative recall at every number of key-value pairs; a recurrence with a
small fixed state falls below it as the pairs grow at the same width; a hybrid with one attention layer comes
close to attention. Three 2-layer models of the same width, each mixer followed by an MLP block:

    attention   pos = rope; A A        softmax attention with RoPE
    recurrence  L L                    Griffin's RG-LRU (De et al. 2024): a state of `hidden` numbers a layer
    hybrid      pos = rope; L A        one RG-LRU layer, then attention

MQAR with vocabulary 32 and ``pairs`` key-value pairs at sequence length ``4 * pairs``; every model is trained
at every learning rate of ``--lr`` and seed of ``--seeds`` with :func:`hybriddsl.workbench.compare.compare`
(same batches for every model per seed) and reported at its best learning rate. The checks printed at the end:
attention >= 0.95 at every length, the recurrence below attention at the most pairs, the hybrid within 0.1 of
attention at every length. The recipe and the numbers are in docs/workbench.md.
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default="2,3,4", help="key-value pairs, comma-separated (sequence length 4x)")
    ap.add_argument("--models", default="attention,recurrence,hybrid", help="which of the three to train")
    ap.add_argument("--merge", nargs="+", help="read .json results of earlier runs instead of training")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", default="3e-3", help="learning rates swept per model, comma-separated (best kept)")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared machine)")
    ap.add_argument("-o", "--output", help="write every run's history: .csv or .json")
    ap.add_argument("--plot", help="write the PNG (final accuracy against sequence length, each model's best lr)")
    args = ap.parse_args()

    from hybriddsl.workbench.compare import compare, plot, summarize, summary_table, write_results
    from hybriddsl.workbench.tasks import MQAR
    from hybriddsl.workbench.train import TrainConfig, TrainResult

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.merge:
        results = [TrainResult(**r) for f in args.merge for r in json.loads(Path(f).read_text())]
        c = results[0].config
        args.steps, args.batch = c["steps"], c["batch"]
        args.vocab = results[0].task_options["vocab"]
    else:
        pairs = sorted(int(p) for p in args.pairs.split(","))
        lrs = sorted(float(x) for x in args.lr.split(","))
        cfg = TrainConfig(steps=args.steps, batch=args.batch, eval_every=max(1, args.steps // 10), progress=False)
        results = compare(
            [MODELS[m] for m in args.models.split(",")],
            lambda n: MQAR(num_kv_pairs=n // 4, seq_len=n, vocab=args.vocab),
            [4 * p for p in pairs],
            cfg,
            lrs=lrs,
            seeds=args.seeds,
            hidden=args.hidden,
            heads=args.heads,
        )
    wall = time.perf_counter() - t0
    summaries = summarize(results)
    lengths = sorted({s.seq_len for s in summaries})
    lrs = sorted({r.config["lr"] for r in results})
    seeds = sorted({r.config["seed"] for r in results})
    print(
        f"MQAR vocab {args.vocab}, pairs {[n // 4 for n in lengths]} (seq_len 4x), {args.steps} steps, batch "
        f"{args.batch}, lr {lrs} (best kept), seeds {seeds}; torch {torch.__version__}, {args.threads} "
        f"thread(s); {wall:.0f} s wall"
    )
    print(summary_table(summaries))
    if args.output:
        write_results(results, args.output)
    if args.plot:
        title = f"MQAR, vocab {args.vocab}, pairs = seq_len / 4 ({args.steps} steps, lr {'/'.join(map(str, lrs))})"
        plot(results, args.plot, title=title)

    acc = {(s.name, s.seq_len): s.mean for s in summaries}
    att, rec, hyb = (name for name, _ in MODELS.values())
    if not all((m, n) in acc for m in (att, rec, hyb) for n in lengths):
        return 0  # a part of the runs (--models): the checks need all three
    checks = {
        "attention >= 0.95 at every length": all(acc[(att, n)] >= 0.95 for n in lengths),
        "recurrence below attention at the most pairs": acc[(rec, lengths[-1])] < acc[(att, lengths[-1])] - 0.05,
        "hybrid within 0.1 of attention at every length": all(acc[(hyb, n)] >= acc[(att, n)] - 0.1 for n in lengths),
    }
    for what, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
