"""The one registry of layer kinds.

Every kind is a frozen :class:`LayerSpec`: its canonical name and aliases, its typed options with defaults,
the factory that builds its module, cross-option checks, a FLOP formula and how to draw it. The parser resolves
names here, the ``resolve`` pass checks options here, ``lower`` builds modules from here, the renderer takes
colours and key options from here, and ``count`` asks the built modules for parameters and state sizes. Adding a
kind means writing ``layers/<kind>.py`` with a module class and a ``SPEC``, and listing it in
``layers/__init__.py``; nothing else changes.

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

from hybriddsl.errors import HybNameError, suggest

OptionValue = int | float | bool | str | None
MAX_INT = 2**31 - 1  # largest integer option or setting


@dataclass(frozen=True)
class Option:
    """One typed option of a layer kind.

    ``type`` is int, float, bool or str (an int is accepted where a float is expected). ``min``/``max`` bound
    numbers; ``choices`` lists allowed strings. ``default=None`` with ``optional=True`` means "unset": the factory
    derives the value (e.g. mamba's dt_rank = ceil(hidden / 16)).
    """

    name: str
    type: type
    default: OptionValue
    doc: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
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
            return f"option '{self.name}' must be one of {', '.join(self.choices)}, got {_show(value)}" + suggest(
                str(value), self.choices
            )
        return None

    def coerce(self, value: Any) -> Any:
        """The value in the option's own type (ints become floats for float options)."""
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value


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
    # a side block (zamba_shared): used only in ``shared`` statements, reads the stream and the embedding output
    # and adds its output to the next norm's input, not to the stream; its module takes (r, x0, use)
    side: bool = False

    def option(self, name: str) -> Option | None:
        for o in self.options:
            if o.name == name:
                return o
        return None

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}


_SPECS: dict[str, LayerSpec] = {}
_NAMES: dict[str, str] = {}  # lower-cased name or alias -> canonical name
_loaded = False  # the built-in kinds are registered (on first use, so that importing the registry is cheap)


def register(spec: LayerSpec) -> LayerSpec:
    """Add a kind; every name and alias must be new (case-insensitive). Nothing is added when one is taken."""
    _ensure_loaded()  # built-ins first: a user kind registered before any lookup must not hide them
    for n in (spec.name, *spec.aliases, *spec.edifice):
        key = n.lower()
        if key in _NAMES and _NAMES[key] != spec.name:
            raise ValueError(f"layer name '{n}' of '{spec.name}' is already used by '{_NAMES[key]}'")
    for n in (spec.name, *spec.aliases, *spec.edifice):
        _NAMES[n.lower()] = spec.name
    _SPECS[spec.name] = spec
    return spec


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    # Set before the import: hybriddsl.specs calls register() for each built-in kind, which lands here again.
    _loaded = True
    try:
        import hybriddsl.specs  # noqa: F401  (registers every built-in kind)
    except BaseException:
        _loaded = False
        raise


def canonical(name: str) -> str | None:
    """The canonical kind for a name or alias (case-insensitive), or None."""
    _ensure_loaded()
    return _NAMES.get(name.lower())


def get(name: str) -> LayerSpec:
    """The spec for a name or alias; raises HybNameError with a suggestion when unknown."""
    kind = canonical(name)
    if kind is None or _SPECS[kind].internal and name.lower() != kind:
        raise HybNameError(f"unknown layer '{name}'" + suggest(name, user_names()))
    return _SPECS[kind]


def specs() -> list[LayerSpec]:
    """Every registered kind, in registration order."""
    _ensure_loaded()
    return list(_SPECS.values())


def user_names() -> list[str]:
    """Every name a user may write (canonical names and aliases), for suggestions."""
    _ensure_loaded()
    out = []
    for s in _SPECS.values():
        if not s.internal:
            out += [s.name, *s.aliases, *s.edifice]
    return out
