"""How far the reference hybrid's RG-LRU moves its decay in training, per learning rate (a diagnostic script).

    python benchmarks/recall_rglru_decay.py [--lr 1e-3,1e-2] [--steps 1000] [--pairs 4] [--seed 0]

Trains ``pos = rope; L A`` (hidden 64, 4 heads) on MQAR (vocabulary 32, ``pairs`` pairs, length 4x) exactly as
one run of benchmarks/recall_reference.py (same seed: same weights and batches, same accuracy) and prints the
quantiles (0, 10, 50, 90, 100 %) of the per-channel decay ``a^c = sigmoid(Λ)^8`` before and after: the most a
channel keeps of its state per step when its recurrence gate is open. Griffin's init puts every channel in
[0.9, 0.999]; the block has no path around the recurrence, so a sharp "previous token" feature for the attention
layer needs some channels to forget fast. docs/workbench.md has the numbers.
"""

from __future__ import annotations

import argparse

import torch


def quantiles(model: torch.nn.Module) -> list[float]:
    """Quantiles (0, .1, .5, .9, 1) of sigmoid(Λ)^c over the RG-LRU's channels."""
    from hybriddsl.layers.griffin import C

    a = torch.sigmoid(model.blocks["griffin_0"].lam.detach().double()) ** C
    return [float(x) for x in torch.quantile(a, torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lr", default="1e-3,1e-2")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from hybriddsl.workbench.tasks import MQAR
    from hybriddsl.workbench.train import TrainConfig, build_for_task, train

    task = MQAR(num_kv_pairs=args.pairs, seq_len=4 * args.pairs, vocab=32)
    for lr in (float(x) for x in args.lr.split(",")):
        torch.manual_seed(args.seed)  # as train() does before building: the reference run's weights
        model = build_for_task("pos = rope\nL A", task, hidden=64, heads=4)
        before = quantiles(model)
        cfg = TrainConfig(steps=args.steps, lr=lr, seed=args.seed, eval_every=max(1, args.steps // 10), progress=False)
        res = train(model, task, cfg, name="L A")
        fmt = lambda q: " ".join(f"{x:.3f}" for x in q)  # noqa: E731
        print(f"lr {lr:g}: accuracy {res.final_accuracy:.3f}; a^c quantiles {fmt(before)} -> {fmt(quantiles(model))}")


if __name__ == "__main__":
    main()
