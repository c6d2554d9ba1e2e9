"""The custom kind for the registry: options, cross-option checks, FLOP formula (no torch here).

The module itself is in :mod:`hybriddsl.layers.custom`, imported only when a layer is built."""

from __future__ import annotations

import re
from typing import Any

from hybriddsl.layer_spec import LayerSpec, Option
from hybriddsl.specs.refs import module_ref

_TARGET = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")

_FORMAT_HINT = 'write fn = "package.module:factory", e.g. fn = "mypkg.layers:make_block"'


def importable_name(fn: Any) -> str | None:
    """``"module:qualname"`` when importing that name gives back ``fn`` itself (so it can be written into a file
    and found again), else None (a lambda, a closure, a function defined in ``__main__``)."""
    mod, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not isinstance(mod, str) or not isinstance(qual, str) or "<" in qual or mod == "__main__":
        return None
    import sys

    obj: Any = sys.modules.get(mod)  # only an already imported module: naming must not run code
    for part in qual.split("."):
        obj = getattr(obj, part, None)
    name = f"{mod}:{qual}"
    return name if obj is fn and _TARGET.match(name) else None


def validate(opts: dict[str, Any], hidden: int) -> str | None:
    """fn must be given, as a callable or a 'package.module:factory' string (imported only at build time)."""
    fn = opts["fn"]
    if fn is None:
        return 'custom needs fn = "package.module:factory"'
    if not callable(fn) and not (isinstance(fn, str) and _TARGET.match(fn)):
        return f"fn must look like 'package.module:factory', got {fn!r}"
    return None


SPEC = LayerSpec(
    name="custom",
    aliases=(),
    letter="C",
    summary="a user factory (hidden_size, **opts) -> nn.Module mapping [B, T, hidden] to itself",
    factory=module_ref("hybriddsl.layers.custom", "Custom"),
    options=(
        Option(
            "fn",
            str,
            None,
            "factory as 'package.module:factory' (or a callable from Python); a string from source text is "
            "built only with trust_custom=True / --trust-custom",
            optional=True,
            callable_ok=True,
        ),
    ),
    open_options=True,
    validate=validate,
    color="#e0e0e0",
    key_options=("fn",),
)
