"""Which implementation a kernel call runs: Triton or the PyTorch reference.

``auto`` (the default) runs Triton for CUDA tensors when Triton imports, else the reference.
``triton`` forces Triton (on CPU tensors this needs ``TRITON_INTERPRET=1``, set before Triton is
imported: that is how the kernels are tested without a GPU; or :func:`compile_only`, under which
Triton compiles for a stand-in GPU and launches nothing). ``reference`` forces PyTorch.
The environment variable ``HYBDSL_KERNELS`` sets the starting value.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

import torch

_CHOICES = ("auto", "triton", "reference")
_backend = os.environ.get("HYBDSL_KERNELS", "auto")
if _backend not in _CHOICES:  # a bad environment value should not break import
    warnings.warn(f"HYBDSL_KERNELS={_backend!r} is not one of {_CHOICES}; using 'auto'", stacklevel=1)
    _backend = "auto"


def set_backend(name: str) -> None:
    """Choose 'auto', 'triton' or 'reference' for every kernel call from now on."""
    global _backend
    if name not in _CHOICES:
        raise ValueError(f"kernel backend must be one of {_CHOICES}, got {name!r}")
    _backend = name


def get_backend() -> str:
    """The current choice: 'auto', 'triton' or 'reference'."""
    return _backend


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    """``with backend('reference'): ...`` sets the choice for a block and restores it after."""
    old = _backend
    set_backend(name)
    try:
        yield
    finally:
        set_backend(old)


_triton_ok: bool | None = None


def triton_available() -> bool:
    """True when Triton imports (it is an optional dependency). Cached in a plain global, not lru_cache,
    so that torch.compile traces through it without warnings."""
    global _triton_ok
    if _triton_ok is None:
        try:
            import triton  # noqa: F401

            _triton_ok = True
        except Exception:
            _triton_ok = False
    return _triton_ok


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


_compile_only = False


@contextlib.contextmanager
def compile_only() -> Iterator[None]:
    """Let forced Triton calls take CPU tensors without the interpreter: for a driver that compiles for a GPU
    it does not have and launches nothing (benchmarks/fake_gpu.py). Outputs are then uninitialized."""
    global _compile_only
    old, _compile_only = _compile_only, True
    try:
        yield
    finally:
        _compile_only = old


_warned: set[str] = set()


def use_triton(*tensors: torch.Tensor | None, name: str = "kernel") -> bool:
    """Decide for one call. ``tensors`` are the call's inputs (None entries are ignored)."""
    choice = _backend
    if choice == "reference":
        return False
    on_cuda = any(t is not None and t.is_cuda for t in tensors)
    if choice == "triton":
        if not triton_available():
            raise RuntimeError(f"{name}: the Triton backend was forced but triton is not installed")
        if not on_cuda and not interpreting() and not _compile_only:
            raise RuntimeError(f"{name}: Triton on CPU tensors needs TRITON_INTERPRET=1 set before import")
        return True
    if on_cuda and not triton_available():
        if name not in _warned:  # the fallback is slow: say so once per kernel
            _warned.add(name)
            warnings.warn(f"{name}: triton is not installed; using the PyTorch reference", stacklevel=2)
        return False
    return on_cuda
