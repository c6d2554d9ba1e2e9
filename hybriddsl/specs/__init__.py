"""One module per layer kind's spec (options, checks, FLOP formula); :func:`builtin` lists them for
:mod:`hybriddsl.registry`, which registers them on first use.

Nothing here imports torch or the registry's table: a spec is built from the types in
:mod:`hybriddsl.layer_spec` and names its module class with :func:`~hybriddsl.specs.refs.module_ref`; the class
(``hybriddsl.layers.<kind>``) is imported when a layer is first built.
"""

from __future__ import annotations

import sys

from hybriddsl.layer_spec import LayerSpec

# Order matters only for listings (docs, --help): the seeds' kinds first.
KINDS = (
    "mamba",
    "mamba2",
    "attention",
    "gla",
    "rwkv",
    "delta_net",
    "gated_delta_net",
    "griffin",
    "gru",
    "ffn",
    "kan",
    "moe",
    "custom",
    "parallel",
    "zamba_shared",
)


def builtin() -> list[LayerSpec]:
    """Every built-in kind's spec, in listing order (a module holds ``SPEC``, or ``SPECS`` for several)."""
    # Named, not imported by a computed name, so that reading the imports (tests/test_layering.py) sees them all.
    from hybriddsl.specs import (  # noqa: F401
        attention,
        custom,
        delta_net,
        ffn,
        gated_delta_net,
        gla,
        griffin,
        gru,
        kan,
        mamba,
        mamba2,
        moe,
        parallel,
        rwkv,
        zamba_shared,
    )

    out: list[LayerSpec] = []
    for name in KINDS:
        mod = sys.modules[f"hybriddsl.specs.{name}"]
        out += getattr(mod, "SPECS", (mod.SPEC,) if hasattr(mod, "SPEC") else ())
    return out
