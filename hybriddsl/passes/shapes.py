"""Pass ``infer_shapes``: give every node its output shape, symbolic in batch ``B`` and time ``T``."""

from __future__ import annotations

from hybriddsl.ir import Graph, Op


def infer_shapes(graph: Graph) -> Graph:
    """Returns a new graph whose nodes carry ``shape`` (a tuple of "B", "T" and ints)."""
    g = graph.copy()
    s = g.settings
    hidden, vocab, output = s["hidden"], s["vocab"], s["output"]
    for nid in g.order():
        node = g[nid]
        op = node["op"]
        if op == Op.INPUT:
            node["shape"] = ("B", "T") if vocab else ("B", "T", s["embed_dim"])
        elif op == Op.HEAD:
            node["shape"] = ("B", "T", vocab)
        elif op == Op.OUTPUT:
            (prev,) = g.preds(nid)
            ps = g[prev]["shape"]
            node["shape"] = (ps[0], ps[2]) if output == "last" else ps
        else:
            node["shape"] = ("B", "T", hidden)
    return g
