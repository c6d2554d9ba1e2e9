"""Train several architectures on one task with the same seed and data order; write numbers and a plot.

The comparison in Zoology (Arora et al. 2023, Fig. 2) is accuracy on MQAR against sequence length (or model
width) per architecture; with one length this plots the evaluation accuracy against training steps instead.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hybriddsl.errors import HybFileError, Span
from hybriddsl.fileio import atomic_path, write_text
from hybriddsl.workbench.tasks import Task
from hybriddsl.workbench.train import TrainConfig, TrainResult, train

CSV_FIELDS = ("model", "task", "seq_len", "params", "step", "loss", "train_acc", "eval_acc", "final_accuracy", "wall_s")


def compare(
    sources: list[tuple[str, Any]],
    make_task: Callable[[int | None], Task],
    seq_lens: list[int | None],
    cfg: TrainConfig,
    **overrides: Any,
) -> list[TrainResult]:
    """Train every (name, source-or-path) at every sequence length; one result per pair, in that order.

    Each run starts from ``torch.manual_seed(cfg.seed)`` and a data generator seeded with ``cfg.seed``: the
    same initialization stream and the same batches for every architecture.
    """
    results = []
    for seq_len in seq_lens:
        task = make_task(seq_len)
        for name, src in sources:
            results.append(train(src, task, cfg, name=name, **overrides))
    return results


def rows(results: list[TrainResult]) -> list[dict[str, Any]]:
    """One CSV row per logged step of every run (eval_acc empty where not evaluated)."""
    out = []
    for r in results:
        for h in r.history:
            out.append(
                {
                    "model": r.name,
                    "task": r.task,
                    "seq_len": r.task_options.get("seq_len"),
                    "params": r.params,
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
        raise HybFileError(f"cannot write '{p.name}': use .csv or .json", Span(0, 0, 1, str(p)))


def plot(results: list[TrainResult], path: str | os.PathLike, title: str = "") -> None:
    """A PNG (matplotlib, Agg): eval accuracy against steps per model, or final accuracy against sequence
    length per model when the results hold several lengths. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({r.task_options.get("seq_len") for r in results})
    names = list(dict.fromkeys(r.name for r in results))
    fig, ax = plt.subplots(figsize=(5.6, 3.6), dpi=100)
    for name in names:
        mine = [r for r in results if r.name == name]
        if len(lengths) > 1:
            mine.sort(key=lambda r: r.task_options.get("seq_len"))
            ax.plot([r.task_options["seq_len"] for r in mine], [r.final_accuracy for r in mine], "o-", label=name)
        else:
            (r,) = mine
            steps, acc = zip(*r.evals()) if r.evals() else ((), ())
            ax.plot(steps, acc, "o-", ms=3, label=f"{name} ({r.params / 1e3:.0f}K)")
    if len(lengths) > 1:
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.set_xlabel("sequence length")
        ax.set_ylabel("final eval accuracy")
    else:
        ax.set_xlabel("training step")
        ax.set_ylabel("eval accuracy")
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
        raise HybFileError(f"cannot write {p}: {e.strerror}", Span(0, 0, 1, str(p))) from None
    finally:
        plt.close(fig)
