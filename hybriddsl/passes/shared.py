"""Pass ``insert_shared``: ``shared attn@2,4,6`` -> ONE block (one weight group) applied after stack layers 2, 4, 6.

This is Zamba's shared attention and the seed's ``shared_layers: %{attention: [2, 4, 6]}``. The norm in front of
the shared block is shared too, so the block is one set of weights wherever it is applied.
"""

from __future__ import annotations

from hybriddsl.errors import HybOptionError, IRError
from hybriddsl.ir import Graph, Op


def insert_shared(graph: Graph) -> Graph:
    """Insert every ``shared`` statement's block (resolved by ``resolve``) after its positions; returns a new
    graph."""
    g = graph.copy()
    n_layers = max((g[n]["layer"] or 0) for n in g.mixers())
    for k, st in enumerate(g.statements.shared):
        if len(st.resolved) < len(st.layers):
            raise IRError("insert_shared runs after resolve: the shared statement's layers are not resolved")
        seen = set()
        tails = stream_tails(g)  # one walk per statement, not one per position
        for pos, span in st.positions:
            if not 1 <= pos <= n_layers:
                raise HybOptionError(
                    f"shared block position {pos} is outside the stack (it has {n_layers} layers: 1..{n_layers})",
                    span,
                )
            if pos in seen:
                raise HybOptionError(f"position {pos} is listed twice", span)
            seen.add(pos)
            if pos not in tails:
                raise HybOptionError(f"no layer at position {pos}", span)
            tail = tails[pos]
            for j, layer in enumerate(st.resolved):
                tail = g.add_block(
                    tail,
                    mixer=dict(
                        kind=layer.kind,
                        opts=layer.opts,
                        weights=f"shared{k}_{layer.kind}_{j}",
                        role="shared",
                        layer=pos,
                        span=layer.span,
                    ),
                    norm=dict(
                        kind=g.settings["norm"],
                        opts={"eps": g.settings["norm_eps"]},
                        weights=f"shared{k}_norm_{j}",
                        role="shared",
                        layer=pos,
                    ),
                )
            tails[pos] = tail
    return g


def stream_tails(g: Graph) -> dict[int, str]:
    """For every stack position, the residual-stream node that ends it (see :func:`stream_tail`)."""
    end_op = Op.ADD if g.settings.get("pre_norm", True) else Op.NORM
    tails: dict[int, str] = {}
    for nid in g.order():
        if g[nid]["op"] in (end_op, Op.ADD_NORM) and g[nid].get("layer") is not None:
            tails[g[nid]["layer"]] = nid
    return tails


def stream_tail(g: Graph, pos: int) -> str:
    """The residual-stream node that ends stack position ``pos`` (after its companions and shared blocks)."""
    end_op = Op.ADD if g.settings.get("pre_norm", True) else Op.NORM
    tail = None
    for nid in g.order():
        if g[nid]["op"] in (end_op, Op.ADD_NORM) and g[nid].get("layer") == pos:
            tail = nid
    if tail is None:
        raise IRError(f"no layer at position {pos}: the shared pass checked its positions before this")
    return tail
