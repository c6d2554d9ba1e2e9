"""One module per layer kind's spec (options, checks, FLOP formula); importing this package registers them all
in :mod:`hybriddsl.registry`.

Nothing here imports torch: a spec names its module class with :func:`~hybriddsl.specs.refs.module_ref`, and
the class (``hybriddsl.layers.<kind>``) is imported when a layer is first built.
"""

from __future__ import annotations

import importlib

from hybriddsl.registry import register

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

for _name in KINDS:
    _mod = importlib.import_module(f"hybriddsl.specs.{_name}")
    for _spec in getattr(_mod, "SPECS", (_mod.SPEC,) if hasattr(_mod, "SPEC") else ()):
        register(_spec)
