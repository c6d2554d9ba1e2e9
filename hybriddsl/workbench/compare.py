"""Train several architectures on one task with the same seeds and data order; write numbers and a plot.

The comparison in Zoology (Arora et al. 2023, Fig. 2) is accuracy on MQAR against sequence length (or model
width) per architecture, each at the best learning rate of a sweep; with one length this plots the evaluation
accuracy against training steps instead. Every model runs at every learning rate of the sweep and every seed;
:func:`summarize` keeps each model's best learning rate (by mean final accuracy over the seeds) and reports the
mean and spread over the seeds there.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hybriddsl.errors import HybFileError, HybOptionError, Span
from hybriddsl.fileio import atomic_path, write_text
from hybriddsl.workbench.tasks import Task
from hybriddsl.workbench.train import TrainConfig, TrainResult, train

CSV_FIELDS = (
    "model",
    "task",
    "seq_len",
    "params",
    "lr",
    "seed",
    "best_lr",
    "step",
    "loss",
    "train_acc",
    "eval_acc",
    "final_accuracy",
    "wall_s",
)
DEFAULT_LRS = (1e-3, 3e-3, 1e-2)  # Zoology sweeps the learning rate per model and reports each model's best


def compare(
    sources: list[tuple[str, Any]],
    make_task: Callable[[int | None], Task],
    seq_lens: list[int | None],
    cfg: TrainConfig,
    lrs: list[float] | tuple[float, ...] | None = None,
    seeds: int = 1,
    **overrides: Any,
) -> list[TrainResult]:
    """Train every (name, source-or-path) at every sequence length, learning rate and seed.

    One result per run, ordered by length, then source, then learning rate, then seed. ``lrs`` defaults to
    ``[cfg.lr]``; the seeds are ``cfg.seed, cfg.seed + 1, ..., cfg.seed + seeds - 1``. A run with seed ``s``
    starts from ``torch.manual_seed(s)`` and draws its batches from a generator seeded with ``s``: every
    architecture and every learning rate sees the same batches in the same order for that seed.
    """
    if seeds < 1:
        raise HybOptionError(f"--seeds must be >= 1, got {seeds}", Span(0, 0, 1, "<command line>"))
    lrs = list(lrs) if lrs else [cfg.lr]
    results = []
    for seq_len in seq_lens:
        task = make_task(seq_len)
        for name, src in sources:
            for lr in lrs:
                for i in range(seeds):
                    run_cfg = replace(cfg, lr=lr, seed=cfg.seed + i)
                    results.append(train(src, task, run_cfg, name=name, **overrides))
    return results


@dataclass
class Summary:
    """One model at one sequence length over its sweep: the best learning rate by mean final accuracy."""

    name: str
    seq_len: int | None
    params: int
    best_lr: float
    mean: float  # mean final accuracy over the seeds at best_lr
    std: float  # sample standard deviation over those seeds (0 for one seed)
    lo: float  # min and max over those seeds
    hi: float
    seeds: int
    by_lr: dict[float, float]  # mean final accuracy at each learning rate
    runs: list[TrainResult]  # the runs at best_lr (one per seed)
    wall_s: float  # training time of the whole sweep of this model and length

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "runs"}
        d["by_lr"] = {f"{lr:g}": acc for lr, acc in self.by_lr.items()}
        return d


def summarize(results: list[TrainResult]) -> list[Summary]:
    """Group runs by (model, seq_len); in each, pick the learning rate with the best mean final accuracy (ties:
    the lower mean final loss). Order: first appearance."""
    groups: dict[tuple[str, Any], list[TrainResult]] = {}
    for r in results:
        groups.setdefault((r.name, r.task_options.get("seq_len")), []).append(r)
    out = []
    for (name, seq_len), runs in groups.items():
        by_lr: dict[float, list[TrainResult]] = {}
        for r in runs:
            by_lr.setdefault(r.config["lr"], []).append(r)
        score = {
            lr: (statistics.fmean(x.final_accuracy for x in rs), -statistics.fmean(x.final_loss for x in rs))
            for lr, rs in by_lr.items()
        }
        best = max(score, key=lambda lr: (score[lr][0], _finite(score[lr][1])))
        accs = [x.final_accuracy for x in by_lr[best]]
        out.append(
            Summary(
                name=name,
                seq_len=seq_len,
                params=runs[0].params,
                best_lr=best,
                mean=statistics.fmean(accs),
                std=statistics.stdev(accs) if len(accs) > 1 else 0.0,
                lo=min(accs),
                hi=max(accs),
                seeds=len(accs),
                by_lr={lr: s[0] for lr, s in score.items()},
                runs=by_lr[best],
                wall_s=sum(x.wall_s for x in runs),
            )
        )
    return out


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


def summary_table(summaries: list[Summary]) -> str:
    """Text table: model, seq_len, params, best lr, accuracy mean ± std (min-max, seeds), each lr's mean, time."""
    lrs = sorted({lr for s in summaries for lr in s.by_lr})
    head = ("model", "seq_len", "params", "best lr", "accuracy", "seeds", *(f"lr {lr:g}" for lr in lrs), "time")
    rows = [head]
    for s in summaries:
        rows.append(
            (
                s.name,
                "" if s.seq_len is None else str(s.seq_len),
                f"{s.params:,}",
                f"{s.best_lr:g}",
                f"{s.mean:.3f} ± {s.std:.3f} ({s.lo:.3f}-{s.hi:.3f})",
                str(s.seeds),
                *(f"{s.by_lr[lr]:.3f}" if lr in s.by_lr else "" for lr in lrs),
                f"{s.wall_s:.0f}s",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def rows(results: list[TrainResult]) -> list[dict[str, Any]]:
    """One CSV row per logged step of every run (eval_acc empty where not evaluated; best_lr 1 on the runs at
    their model's best learning rate for that length)."""
    best = {(s.name, s.seq_len): s.best_lr for s in summarize(results)}
    out = []
    for r in results:
        seq_len = r.task_options.get("seq_len")
        for h in r.history:
            out.append(
                {
                    "model": r.name,
                    "task": r.task,
                    "seq_len": seq_len,
                    "params": r.params,
                    "lr": f"{r.config['lr']:g}",
                    "seed": r.config["seed"],
                    "best_lr": int(best[(r.name, seq_len)] == r.config["lr"]),
                    "step": h["step"],
                    "loss": f"{h['loss']:.6g}",
                    "train_acc": f"{h['train_acc']:.6g}",
                    "eval_acc": f"{h['eval_acc']:.6g}" if "eval_acc" in h else "",
                    "final_accuracy": f"{r.final_accuracy:.6g}",
                    "wall_s": f"{r.wall_s:.3f}",
                }
            )
    return out


def write_results(results: list[TrainResult], path: str | os.PathLike) -> None:
    """Write ``.csv`` (one row per logged step, :data:`CSV_FIELDS`) or ``.json`` (a list of runs), atomically."""
    p = Path(path)
    if p.suffix.lower() == ".json":
        write_text(p, json.dumps([r.to_dict() for r in results], indent=1) + "\n")
    elif p.suffix.lower() == ".csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows(results))
        write_text(p, buf.getvalue())
    else:
        raise HybFileError(f"cannot write '{p.name}': use .csv or .json", Span.none(str(p)))


def plot(results: list[TrainResult], path: str | os.PathLike, title: str = "") -> None:
    """A PNG (matplotlib, Agg) of each model at its best learning rate (:func:`summarize`): eval accuracy against
    steps (the mean over seeds, the band their min-max), or final accuracy against sequence length (mean, bars
    min-max) when the results hold several lengths. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summaries = summarize(results)
    lengths = sorted({s.seq_len for s in summaries}, key=lambda n: (n is None, n))
    names = list(dict.fromkeys(s.name for s in summaries))
    fig, ax = plt.subplots(figsize=(5.6, 3.6), dpi=100)
    for name in names:
        mine = [s for s in summaries if s.name == name]
        if len(lengths) > 1:
            mine.sort(key=lambda s: s.seq_len)
            x = [s.seq_len for s in mine]
            y = [s.mean for s in mine]
            err = [[s.mean - s.lo for s in mine], [s.hi - s.mean for s in mine]]
            ax.errorbar(x, y, yerr=err, fmt="o-", capsize=3, label=name)
        else:
            (s,) = mine
            curves = [dict(r.evals()) for r in s.runs]
            steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
            mean = [statistics.fmean(c[k] for c in curves) for k in steps]
            (line,) = ax.plot(steps, mean, "o-", ms=3, label=f"{name} ({s.params / 1e3:.0f}K, lr {s.best_lr:g})")
            if len(curves) > 1:
                lo = [min(c[k] for c in curves) for k in steps]
                hi = [max(c[k] for c in curves) for k in steps]
                ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    if len(lengths) > 1:
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.set_xlabel("sequence length")
        ax.set_ylabel("final eval accuracy (best lr)")
    else:
        ax.set_xlabel("training step")
        ax.set_ylabel("eval accuracy (best lr)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or (results[0].task if results else ""), fontsize=10)
    fig.tight_layout()
    p = Path(path)
    try:
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format="png")
    except OSError as e:
        raise HybFileError(f"cannot write {p}: {e.strerror}", Span.none(str(p))) from None
    finally:
        plt.close(fig)
