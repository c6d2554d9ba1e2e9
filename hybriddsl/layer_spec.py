"""What a layer kind is: :class:`Option` and :class:`LayerSpec`, the types of the registry (no table, no torch).

The specs (``hybriddsl/specs/<kind>.py``) and the layer modules (``hybriddsl/layers/<kind>.py``) import these;
the table of kinds, name lookup and building are in :mod:`hybriddsl.registry`.

Every layer module (the *mixer* of a residual block) follows one contract:

- ``forward(x)``: ``[batch, seq, hidden] -> [batch, seq, hidden]`` (norm and residual are added by the model)
- ``init_state(batch, device=None, dtype=None) -> dict[str, Tensor]``: the state before the first token
- ``step(x, state) -> (y, new_state)``: one token, ``x``/``y`` are ``[batch, hidden]``; running ``step`` over a
  sequence gives the same outputs as ``forward``
- ``state_bytes(seq_len, dtype_bytes=4) -> int``: bytes of that state per sequence after ``seq_len`` tokens
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hybriddsl.errors import suggest

OptionValue = int | float | bool | str | None
MAX_INT = 2**31 - 1  # largest integer option or setting


@dataclass(frozen=True)
class Option:
    """One typed option of a layer kind.

    ``type`` is int, float, bool or str (an int is accepted where a float is expected). ``min``/``max`` bound
    numbers; ``choices`` lists the allowed values (names, or numbers such as a kernel's tile lengths).
    ``default=None`` with ``optional=True`` means "unset": the factory derives the value (e.g. mamba's
    dt_rank = ceil(hidden / 16)). The default is written here only: resolve, the layer classes, the checks and
    the FLOP formulas all read it from the Option.
    """

    name: str
    type: type
    default: OptionValue
    doc: str
    min: float | None = None
    max: float | None = None
    choices: tuple[OptionValue, ...] = ()
    optional: bool = False
    callable_ok: bool = False  # the Python API may pass a callable here (custom's fn)

    def check(self, value: Any) -> str | None:
        """None when ``value`` is allowed, else a message saying what was expected."""
        if value is None and self.optional or self.callable_ok and callable(value):
            return None
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.type is int and (isinstance(value, bool) or not isinstance(value, int)):
            return f"option '{self.name}' takes an integer, got {_show(value)}"
        if self.type is float and not isinstance(value, float):
            return f"option '{self.name}' takes a number, got {_show(value)}"
        if self.type is bool and not isinstance(value, bool):
            return f"option '{self.name}' takes true or false, got {_show(value)}"
        if self.type is str and not isinstance(value, str):
            return f"option '{self.name}' takes a name or string, got {_show(value)}"
        if self.type is int and abs(value) > MAX_INT:  # torch sizes are 64-bit; far beyond any real model anyway
            return f"option '{self.name}' is too large: {value} (at most {MAX_INT:,})"
        if self.min is not None and value < self.min:
            return f"option '{self.name}' must be >= {_num(self.min)}, got {_show(value)}"
        if self.max is not None and value > self.max:
            return f"option '{self.name}' must be <= {_num(self.max)}, got {_show(value)}"
        if self.choices and value not in self.choices:
            listing = ", ".join(str(c) for c in self.choices)
            return f"option '{self.name}' must be one of {listing}, got {_show(value)}" + _nearest(value, self.choices)
        return None

    def coerce(self, value: Any) -> Any:
        """The value in the option's own type (ints become floats for float options)."""
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value


def _nearest(value: Any, choices: tuple[OptionValue, ...]) -> str:
    """' - did you mean ...?': the closest name by spelling, or the closest number(s) by value."""
    if isinstance(value, str) or not all(isinstance(c, (int, float)) for c in choices):
        return suggest(str(value), [str(c) for c in choices])
    gap = min(abs(c - value) for c in choices)
    near = [str(c) for c in choices if abs(c - value) == gap]
    return f" - did you mean {' or '.join(near)}?"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'"
    return str(value)


# Signature of a kind's cross-option check: (resolved opts, hidden size) -> error message or None.
Validator = Callable[[dict[str, Any], int], "str | None"]
# FLOPs per token of one layer: (resolved opts, hidden size, parameter count, sequence length) -> FLOPs.
FlopFormula = Callable[[dict[str, Any], int, int, int], int]
# Sub-blocks a kind brings along, each its own pre-norm residual block: opts -> [(kind, opts), ...].
Companions = Callable[[dict[str, Any]], list[tuple[str, dict[str, Any]]]]


def matmul_flops(opts: dict[str, Any], hidden: int, params: int, seq_len: int) -> int:
    """Default FLOP formula: one multiply-add per weight per token (2 FLOPs per parameter)."""
    return 2 * params


@dataclass(frozen=True)
class LayerSpec:
    """Everything the compiler knows about one layer kind."""

    name: str  # canonical, lower case: "mamba"
    aliases: tuple[str, ...]  # other names, any case: ("M", "ssm")
    letter: str  # one-word tag for Edifice-style visualize(): "M"
    summary: str  # one line: what the block computes, with its paper
    factory: Callable[..., Any]  # (hidden_size: int, **opts) -> nn.Module following the layer contract
    options: tuple[Option, ...] = ()
    validate: Validator | None = None
    flops: FlopFormula = matmul_flops
    companions: Companions | None = None
    recurrent: bool = False  # carries O(1) state per token (as opposed to a KV cache or nothing)
    color: str = "#dddddd"  # fill colour in rendered diagrams
    key_options: tuple[str, ...] = ()  # options shown on rendered nodes and in tables
    internal: bool = False  # only reachable as a companion (e.g. rwkv channel mix), not by name
    open_options: bool = False  # options beyond `options` pass to the factory unchecked (custom)
    edifice: tuple[str, ...] = field(default=())  # names used by Edifice (atoms), e.g. ("griffin_lru",)
    # opts["branches"] holds sub-layers, [[{"kind", "opts"}, ...], ...] (parallel): the registry builds them first
    # and passes the modules in, and the FLOP count adds what their own formulas add to their matmuls
    branches: bool = False
    # a side block (zamba_shared): used only in ``shared`` statements, reads the stream and the embedding output
    # and adds its output to the next norm's input, not to the stream; its module takes (r, x0, use)
    side: bool = False

    def option(self, name: str) -> Option | None:
        for o in self.options:
            if o.name == name:
                return o
        return None

    def defaults(self) -> dict[str, Any]:
        """Every declared option at its default: the one place a default is written is its :class:`Option`."""
        return {o.name: o.default for o in self.options}

    def complete(self, opts: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``opts`` with every declared option present (the missing ones at their defaults); keys that
        are not options (parallel's ``branches``, custom's open options) pass through."""
        return {**self.defaults(), **opts}

    def check(self, opts: dict[str, Any], hidden: int) -> str | None:
        """None when complete ``opts`` are allowed for a layer of width ``hidden``, else what is wrong: each
        option's own check, then the kind's cross-option check."""
        for o in self.options:
            msg = o.check(opts[o.name])
            if msg:
                return msg
        return self.validate(opts, hidden) if self.validate is not None else None
