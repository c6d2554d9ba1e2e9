"""Pass ``infer_shapes``: give every node its output shape, symbolic in batch ``B`` and time ``T``."""

from __future__ import annotations

from typing import Any

from hybriddsl.ir import Graph, Op


def infer_shapes(graph: Graph) -> Graph:
    """Returns a new graph whose nodes carry ``shape`` (a tuple of "B", "T" and ints)."""
    g = graph.copy()
    s = g.settings
    hidden, vocab, output = s["hidden"], s["vocab"], s["output"]
    stream = ("B", "T", hidden)

    def inp(nid: str, node: dict[str, Any]) -> None:
        node["shape"] = ("B", "T") if vocab else ("B", "T", s["embed_dim"])

    def on_stream(nid: str, node: dict[str, Any]) -> None:
        node["shape"] = stream

    def head(nid: str, node: dict[str, Any]) -> None:
        node["shape"] = ("B", "T", vocab)

    def out(nid: str, node: dict[str, Any]) -> None:
        (prev,) = g.preds(nid)
        ps = g[prev]["shape"]
        node["shape"] = (ps[0], ps[2]) if output == "last" else ps

    g.walk(
        {
            Op.INPUT: inp,
            Op.IN_PROJ: on_stream,
            Op.POS_ENC: on_stream,
            Op.NORM: on_stream,
            Op.FINAL_NORM: on_stream,
            Op.MIXER: on_stream,
            Op.ADD: on_stream,
            Op.ADD_NORM: on_stream,
            Op.HEAD: head,
            Op.OUTPUT: out,
        }
    )
    return g
