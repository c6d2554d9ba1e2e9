"""The layer contract every kind's module follows, and pieces several kinds share.

A *mixer* maps ``[batch, seq, hidden] -> [batch, seq, hidden]``; the model wraps it in norm + residual.
It also runs one token at a time with an explicit state (see :mod:`hybriddsl.registry`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from hybriddsl.kernels.checks import compute_dtype  # float32, float64 stays float64 (gradcheck)
from hybriddsl.layers.short_conv import ShortConv  # noqa: F401 (re-exported: the layers import it from here)

State = dict[str, torch.Tensor]


def wide(t: torch.Tensor) -> torch.Tensor:
    """``t`` in its compute dtype: float32, or float64 when it already is (gradcheck)."""
    return t.to(compute_dtype(t))


M = TypeVar("M", bound=type)


def options_from(spec: Any) -> Callable[[M], M]:
    """Class decorator: the layer takes its kind's options as keywords, with the defaults of the spec's
    :class:`~hybriddsl.registry.Option` s (read when a layer is built, so they are written only there).

    ``Mamba2(64, state=16)`` fills in every other option, checks them all (each option's type, range and
    choices, then the kind's cross-option check) and raises ValueError with the spec's message on a bad value.
    Keywords that are not options (parallel's ``branches``) pass through unchanged.
    """

    def wrap(cls: M) -> M:
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self: nn.Module, hidden_size: int, **opts: Any) -> None:
            opts = spec.complete(opts)
            msg = spec.check(opts, hidden_size)
            if msg:
                raise ValueError(msg)
            init(self, hidden_size, **opts)

        cls.__init__ = __init__
        return cls

    return wrap


class Mixer(nn.Module):
    """Base class of layer modules: the streaming contract with sensible defaults.

    Stateless kinds (ffn, kan, moe) need only ``forward``: their ``step`` calls forward on one token.
    A kind whose ``step`` also takes ``inplace=True`` (then writes its new state into the state tensors it was
    given, for :class:`hybriddsl.streaming.Stream`) says so with ``inplace_step = True``.
    """

    inplace_step: bool = False
    # lowering may build a repeated layer as a copy of the first one plus ``reset_parameters()`` (see
    # hybriddsl/layers/replicate.py); a kind whose construction does more than that (custom code) says False
    replicable: bool = True

    def init_weights(self) -> None:
        """The kind's own initialization, after every sub-module's default one: the last step of construction.

        Sets every parameter the layer itself owns (not its sub-modules'), random or not, so that
        :meth:`reset_parameters` brings back a freshly built layer."""

    def reset_parameters(self) -> None:
        """Initialize every weight again, drawing from the random generator exactly as construction did: each
        sub-module's default init in the order they were created, then :meth:`init_weights`. After
        ``torch.manual_seed(s)``, the weights equal those of a layer built after ``torch.manual_seed(s)``."""
        reset_children(self)
        self.init_weights()

    def init_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> State:
        """State before the first token; empty for stateless kinds."""
        return {}

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One token: ``x`` [batch, hidden] -> (``y`` [batch, hidden], new state)."""
        return self.forward(x.unsqueeze(1)).squeeze(1), state

    def state_bytes(self, seq_len: int, dtype_bytes: int = 4) -> int:
        """Bytes of state per sequence after ``seq_len`` tokens (recurrent kinds: independent of seq_len)."""
        dtype = {2: torch.bfloat16, 4: torch.float32, 8: torch.float64}.get(dtype_bytes, torch.float32)
        st = self.init_state(1, device=torch.device("meta"), dtype=dtype)
        return sum(t.numel() * t.element_size() for t in st.values())

    def _param(self) -> torch.Tensor:
        return next(self.parameters())


def reset_children(module: nn.Module) -> None:
    """Call ``reset_parameters()`` on each child that has one, in creation order; descend into the others."""
    for child in module._modules.values():
        if child is None:
            continue
        if type(child) is nn.Linear:
            reset_linear(child)
        elif hasattr(child, "reset_parameters"):
            child.reset_parameters()
        else:
            reset_children(child)


_KAIMING_GAIN = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))  # torch.nn.init.calculate_gain("leaky_relu", sqrt(5))


def reset_linear(lin: nn.Linear) -> None:
    """``nn.Linear.reset_parameters`` (the same draws, bit for bit) without its per-call Python overhead (a
    gradient-mode switch and fan computation per tensor), which was a third of rebuilding a 1,000-layer model.
    Weight [out, in] ~ U(±1/sqrt(in)) as kaiming_uniform_(a=sqrt(5)) computes it; bias ~ U(±1/sqrt(in))."""
    w, b = lin.weight, lin.bias
    fan_in = w.shape[1]
    with torch.no_grad():
        if w.numel():
            bound = math.sqrt(3.0) * (_KAIMING_GAIN / math.sqrt(fan_in))
            w.uniform_(-bound, bound)
        if b is not None:
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            b.uniform_(-bound, bound)


class GatedRMSNorm(nn.Module):
    """RMSNorm of ``x`` times ``silu(gate)`` over the last dim, in groups (Mamba-2, Gated DeltaNet, GLA outputs).

    x, gate: [..., dim]; the norm runs over groups of ``dim // groups`` channels (per head).
    """

    def __init__(self, dim: int, groups: int = 1, eps: float = 1e-6):
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.fill_(1.0)

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        shape = x.shape
        xf = x.to(compute_dtype(x)).reshape(*shape[:-1], self.groups, shape[-1] // self.groups)
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        y = xf.reshape(shape) * self.weight.to(xf.dtype)
        if gate is not None:
            y = y * F.silu(gate.to(xf.dtype))
        return y.to(x.dtype)
