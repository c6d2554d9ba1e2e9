"""Pass ``tie``: ``tie A@1,3`` makes existing layers share one set of weights (``tie A``: all of that kind).

Positions count layers of that kind in stack order (the 1st and 3rd attention layers). Tied layers must have
identical options. Their sub-blocks (e.g. attention's FFN) are tied along with them; their norms are not.
"""

from __future__ import annotations

from hybriddsl import registry
from hybriddsl.errors import HybError, HybNameError, HybOptionError
from hybriddsl.ir import Graph, format_opts


def tie(graph: Graph) -> Graph:
    """Apply every ``tie`` statement; returns a new graph."""
    g = graph.copy()
    order = g.mixers()  # one topological sort for every statement: the pass is linear in the graph
    companions: dict[str, list[str]] = {}
    for n in order:
        if g[n].get("parent") is not None:
            companions.setdefault(g[n]["parent"], []).append(n)
    for st in g.statements.ties:
        try:
            kind = registry.get(st.name).name
        except HybError as e:
            raise HybNameError(e.message, st.span) from None
        layers = [n for n in order if g[n]["kind"] == kind and g[n]["role"] == "main"]
        if st.positions is None:
            chosen = layers
            if len(chosen) < 2:
                raise HybOptionError(
                    f"'tie {st.name}' needs at least two {kind} layers; the stack has {len(layers)}", st.span
                )
        else:
            chosen = []
            for pos, span in st.positions:
                if not 1 <= pos <= len(layers):
                    raise HybOptionError(
                        f"there {'is' if len(layers) == 1 else 'are'} only {len(layers)} {kind} layer"
                        f"{'' if len(layers) == 1 else 's'}; cannot tie number {pos}",
                        span,
                    )
                chosen.append(layers[pos - 1])
            if len(set(chosen)) < 2:
                raise HybOptionError("tie needs at least two different layers", st.span)
        first = chosen[0]
        for other in chosen[1:]:
            a, b = g[first]["opts"], g[other]["opts"]
            if a != b:
                keys = [k for k in {**a, **b} if a.get(k) != b.get(k)]  # only what differs
                raise HybOptionError(
                    f"cannot tie {kind} layers at stack positions {g[first]['layer']} and {g[other]['layer']}: "
                    f"their options differ ({format_opts({k: a.get(k) for k in keys})} vs "
                    f"{format_opts({k: b.get(k) for k in keys})})",
                    st.span,
                )
            _share(g, first, other, companions)
    return g


def _share(g: Graph, first: str, other: str, companions: dict[str, list[str]]) -> None:
    """Give ``other`` (and its companions, in order) the weight groups of ``first`` (and its companions)."""
    g[other]["weights"] = g[first]["weights"]
    for a, b in zip(companions.get(first, []), companions.get(other, [])):
        g[b]["weights"] = g[a]["weights"]
