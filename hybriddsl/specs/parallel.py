"""The parallel kind for the registry: options (no torch here).

The module itself is in :mod:`hybriddsl.layers.parallel`, imported only when a layer is built. Its branches are
layers of their own (``opts["branches"]``): the registry builds them and passes the modules in, and ``count``
adds their FLOPs (``branches=True``)."""

from __future__ import annotations

from hybriddsl.layer_spec import LayerSpec, Option
from hybriddsl.specs.refs import module_ref

SPEC = LayerSpec(
    name="parallel",
    aliases=(),
    letter="P",
    summary="branches on the same input, combined by mean, sum, learned gate or concat+projection (Hymba, Falcon-H1)",
    factory=module_ref("hybriddsl.layers.parallel", "Parallel"),
    options=(Option("mix", str, "mean", "how branch outputs combine", choices=("mean", "sum", "gate", "concat")),),
    branches=True,
    color="#e8e8ff",
    key_options=("branches", "mix"),
    internal=True,
)
