"""One-process data-parallel smoke run: NCCL on one GPU (gloo on CPU), DDP around a model mixing every recurrent
kind with a shared block; the wrapped model's gradients must equal the unwrapped model's on the same batch (one rank:
the all-reduce is an identity, so any difference is the wrapper's doing), then a few optimizer steps must lower the
loss. (``--fsdp`` adds FSDP2; on gloo with one CPU process it did not finish within 10 minutes here.)

    python -m benchmarks.ddp_smoke              # NCCL on cuda:0 when there is a GPU, else gloo on CPU
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

SRC = "M M2(head_dim=16) GLA(heads=2) R(head_size=32) D(heads=2) GD(heads=2) L A(heads=2) F\nshared A(heads=2)@2,5"


def main() -> int:
    from hybriddsl.api import parse_and_build
    from hybriddsl.workbench.distributed import free_port, wrap

    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    backend = "nccl" if cuda else "gloo"
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        base = parse_and_build(SRC, hidden=64, vocab=97, output="logits", device=dev)
        x = torch.randint(0, 97, (4, 48), device=dev)
        y = torch.randint(0, 97, (4, 48), device=dev)

        def loss_of(m):
            return torch.nn.functional.cross_entropy(m(x).flatten(0, 1), y.flatten())

        base.zero_grad()
        loss_of(base).backward()
        ref = {n: p.grad.clone() for n, p in base.named_parameters() if p.grad is not None}
        for mode in ("ddp", "fsdp") if "--fsdp" in sys.argv else ("ddp",):
            model = copy.deepcopy(base)
            model.zero_grad()
            wrapped = wrap(model, mode)
            loss_of(wrapped).backward()
            worst = 0.0
            for n, p in model.named_parameters():
                g = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
                worst = max(worst, ((g - ref[n]).norm() / ref[n].norm().clamp_min(1e-30)).item())
            opt = torch.optim.AdamW(wrapped.parameters(), lr=3e-3)
            losses = []
            for _ in range(5):
                opt.zero_grad()
                loss = loss_of(wrapped)
                loss.backward()
                opt.step()
                losses.append(loss.item())
            print(
                f"{backend} {mode} on {dev}: grad rel. diff vs unwrapped {worst:.1e}; losses {losses[0]:.3f} -> "
                f"{losses[-1]:.3f}"
            )
            if worst > 1e-5 or not losses[-1] < losses[0]:
                print(f"FAILED: {mode}", file=sys.stderr)
                return 1
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
