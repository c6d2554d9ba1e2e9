"""Which parts of a model run code, and the opt-in that allows it (``trust_custom``, as ``trust_remote_code``).

A ``custom(fn="pkg.mod:attr")`` layer imports ``pkg.mod`` and calls ``attr`` when the model is built. Text can
come from anyone (a shared ``.hyb``, the source stored in a ``.pt``), so a factory named by a string in source
text is refused unless the caller passes ``trust_custom=True`` (``--trust-custom`` on the CLI). A Python callable
passed by the caller (``parse_and_build(src, **{"custom.fn": make})``) is the caller's own code and needs no
switch. Reading a model (``check``, ``render``, ``convert``, the layer table) never imports or calls a factory,
trusted or not: such layers count as unknown there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from hybriddsl.errors import UntrustedCodeError

SWITCH_HINT = (
    "only if you trust whoever wrote this text: pass trust_custom=True (compile, parse_and_build, load) "
    "or --trust-custom (hybdsl)"
)


def runs_code(kind: str, opts: dict[str, Any]) -> bool:
    """True when building this layer would import or call user code (custom, or a parallel block holding one)."""
    return any(True for _ in _factories(kind, opts, named_only=False))


def _factories(kind: str, opts: dict[str, Any], named_only: bool) -> Iterator[Any]:
    if kind == "custom":
        fn = opts.get("fn")
        if not named_only or isinstance(fn, str):
            yield fn
    for branch in opts.get("branches") or () if kind == "parallel" else ():
        for b in branch:
            yield from _factories(b["kind"], b["opts"], named_only)


def require_trust(graph: Any) -> None:
    """Raise UntrustedCodeError at the first layer whose factory is named by a string, unless the graph was
    compiled with ``trust_custom=True``."""
    if graph.compiled.trust_custom:
        return
    for nid in graph.mixers():
        node = graph[nid]
        for fn in _factories(node["kind"], node["opts"], named_only=True):
            where = f"layer {node['layer']}" + (f" ({node['role']})" if node.get("role") not in (None, "main") else "")
            raise UntrustedCodeError(
                f'{where}: custom(fn="{fn}") would import and run the Python code {fn!r} when the model is '
                "built; refused because the source text is not trusted",
                node.get("span"),
                graph.source,
                hint=SWITCH_HINT,
            )
