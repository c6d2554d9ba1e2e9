"""Argument checks and dtype/layout helpers shared by the kernel families.

Each family's public function (``kernels/<family>/__init__.py``) checks its own arguments; the
pieces that several families spell the same way live here so that they word their errors alike:
``"<function>: <argument> must be ..., got ..."``.
"""

from __future__ import annotations

import torch

from hybriddsl.tiles import CHUNK_MIN, CHUNK_SIZES  # noqa: F401 (CHUNK_SIZES: re-exported to the families)


def traced(*tensors: torch.Tensor) -> bool:
    """True while torch.compile or torch.export traces (fake tensors): then no value may steer Python, and nothing
    built from these tensors may be cached for later real calls."""
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return True
    from torch._guards import detect_fake_mode

    return detect_fake_mode(tensors) is not None


def needs_grad(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd will record an op on these tensors (None skipped): grad mode is on and one of them requires a
    gradient. The CPU fast paths choose between their in-place, no-graph form and their autograd function by it."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


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


# ---------------------------------------------------------------------------------------------------------------
# The contract every family's public function keeps (issue 13):
# - shapes: checked first, all of them, with the "<function>: <argument> must be ..., got ..." wording;
# - devices: every given tensor on the first input's device (check_device), on every path;
# - empty input (T = 0, or no rows): no error; an empty output and, when asked, the final state = the initial
#   state (float32) or zeros (empty_scan), the same on the PyTorch and the Triton path;
# - chunk_size (chunked families): a power of two in [CHUNK_MIN, the family's maximum] on every path, so what
#   runs on CPU also runs on a GPU (check_chunk).

# CHUNK_MIN (the smallest tl.dot tile, the Triton kernels' smallest chunk) and CHUNK_SIZES (the SSD/GLA tiles)
# come from hybriddsl.tiles: one torch-free definition for these checks and for the layer options' choices.


def check_device(fn: str, tensors: dict[str, torch.Tensor | None]) -> None:
    """Raise ValueError naming the first tensor (None skipped) not on the first tensor's device."""
    given = [(label, t) for label, t in tensors.items() if t is not None]
    if not given:
        return
    first, ref = given[0]
    for label, t in given[1:]:
        if t.device != ref.device:
            raise ValueError(
                f"{fn}: {label} is on {t.device} but {first} is on {ref.device} (all inputs must be on one device)"
            )


def check_chunk(fn: str, chunk_size: int, max_size: int | None) -> None:
    """Raise ValueError unless ``chunk_size`` is a power of two in ``[CHUNK_MIN, max_size]`` (no upper bound when
    ``max_size`` is None)."""
    ok = isinstance(chunk_size, int) and chunk_size >= CHUNK_MIN and chunk_size & (chunk_size - 1) == 0
    if ok and max_size is not None:
        ok = chunk_size <= max_size
    if not ok:
        top = f" and <= {max_size}" if max_size is not None else ""
        raise ValueError(f"{fn}: chunk_size must be a power of two >= {CHUNK_MIN}{top}, got {chunk_size!r}")


def empty_scan(
    out_shape: tuple[int, ...],
    like: torch.Tensor,
    initial_state: torch.Tensor | None,
    state_shape: tuple[int, ...],
    output_final_state: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The result of a scan over zero tokens: an empty output like ``like`` and, when asked, the final state, which
    is the initial state as float32 (a copy, differentiable) or zeros."""
    out = like.new_empty(out_shape)
    if not output_final_state:
        return out, None
    if initial_state is not None:
        return out, initial_state.to(torch.float32, copy=True)
    return out, torch.zeros(state_shape, dtype=torch.float32, device=like.device)
