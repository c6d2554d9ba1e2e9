"""Rendering: Graph -> graphviz diagram (.svg/.png/.pdf through the ``dot`` program, or .dot source).

The residual stream runs top to bottom. Each block shows its kind, key options and parameter count; fused
add+norm nodes say so; a weight group used more than once (``shared``, ``tie``) is drawn ONCE, beside the
stream, with a dashed edge to each place it is applied.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import graphviz

from hybriddsl import registry
from hybriddsl.errors import HybFileError, Span
from hybriddsl.fileio import atomic_path
from hybriddsl.ir import Graph, Op, format_opts
from hybriddsl.report import human

FORMATS = ("svg", "png", "pdf", "dot")
INSTALL_HINT = (
    "install Graphviz's 'dot' program: 'apt-get install graphviz' (Debian/Ubuntu), 'brew install graphviz' "
    "(macOS) or 'conda install graphviz'"
)


class DotNotFound(HybFileError):
    """The ``dot`` program is missing; the .dot source was written instead."""

    kind = "render error"


def to_dot(graph: Graph) -> graphviz.Digraph:
    """Build the graphviz Digraph of a processed graph (after the count pass, for parameter counts)."""
    s = graph.settings
    dot = graphviz.Digraph(
        "hybrid",
        graph_attr={"rankdir": "TB", "fontname": "Helvetica", "nodesep": "0.35", "ranksep": "0.25"},
        node_attr={
            "fontname": "Helvetica",
            "fontsize": "11",
            "shape": "box",
            "style": "rounded,filled",
            "fillcolor": "white",
        },
        edge_attr={"arrowsize": "0.6"},
    )
    uses: dict[str, list[str]] = {}
    for nid in graph.mixers():
        w = graph[nid]["weights"]
        uses.setdefault(w, []).append(nid)
    drawn_groups: set[str] = set()

    def inp(nid: str, d: dict) -> None:
        label = "input\n" + ("token ids [B, T]" if s["vocab"] else f"features [B, T, {s['embed_dim']}]")
        dot.node(nid, label, shape="oval", fillcolor="#eeeeee")

    def in_proj(nid: str, d: dict) -> None:
        what = (
            f"embedding {s['vocab']}→{s['hidden']}"
            if s["vocab"]
            else f"linear {s['embed_dim']}→{s['hidden']}"
            if s["embed_dim"] != s["hidden"]
            else "identity"
        )
        dot.node(nid, f"in_proj: {what}", fillcolor="#eeeeee")

    def pos_enc(nid: str, d: dict) -> None:
        dot.node(nid, f"+ {d['kind']} positions", shape="box", style="rounded", fontsize="9", height="0.2")

    def norm(nid: str, d: dict) -> None:
        name = "final " if d["op"] == Op.FINAL_NORM else ""
        dot.node(nid, f"{name}{d['kind']}", shape="box", style="rounded", fontsize="9", height="0.2")

    def add(nid: str, d: dict) -> None:
        dot.node(nid, "+", shape="circle", fontsize="10", width="0.25", fixedsize="true")

    def add_norm(nid: str, d: dict) -> None:
        dot.node(nid, f"+ → {d['kind']}  (fused)", shape="box", style="rounded,dashed", fontsize="9", height="0.2")

    def mixer(nid: str, d: dict) -> None:
        spec = registry.get(d["kind"])
        w = d["weights"]
        many = len(uses[w]) > 1
        body = _mixer_label(graph, nid, with_layer=not many)
        if not many:
            dot.node(nid, body, fillcolor=spec.color)
            return
        group = f"group_{w}"
        if w not in drawn_groups:
            drawn_groups.add(w)
            how = "shared" if d["role"] == "shared" else "tied"
            dot.node(
                group,
                f"{body}\n({how}: one set of weights, {len(uses[w])} uses)",
                fillcolor=spec.color,
                penwidth="2",
            )
        k = uses[w].index(nid) + 1
        dot.node(nid, f"{d['kind']} (use {k}/{len(uses[w])})", fillcolor=spec.color, style="rounded,dashed,filled")
        dot.edge(group, nid, style="dashed", arrowhead="none", constraint="false", color="#666666")

    def head(nid: str, d: dict) -> None:
        tied = " (tied to embedding)" if s["tie_embeddings"] else ""
        dot.node(nid, f"lm head {s['hidden']}→{s['vocab']}{tied}", fillcolor="#eeeeee")

    def out(nid: str, d: dict) -> None:
        shape = {
            "last": f"[B, {s['hidden']}] (last position)",
            "sequence": f"[B, T, {s['hidden']}]",
            "logits": f"logits [B, T, {s['vocab']}]",
        }[s["output"]]
        dot.node(nid, f"output {shape}", shape="oval", fillcolor="#eeeeee")

    graph.walk(
        {
            Op.INPUT: inp,
            Op.IN_PROJ: in_proj,
            Op.POS_ENC: pos_enc,
            Op.NORM: norm,
            Op.FINAL_NORM: norm,
            Op.ADD: add,
            Op.ADD_NORM: add_norm,
            Op.MIXER: mixer,
            Op.HEAD: head,
            Op.OUTPUT: out,
        }
    )
    for u, v, data in graph.g.edges(data=True):
        residual = data.get("port", 0) == 0 and graph[v]["op"] in (Op.ADD, Op.ADD_NORM) and graph[u]["op"] != Op.MIXER
        dot.edge(u, v, color="#999999" if residual else "black", style="solid")
    t = graph.totals
    if t:
        dot.attr(
            label=f"{t['params']:,}{' + ?' if t.get('unknown') else ''} parameters · "
            f"{t['flops_per_token']:,} FLOPs/token · "
            f"state {t['state_bytes']:,} bytes/sequence at T={s['seq_len']}",
            labelloc="b",
            fontsize="10",
        )
    return dot


def _mixer_label(graph: Graph, nid: str, with_layer: bool = True) -> str:
    d = graph[nid]
    spec = registry.get(d["kind"])
    keys = spec.key_options or tuple(d["opts"])
    opts = format_opts(d["opts"], keys)
    where = ""
    if with_layer and d.get("layer"):
        where = f"layer {d['layer']}" + (" (sub-block)" if d["role"] == "companion" else "")
    lines = [f"{d['kind']}  ·  {where}" if where else d["kind"]]
    if opts:
        lines.append(opts)
    if d.get("params") is not None:
        lines.append(f"{human(d['params'])} params")
    elif "params" in d:  # user code, never built for a drawing
        lines.append("? params")
    return "\n".join(lines)


def render_graph(graph: Graph, path: str | os.PathLike) -> Path:
    """Write ``path`` (.svg/.png/.pdf/.dot) atomically. Without ``dot``, writes .dot and raises DotNotFound."""
    out = Path(path)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise HybFileError(
            f"cannot render to '{out.suffix or out.name}': use one of .svg, .png, .pdf, .dot",
            Span.none(str(out)),
        )
    dot = to_dot(graph)
    if fmt == "dot":
        _write(out, dot.source.encode())
        return out
    if shutil.which("dot") is None:
        fallback = out.with_suffix(".dot")
        _write(fallback, dot.source.encode())
        raise DotNotFound(
            f"the 'dot' program was not found, so {out} was not drawn; wrote the diagram source to {fallback} instead",
            hint=INSTALL_HINT,
        )
    try:
        data = dot.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        fallback = out.with_suffix(".dot")
        _write(fallback, dot.source.encode())
        raise DotNotFound(f"the 'dot' program could not run; wrote {fallback} instead", hint=INSTALL_HINT) from None
    except graphviz.CalledProcessError as e:
        raise HybFileError(f"dot failed: {e.stderr.decode(errors='replace') if e.stderr else e}") from None
    _write(out, data)
    return out


def svg(graph: Graph) -> str:
    """The diagram as SVG text (for notebooks); raises DotNotFound without the dot program."""
    if shutil.which("dot") is None:
        raise DotNotFound("the 'dot' program was not found", hint=INSTALL_HINT)
    return to_dot(graph).pipe(format="svg").decode()


def _write(path: Path, data: bytes) -> None:
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as e:
        raise HybFileError(f"cannot write {path}: {e.strerror}", Span.none(str(path))) from None


__all__ = ["DotNotFound", "render_graph", "svg", "to_dot"]
