"""Scaffolding shared by the kernel tests: dtype ids and the random-cotangent loss behind every
gradient comparison (``assert_close`` and ``TOLERANCE`` live in :mod:`hybriddsl.kernels.testing`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

# Test-id suffix -> dtype, as in ids like ``B2-T64-H4-D32-bf16``.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def leaf_copies(*tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    """Fresh leaves (same values and dtype) that require grad; None stays None."""
    return [None if t is None else t.detach().clone().requires_grad_() for t in tensors]


def random_loss(outputs: Sequence[torch.Tensor | None], seed: int) -> torch.Tensor:
    """``sum_i <out_i, w_i>`` (float32) with ``w_i ~ N(0, 1)`` drawn in order from a generator seeded
    with ``seed``; None outputs are skipped. Every output enters the loss, so the gradient paths of all
    of them (the final state too) are tested; the same seed gives the reference the same cotangents."""
    gen = torch.Generator().manual_seed(seed)
    return sum((out.float() * torch.randn(out.shape, generator=gen)).sum() for out in outputs if out is not None)


def grads_of(loss: torch.Tensor, inputs: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """``d loss / d input`` for each input, None where the input is None."""
    grads = iter(torch.autograd.grad(loss, [t for t in inputs if t is not None]))
    return [None if t is None else next(grads) for t in inputs]
