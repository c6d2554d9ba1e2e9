"""Argument checks and dtype/layout helpers shared by the kernel families.

Each family's public function (``kernels/<family>/__init__.py``) checks its own arguments; the
pieces that several families spell the same way live here so that they word their errors alike:
``"<function>: <argument> must be ..., got ..."``.
"""

from __future__ import annotations

import torch


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the PyTorch paths accumulate in: float32, but float64 stays float64 so that
    ``torch.autograd.gradcheck`` can run on them."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def contiguous(*tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    """``t.contiguous()`` of each tensor (None stays None), for launchers whose kernels assume dense
    row-major strides."""
    return [None if t is None else t.contiguous() for t in tensors]


def check_floating(fn: str, tensors: dict[str, torch.Tensor | None]) -> None:
    """Raise ValueError naming the first tensor (None skipped) that is not floating point."""
    for label, x in tensors.items():
        if x is not None and not x.is_floating_point():
            raise ValueError(f"{fn}: {label} must be floating point, got {x.dtype}")


def check_state(
    fn: str, label: str, state: torch.Tensor | None, want: tuple[int, ...], layout: str = "[B, H, K, V]"
) -> None:
    """Raise ValueError unless ``state`` is None or has shape ``want`` (``layout`` names its dims)."""
    if state is not None and tuple(state.shape) != tuple(want):
        raise ValueError(f"{fn}: {label} must be {layout} = {tuple(want)}, got {tuple(state.shape)}")
