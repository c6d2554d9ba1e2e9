"""Comparison helpers shared by the kernel tests (and usable by anyone checking a kernel)."""

from __future__ import annotations

import torch

# Relative RMS error bounds per dtype: outputs and gradients (issue 5's table).
TOLERANCE = {
    torch.float32: {"out": 1e-4, "grad": 1e-3},
    torch.float64: {"out": 1e-9, "grad": 1e-8},
    torch.bfloat16: {"out": 5e-3, "grad": 2e-2},
    torch.float16: {"out": 2e-3, "grad": 1e-2},
}


def rel_rmse(ref: torch.Tensor, got: torch.Tensor) -> float:
    """||got - ref||_2 / ||ref||_2 computed in float64 (0 when both are zero)."""
    ref64, got64 = ref.detach().double(), got.detach().double()
    denom = ref64.pow(2).mean().sqrt().item()
    err = (ref64 - got64).pow(2).mean().sqrt().item()
    return err / denom if denom > 0 else err


def assert_close(name: str, ref: torch.Tensor, got: torch.Tensor, ratio: float) -> None:
    """Fail unless shapes match, ``got`` is finite and its relative RMS error is at most ``ratio``."""
    assert ref.shape == got.shape, f"{name}: shape {tuple(got.shape)} != reference {tuple(ref.shape)}"
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    err = rel_rmse(ref, got)
    max_diff = (ref.detach().double() - got.detach().double()).abs().max().item()
    assert err <= ratio, f"{name}: relative RMSE {err:.2e} > {ratio:.1e} (max abs diff {max_diff:.2e})"
