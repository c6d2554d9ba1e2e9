"""Kernel families: each one a plain PyTorch reference beside its Triton forward and backward.

Layout per family (``kernels/<family>/``):

- ``reference.py``: the float32 definition of the math (a loop over time, written to be read),
  plus the fast PyTorch path used on CPU (chunked/vectorized) and a one-token ``*_step``.
- ``triton.py``: Triton forward and backward kernels, their launchers, and one ``torch.library``
  custom op with a registered autograd formula and fake (meta) implementation.
- ``__init__.py``: the public function; it documents shapes and dispatches by device through
  :func:`hybriddsl.kernels.dispatch.use_triton`.
"""

from hybriddsl.kernels.dispatch import backend, get_backend, set_backend, use_triton

__all__ = ["backend", "get_backend", "set_backend", "use_triton"]
