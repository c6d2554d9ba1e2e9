"""A small, deterministic training loop for compiled models on the workbench tasks.

AdamW (Loshchilov & Hutter 2019) with linear warm-up then cosine decay to a tenth of the peak rate, gradient
clipping at 1.0, and the loss

    loss = CE(logits at scored positions, targets) + model.aux_loss()      (MoE load balancing, if any)

The data come from one ``torch.Generator`` seeded with ``seed`` and the weights from ``torch.manual_seed(seed)``,
so two architectures trained with the same seed see the same batches in the same order. Accuracy is measured on
a fixed evaluation set (its own generator) every ``eval_every`` steps and at the end.

Under ``torch.distributed`` (see :mod:`hybriddsl.workbench.distributed`) every rank draws the same global batch
and keeps its slice; the loss is normalized by the *global* number of scored positions, so the averaged
gradients equal those of one process on the whole batch.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from hybriddsl import api
from hybriddsl.errors import HybOptionError, Span, TrainingError
from hybriddsl.lower import HybridModel
from hybriddsl.workbench.tasks import IGNORE, Task

EVAL_SEED_OFFSET = 1_000_003  # the evaluation set's generator: never the training stream


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train`."""

    steps: int = 300  # optimizer steps
    batch: int = 64  # global batch size (split across ranks under torch.distributed)
    lr: float = 3e-3  # peak learning rate
    weight_decay: float = 0.1  # AdamW decoupled weight decay
    warmup: int | None = None  # warm-up steps (default: 10% of steps)
    clip: float = 1.0  # gradient-norm clip (0: off)
    seed: int = 0  # weights and data order
    device: str = "cpu"
    eval_every: int = 50  # steps between evaluations (0: only at the end)
    eval_size: int = 256  # examples in the fixed evaluation set
    parallel: str = "none"  # none | ddp | fsdp (under torch.distributed)
    progress: bool = True  # tqdm bar on rank 0

    def check(self) -> None:
        """Raise HybOptionError for values a run cannot use."""
        span = Span.none("<command line>")
        for name in ("steps", "batch", "eval_size"):
            if getattr(self, name) < 1:
                raise HybOptionError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}", span)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise HybOptionError(f"--lr must be a positive number, got {self.lr}", span)
        if self.weight_decay < 0 or self.eval_every < 0 or (self.warmup is not None and self.warmup < 0):
            raise HybOptionError("--weight-decay, --eval-every and --warmup must be >= 0", span)
        if self.parallel not in ("none", "ddp", "fsdp"):
            raise HybOptionError(f"parallel must be none, ddp or fsdp, got '{self.parallel}'", span)


@dataclass
class TrainResult:
    """What a run measured. ``history``: one dict per logged step (step, loss, train_acc[, eval_acc])."""

    name: str
    task: str
    task_options: dict[str, Any]
    config: dict[str, Any]
    params: int
    final_loss: float
    final_accuracy: float
    wall_s: float
    history: list[dict[str, float]] = field(default_factory=list)

    def evals(self) -> list[tuple[int, float]]:
        """(step, eval accuracy) pairs in step order."""
        return [(h["step"], h["eval_acc"]) for h in self.history if "eval_acc" in h]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_for_task(
    src_or_path: str | os.PathLike, task: Task, device: str | torch.device = "cpu", **overrides: Any
) -> HybridModel:
    """Compile a .hyb source for a task: ``vocab = task.vocab``, ``output = logits``, ``seq_len`` the task's."""
    settings = {"vocab": task.vocab, "output": "logits", "seq_len": task.seq_len, **overrides}
    return api.parse_and_build(src_or_path, device=device, **settings)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from ``lr`` down to ``lr / 10`` at the last step."""
    warm = cfg.warmup if cfg.warmup is not None else max(1, cfg.steps // 10)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    frac = (step - warm) / max(1, cfg.steps - warm)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def _dist() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_loss(
    model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, world: int = 1
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """(loss to backpropagate, logits [B, T, V], correct, scored) for this rank's slice of the batch.

    The cross-entropy is summed over the local scored positions and divided by the global count (all-reduced
    when ``world > 1``) times ``1 / world``: DDP and FSDP average gradients over ranks, which then gives the
    gradient of the mean over the whole global batch, however the scored positions fall across ranks.
    """
    logits = model(inputs)
    ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum")
    scored = (targets != IGNORE).sum()
    total = scored.clone().float()
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(total)
    loss = ce * world / total.clamp_min(1.0)
    inner = model.module if hasattr(model, "module") else model
    aux = inner.aux_loss() if isinstance(inner, HybridModel) else 0.0
    correct, count = Task.accuracy(logits.detach(), targets)
    return loss + aux, logits, correct, count


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]], device: str) -> float:
    """Accuracy over the evaluation batches (every rank runs all of them: FSDP needs every rank in a forward)."""
    was = model.training
    model.eval()
    correct = scored = 0
    for x, y in data:
        c, n = Task.accuracy(model(x.to(device)), y.to(device))
        correct, scored = correct + c, scored + n
    model.train(was)
    return correct / max(scored, 1)


def _eval_data(task: Task, cfg: TrainConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(cfg.seed + EVAL_SEED_OFFSET)
    chunk = min(cfg.eval_size, 128)
    sizes = [chunk] * (cfg.eval_size // chunk) + ([cfg.eval_size % chunk] if cfg.eval_size % chunk else [])
    return [task.eval_batch(b, g) for b in sizes]


def train(
    model_or_src: HybridModel | str | os.PathLike,
    task: Task,
    cfg: TrainConfig | None = None,
    name: str | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train a model (or compile a .hyb source/path for ``task`` first) and return what was measured.

    inputs per step: ``task.batch(cfg.batch, generator)`` -> [batch, seq_len] ids; the model maps them to
    logits [batch, seq_len, vocab]. Under torch.distributed with ``cfg.parallel`` ddp/fsdp the model is wrapped
    here (see :mod:`hybriddsl.workbench.distributed`) and each rank trains on its slice of every batch.
    """
    from tqdm import tqdm

    cfg = cfg or TrainConfig()
    cfg.check()
    rank, world = _dist()
    if cfg.batch % world:
        raise HybOptionError(f"--batch {cfg.batch} does not split over {world} processes", Span.none("<command line>"))
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and for every run with this seed
    if isinstance(model_or_src, torch.nn.Module):
        model = model_or_src.to(cfg.device)
    else:
        model = build_for_task(model_or_src, task, cfg.device, **overrides)
        from hybriddsl.fileio import is_path as _is_path

        is_path = _is_path(model_or_src)
        name = name or (str(model_or_src) if is_path else None)
    name = name or "model"
    params = sum(p.numel() for p in model.parameters())
    net: torch.nn.Module = model
    if world > 1 and cfg.parallel != "none":
        from hybriddsl.workbench.distributed import wrap

        net = wrap(model, cfg.parallel)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(cfg.seed)
    evals = _eval_data(task, cfg)
    lb = cfg.batch // world
    history: list[dict[str, float]] = []
    off = True if not cfg.progress or rank != 0 else None  # None: tqdm shows the bar only on a terminal
    bar = tqdm(range(cfg.steps), desc=name, disable=off, leave=False, dynamic_ncols=True)
    t0 = time.perf_counter()
    loss_v = float("nan")
    net.train()
    for step in bar:
        x, y = task.batch(cfg.batch, gen)
        x, y = x[rank * lb : (rank + 1) * lb].to(cfg.device), y[rank * lb : (rank + 1) * lb].to(cfg.device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss, _, correct, count = local_loss(net, x, y, world)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip:
            # clip_grad_norm_ on DTensor grads (FSDP2) computes the global norm; plain tensors are already synced
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
        opt.step()
        loss_v = loss.item()
        if world > 1:  # report the global batch's numbers: the ranks' losses average to its loss
            import torch.distributed as dist

            t = torch.tensor([loss_v, correct, count], dtype=torch.float64, device=loss.device)
            dist.all_reduce(t)
            loss_v, correct, count = t[0].item() / world, int(t[1]), int(t[2])
        rec: dict[str, float] = {"step": step + 1, "loss": loss_v, "train_acc": correct / max(count, 1)}
        last = step + 1 == cfg.steps
        if last or (cfg.eval_every and (step + 1) % cfg.eval_every == 0):
            rec["eval_acc"] = evaluate(net, evals, cfg.device)
        history.append(rec)
        bar.set_postfix(loss=f"{loss_v:.3f}", acc=f"{rec['train_acc']:.3f}", refresh=False)
        if not math.isfinite(loss_v):
            raise TrainingError(f"training diverged at step {step + 1} (loss {loss_v}): try a smaller learning rate")
    bar.close()
    return TrainResult(
        name=name,
        task=task.name,
        task_options=task.options(),
        config=asdict(cfg),
        params=params,
        final_loss=loss_v,
        final_accuracy=history[-1]["eval_acc"],
        wall_s=time.perf_counter() - t0,
        history=history,
    )
