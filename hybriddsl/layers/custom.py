"""A user-supplied mixer: ``custom(fn = "pkg.mod:factory")`` builds ``factory(hidden_size, **opts)``.

The factory may be named by a ``"pkg.mod:attr"`` string (imported at build time, and only when the caller
trusts the text: ``trust_custom=True`` / ``--trust-custom``, see :mod:`hybriddsl.trust`) or, through the Python
API, passed as a callable. Every other keyword option is handed to the factory unchanged. The returned module must
map ``[batch, seq, hidden] -> [batch, seq, hidden]``; :class:`Custom` checks that once at build time on a tiny
input and raises :class:`~hybriddsl.errors.LoweringError` with a clear message (and a suggestion for a
misspelt name) when the factory cannot be imported, fails, or returns something else.

Streaming: when the user module has its own ``init_state`` and ``step`` (the layer contract of
:mod:`hybriddsl.registry`), :class:`Custom` uses them. Otherwise ``step`` keeps the whole input prefix in its
state and reruns ``forward`` on it for every token, returning the last position: correct for any causal
module, but token ``t`` costs a forward over ``t`` positions (``O(T^2)`` over a sequence) and the state grows
by ``hidden`` values per token.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from hybriddsl.errors import LoweringError, suggest
from hybriddsl.layers.base import Mixer, State
from hybriddsl.specs.custom import _FORMAT_HINT, _TARGET, SPEC, validate  # noqa: F401 (the kind's spec, torch-free)


def _show(fn: str | Callable[..., Any]) -> str:
    return fn if isinstance(fn, str) else getattr(fn, "__qualname__", repr(fn))


def load_factory(fn: str | Callable[..., Any]) -> Callable[..., Any]:
    """The callable named by ``"pkg.mod:attr"`` (``attr`` may be dotted), or ``fn`` itself when callable.

    Raises LoweringError when the string is malformed, the module cannot be imported or lacks the attribute.
    """
    if callable(fn):
        return fn
    if not isinstance(fn, str) or not _TARGET.match(fn):
        raise LoweringError(
            f"custom: fn must name a factory as 'package.module:factory', got {fn!r}", hint=_FORMAT_HINT
        )
    mod_name, attr = fn.split(":")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise LoweringError(
            f"custom: cannot import module '{mod_name}' for fn = \"{fn}\" ({e})",
            hint="check that the package is installed or on PYTHONPATH, and the module path is spelt right",
        ) from e
    except Exception as e:  # the user's module raised while importing
        raise LoweringError(f"custom: importing module '{mod_name}' failed: {type(e).__name__}: {e}") from e
    obj: Any = mod
    owner = mod_name
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            raise LoweringError(
                f"custom: '{owner}' has no attribute '{part}' (fn = \"{fn}\")" + suggest(part, names),
                hint=_FORMAT_HINT,
            )
        obj = getattr(obj, part)
        owner = f"{owner}.{part}" if owner != mod_name else f"{mod_name}:{part}"
    if not callable(obj):
        raise LoweringError(f'custom: fn = "{fn}" names a {type(obj).__name__}, not a callable factory')
    return obj


class Custom(Mixer):
    """Wraps the user's module ``inner``. x: [batch, seq, hidden] -> [batch, seq, hidden].

    ``fn``: ``"pkg.mod:factory"`` or a callable; ``**opts`` go to ``factory(hidden_size, **opts)``.
    """

    replicable = False  # the factory is the user's: its module has no contract to re-initialize

    def __init__(self, hidden_size: int, fn: str | Callable[..., Any] | None = None, **opts: Any):
        super().__init__()
        if fn is None:
            raise LoweringError("custom: option fn is required", hint=_FORMAT_HINT)
        factory = load_factory(fn)
        self.fn_name = _show(fn)
        try:
            inner = factory(hidden_size, **opts)
        except Exception as e:
            raise LoweringError(
                f"custom: factory '{self.fn_name}'(hidden_size={hidden_size}"
                + "".join(f", {k}={v!r}" for k, v in opts.items())
                + f") raised {type(e).__name__}: {e}"
            ) from e
        if not isinstance(inner, nn.Module):
            raise LoweringError(
                f"custom: factory '{self.fn_name}' returned a {type(inner).__name__}, not a torch.nn.Module"
            )
        self.hidden = hidden_size
        self.inner = inner
        self._check_shape()

    def _check_shape(self) -> None:
        """Run the module once on a [2, 3, hidden] input (eval mode, no grad) and check what comes back."""
        p = next(iter(self.inner.parameters()), None)
        x = torch.zeros(
            2,
            3,
            self.hidden,
            device=p.device if p is not None else None,
            dtype=p.dtype if p is not None and p.is_floating_point() else torch.float32,
        )
        was_training = self.inner.training
        self.inner.eval()  # e.g. BatchNorm statistics must not move
        try:
            with torch.no_grad():
                y = self.inner(x)
        except Exception as e:
            raise LoweringError(
                f"custom: module from '{self.fn_name}' fails on an input of shape [2, 3, {self.hidden}]: "
                f"{type(e).__name__}: {e}",
                hint="a custom mixer takes [batch, seq, hidden] and returns the same shape",
            ) from e
        finally:
            self.inner.train(was_training)
        if not isinstance(y, torch.Tensor):
            raise LoweringError(
                f"custom: module from '{self.fn_name}' returned a {type(y).__name__}, not one tensor",
                hint="wrap it so that forward returns only the [batch, seq, hidden] output",
            )
        if tuple(y.shape) != (2, 3, self.hidden):
            raise LoweringError(
                f"custom: module from '{self.fn_name}' maps [2, 3, {self.hidden}] to {list(y.shape)}; "
                f"a custom mixer must return [batch, seq, hidden]"
            )

    @property
    def _own_step(self) -> bool:
        return callable(getattr(self.inner, "step", None)) and callable(getattr(self.inner, "init_state", None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)

    def init_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> State:
        """The user module's state, or the empty prefix [batch, 0, hidden] for recompute-on-prefix."""
        if self._own_step:
            return self.inner.init_state(batch, device=device, dtype=dtype)
        p = next(iter(self.inner.parameters()), None)
        device = device or (p.device if p is not None else None)
        dtype = dtype or (p.dtype if p is not None else torch.float32)
        return {"prefix": torch.zeros(batch, 0, self.hidden, device=device, dtype=dtype)}

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One token x [batch, hidden] -> y [batch, hidden] (the user's step, or forward over the prefix)."""
        if self._own_step:
            return self.inner.step(x, state)
        prefix = torch.cat([state["prefix"], x.unsqueeze(1).to(state["prefix"].dtype)], dim=1)
        return self.inner(prefix.to(x.dtype))[:, -1], {"prefix": prefix}

    def state_bytes(self, seq_len: int, dtype_bytes: int = 4) -> int:
        """The user module's answer when it has one; else the prefix, ``seq_len * hidden`` values."""
        if self._own_step and callable(getattr(self.inner, "state_bytes", None)):
            return self.inner.state_bytes(seq_len, dtype_bytes)
        if self._own_step:
            return super().state_bytes(seq_len, dtype_bytes)
        return seq_len * self.hidden * dtype_bytes
