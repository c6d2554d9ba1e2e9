"""Data-parallel training of compiled models: DDP and FSDP2 (``torch.distributed.fsdp.fully_shard``).

A compiled :class:`~hybriddsl.lower.HybridModel` is a plain ``nn.Module`` whose shared blocks (``shared attn@2,4``)
and tied weights (``tie``, the tied LM head) are *one* ``Parameter`` used several times in a forward pass, so

- DDP needs nothing special: each parameter is registered once and its gradient (summed over its uses by
  autograd) is all-reduced once;
- FSDP2 shards each parameter once. :func:`wrap` shards every block used exactly once in the plan as its own
  unit, and leaves blocks used several times (shared blocks) and the embedding/head pair (tied) to the root
  unit, so that a weight used in several places is gathered for the whole forward/backward rather than
  resharded between uses.

Launch with ``torchrun --nproc-per-node N -m hybriddsl.cli train FILE.hyb --parallel ddp`` (or
``hybdsl train ... --nproc N``, which spawns N local processes with the gloo backend on CPU).
"""

from __future__ import annotations

import io
import os
import socket
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def init_from_env(backend: str | None = None) -> tuple[int, int]:
    """Initialize the default process group from torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR...).

    ``backend`` defaults to nccl when CUDA is available, gloo otherwise. Returns (rank, world size); (0, 1) when
    not launched by torchrun (no WORLD_SIZE) — a single-process run.
    """
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_rank(), dist.get_world_size()


def wrap(model: nn.Module, mode: str) -> nn.Module:
    """Wrap ``model`` for data parallelism: ``ddp`` -> DistributedDataParallel; ``fsdp`` -> FSDP2 in place.

    The process group must be initialized. Returns the module to call (DDP: a wrapper; FSDP2: ``model`` itself,
    its parameters now DTensors sharded over dim 0).
    """
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        dev = next(model.parameters()).device
        return DistributedDataParallel(model, device_ids=[dev] if dev.type == "cuda" else None)
    if mode == "fsdp":
        import warnings

        from torch.distributed.fsdp import fully_shard

        # FSDP2 warns when a unit returns a view (an in-place op on it would skip the all-gather hook); the
        # compiled model's residual adds are out of place (tests/test_distributed.py checks the gradients)
        warnings.filterwarnings("ignore", message=".*returned a view tensor.*", category=UserWarning)
        for mod in fsdp_units(model):
            fully_shard(mod)
        fully_shard(model)
        return model
    raise ValueError(f"parallel mode must be 'ddp' or 'fsdp', got {mode!r}")


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The blocks of a HybridModel to shard as their own FSDP2 units: those used exactly once in the plan.

    Shared blocks (several uses) stay in the root unit. The tied embedding/head are not blocks, so they are
    in the root unit too.
    """
    blocks = getattr(model, "blocks", None)
    plan = getattr(model, "plan", None)
    if blocks is None or plan is None:
        return []
    uses = Counter(st.key for st in plan if st.op == "mixer")
    return [blocks[k] for k, n in uses.items() if n == 1 and k in blocks and any(True for _ in blocks[k].parameters())]


def free_port() -> int:
    """A free TCP port on localhost for MASTER_PORT."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    os.environ.setdefault("LOCAL_RANK", str(rank))
    torch.set_num_threads(1)  # N processes on a few cores: one thread each avoids oversubscription
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        out = fn(*args)
        # plain bytes: tensors sent through a torch.multiprocessing queue live in shared memory that is gone
        # once this process exits
        buf = io.BytesIO()
        torch.save(out, buf)
        queue.put((rank, buf.getvalue(), None))
    except BaseException as e:  # report to the parent instead of dying silently
        queue.put((rank, None, e))
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable[..., Any], nproc: int, *args: Any) -> list[Any]:
    """Run ``fn(*args)`` in ``nproc`` local processes joined in a gloo process group; returns each rank's result.

    ``fn`` must be importable (a module-level function) and its result picklable. An exception in any rank is
    re-raised here.
    """
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, nproc, port, fn, args, queue)) for r in range(nproc)]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    error: BaseException | None = None
    for _ in procs:
        rank, out, err = queue.get()
        results[rank] = None if out is None else torch.load(io.BytesIO(out), weights_only=False)
        error = error or err
    for p in procs:
        p.join()
    if error is not None:
        raise error
    return [results[r] for r in range(nproc)]
