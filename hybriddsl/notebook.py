"""Jupyter/IPython display of graphs and models.

``Graph._repr_svg_`` / ``HybridModel._repr_svg_`` delegate here and return the diagram of
:func:`hybriddsl.rendering.svg`, or None when Graphviz's ``dot`` is missing (Jupyter then shows the text form).
``_repr_pretty_`` (IPython's text form) prints the layer table of ``hybdsl compile``.
"""

from __future__ import annotations

from typing import Any

from hybriddsl.ir import Graph


def graph_of(obj: Any) -> Graph | None:
    """The processed Graph of a Graph or a HybridModel (``lower`` sets ``model.graph``), else None."""
    if isinstance(obj, Graph):
        return obj
    g = getattr(obj, "graph", None)
    return g if isinstance(g, Graph) else None


def svg(obj: Graph | Any) -> str | None:
    """The SVG diagram text, or None without ``dot`` (or for a graph the passes have not finished)."""
    from hybriddsl.rendering import DotNotFound
    from hybriddsl.rendering import svg as render_svg

    g = graph_of(obj)
    if g is None or not g.totals:
        return None
    try:
        return render_svg(g)
    except DotNotFound:
        return None


def text(obj: Graph | Any) -> str:
    """The layer table (``hybdsl compile``'s), headed by the model's name for a module."""
    from hybriddsl.report import layer_table

    g = graph_of(obj)
    if g is None or not g.totals:  # a graph between passes has no counts yet: show the IR dump
        return str(obj if isinstance(obj, Graph) else g) if g is not None else repr(obj)
    head = "Graph" if isinstance(obj, Graph) else type(obj).__name__
    return f"{head} ({g.file})\n{layer_table(g)}"


def pretty(obj: Any, p: Any, cycle: bool) -> None:
    """IPython ``_repr_pretty_`` body."""
    p.text("..." if cycle else text(obj))
