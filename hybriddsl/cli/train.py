"""``hybdsl train FILE --task mqar``: train a compiled model on a synthetic recall task (or a text file).

The model is built with ``vocab`` = the task's vocabulary and ``output = logits``; AdamW with warm-up and cosine
decay; the MoE load-balancing loss is added when the model has MoE layers. Prints a progress bar and a final
table; ``-o results.json`` writes the history, ``--save model.pt`` the trained weights (hybriddsl.load).

Tasks: mqar (multi-query associative recall), selective_copy, induction, text (--text FILE, next byte).

Distributed: ``--nproc N`` spawns N local processes (gloo, CPU) and trains with ``--parallel ddp|fsdp``; or
launch with torchrun: ``torchrun --nproc-per-node N -m hybriddsl.cli train FILE --parallel ddp``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hybriddsl.cli.common import add_build, add_file, overrides, source_arg
from hybriddsl.errors import HybFileError, HybOptionError, Span


def add_task_options(p: argparse.ArgumentParser, lr: bool = True) -> None:
    """Options shared by train and compare: the task and the optimization (``lr=False``: the caller adds --lr)."""
    p.add_argument("--task", default="mqar", help="mqar | selective_copy | induction | text (default mqar)")
    p.add_argument("--text", help="text file for --task text (byte-level next-token prediction)")
    p.add_argument("--num-kv-pairs", type=int, help="mqar: key-value pairs per sequence (default 8)")
    p.add_argument("--num-tokens", type=int, help="selective_copy: tokens to copy (default 8)")
    p.add_argument("--vocab", type=int, help="task vocabulary (default: the task's)")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps (default 300)")
    p.add_argument("--batch", type=int, default=64, help="global batch size (default 64)")
    if lr:
        p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default 3e-3)")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay (default 0.1)")
    p.add_argument("--warmup", type=int, help="warm-up steps (default 10%% of --steps)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the data order (default 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu)")
    p.add_argument("--eval-every", type=int, default=50, help="steps between evaluations (default 50)")
    p.add_argument("--eval-size", type=int, default=256, help="examples in the evaluation set (default 256)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on a synthetic recall task (mqar, selective_copy, induction) or a text file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_file(p)
    add_build(p)
    add_task_options(p)
    p.add_argument("--seq-len", type=int, help="sequence length (default: the task's, 64)")
    p.add_argument("-o", "--output", help="write the results (config, history, final accuracy) as .json")
    p.add_argument("--save", help="write the trained model to this .pt (hybriddsl.load rebuilds it)")
    p.add_argument("--nproc", type=int, default=1, help="spawn N local processes (gloo on CPU) for data parallel")
    p.add_argument(
        "--parallel", choices=("ddp", "fsdp"), default="ddp", help="with --nproc/torchrun: ddp or fsdp (FSDP2)"
    )
    p.set_defaults(func=run)


def make_task_from(args: argparse.Namespace, seq_len: int | None):
    from hybriddsl.workbench.tasks import make_task

    return make_task(
        args.task,
        seq_len=seq_len,
        text=args.text,
        num_kv_pairs=args.num_kv_pairs,
        num_tokens=args.num_tokens,
        vocab=args.vocab,
    )


def config_from(args: argparse.Namespace, **extra):
    from hybriddsl.workbench.train import TrainConfig

    extra.setdefault("lr", args.lr)
    cfg = TrainConfig(
        steps=args.steps,
        batch=args.batch,
        weight_decay=args.weight_decay,
        warmup=args.warmup,
        seed=args.seed,
        device=args.device,
        eval_every=args.eval_every,
        eval_size=args.eval_size,
        progress=not args.no_progress,
        **extra,
    )
    cfg.check()
    _check_device(args.device)
    return cfg


def _check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise HybOptionError(f"unknown device '{device}'", Span.none("<command line>")) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HybOptionError("--device cuda but CUDA is not available here", Span.none("<command line>"))


def check_output(path: str | None, suffixes: tuple[str, ...]) -> Path | None:
    """The -o path, or HybFileError when its suffix is not one of ``suffixes`` or its folder is missing."""
    if path is None:
        return None
    out = Path(path)
    span = Span.none(str(out))
    if out.suffix.lower() not in suffixes:
        raise HybFileError(f"cannot write '{out.name}': use {' or '.join(suffixes)}", span)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise HybFileError(f"cannot write {out}: folder {parent} does not exist", span)
    return out


def _train_worker(src, file_label, args_dict, seq_len, parallel):
    """One rank of ``--nproc``: the same training, wrapped for DDP/FSDP; rank 0's result is kept."""
    args = argparse.Namespace(**args_dict)
    from hybriddsl.workbench.train import train

    task = make_task_from(args, seq_len)
    cfg = config_from(args, parallel=parallel)
    import torch.distributed as dist

    cfg.progress = cfg.progress and dist.get_rank() == 0
    return train(src, task, cfg, name=file_label, **overrides(args))


def run(args: argparse.Namespace) -> int:
    from hybriddsl.workbench.distributed import init_from_env

    out = check_output(args.output, (".json",))
    save = check_output(args.save, (".pt",))
    task = make_task_from(args, args.seq_len)
    src = source_arg(args)
    label = "<stdin>" if args.file == "-" else args.file
    rank, world = init_from_env()
    cfg = config_from(args, parallel=args.parallel if world > 1 else "none")
    if args.nproc < 1:
        raise HybOptionError(f"--nproc must be >= 1, got {args.nproc}", Span.none("<command line>"))
    if args.nproc > 1 and world > 1:
        raise HybOptionError("--nproc cannot be used under torchrun", Span.none("<command line>"))
    from hybriddsl.workbench.train import build_for_task, train

    sets = overrides(args)
    build_for_task(src, task, "cpu", **sets)  # compile errors surface here, once, before any process starts
    if args.nproc > 1:
        if save is not None:
            raise HybOptionError("--save is not supported with --nproc (use torchrun)", Span.none("<command line>"))
        from hybriddsl.workbench.distributed import spawn

        if cfg.batch % args.nproc:
            raise HybOptionError(
                f"--batch {cfg.batch} does not split over {args.nproc} processes", Span.none("<command line>")
            )
        res = spawn(_train_worker, args.nproc, src, label, _plain(args), args.seq_len, args.parallel)[0]
    else:
        import torch

        torch.manual_seed(cfg.seed)
        model = build_for_task(src, task, cfg.device, **sets)
        res = train(model, task, cfg, name=label)
        if save is not None and rank == 0:
            from hybriddsl import api

            if cfg.parallel == "fsdp":
                raise HybOptionError("--save with FSDP is not supported", Span.none("<command line>"))
            api.save(model, save)
    if rank != 0:
        return 0
    print(results_table([res]))
    if out is not None:
        from hybriddsl.fileio import write_text

        write_text(out, json.dumps(res.to_dict(), indent=1) + "\n")
        print(f"wrote {out}")
    if save is not None:
        print(f"wrote {save}")
    return 0


def _plain(args: argparse.Namespace) -> dict:
    """The picklable part of args (no func) for the spawned workers."""
    return {k: v for k, v in vars(args).items() if k != "func"}


def results_table(results) -> str:
    """One row per run: name, task, seq_len, params, final loss, accuracy, wall time."""
    rows = [("model", "task", "seq_len", "params", "loss", "accuracy", "time")]
    for r in results:
        rows.append(
            (
                r.name,
                r.task,
                str(r.task_options.get("seq_len", "")),
                f"{r.params:,}",
                f"{r.final_loss:.4f}",
                f"{r.final_accuracy:.3f}",
                f"{r.wall_s:.1f}s",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
