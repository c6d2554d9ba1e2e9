"""Pass ``insert_shared``: ``shared attn@2,4,6`` -> ONE block (one weight group) applied after stack layers 2, 4, 6.

This is Zamba's shared attention and the seed's ``shared_layers: %{attention: [2, 4, 6]}``. The norm in front of
the shared block is shared too, so the block is one set of weights wherever it is applied.

A *side* kind (``zamba_shared``, Zamba2's block) is not a residual block: at each position ``p`` its mixer reads
the stream and the embedding output (an ``embed``-port edge from ``in_proj``), and an ``add`` of role ``side``
(stream + its output) feeds the next norm on the stream, while the next block's residual still reads the stream
itself::

    tail -> Z(tail, x0) -> add_side(tail, Z) -> next norm -> next mixer -> add(tail, .)

Each use gets ``use`` (its index in stream order: its own adapters and linear) and the module ``uses``.
"""

from __future__ import annotations

from hybriddsl import registry
from hybriddsl.errors import HybOptionError, IRError
from hybriddsl.ir import BRANCH, EMBED, RESIDUAL, Graph, Op


def insert_shared(graph: Graph) -> Graph:
    """Insert every ``shared`` statement's block (resolved by ``resolve``) after its positions; returns a new
    graph."""
    g = graph.copy()
    _side_only_in_shared(g)
    n_layers = max((g[n]["layer"] or 0) for n in g.mixers())
    for k, st in enumerate(g.statements.shared):
        if len(st.resolved) < len(st.layers):
            raise IRError("insert_shared runs after resolve: the shared statement's layers are not resolved")
        seen = set()
        tails = stream_tails(g)  # one walk per statement, not one per position
        if any(registry.get(layer.kind).side for layer in st.resolved):
            _insert_side(g, k, st, [(layer.kind, layer.opts, layer.span) for layer in st.resolved], tails, n_layers)
            continue
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


def _side_only_in_shared(g: Graph) -> None:
    """A side kind outside a ``shared`` statement (in the stack, a macro or a parallel branch) is an error."""
    for n in g.mixers():
        d = g[n]
        kinds = [(d["kind"], d.get("span"))]
        for branch in d["opts"].get("branches") or [] if d["kind"] == "parallel" else []:
            kinds += [(b.get("kind"), d.get("span")) for b in branch if isinstance(b, dict)]
        for kind, span in kinds:
            spec = registry.get(kind) if kind and registry.canonical(kind) else None
            if spec is not None and spec.side:
                raise HybOptionError(
                    f"'{kind}' is a side block: use it alone in a shared statement (shared Z(...)@3,6), "
                    "not in the stack or a parallel block",
                    span,
                )


def _insert_side(g: Graph, k: int, st, resolved, tails: dict[int, str], n_layers: int) -> None:
    """Insert the side block of ``shared`` statement ``k`` at its positions (see the module docstring)."""
    if len(resolved) != 1:
        raise HybOptionError(f"'{resolved[0][0]}' stands alone in its shared statement", st.span)
    if not g.settings.get("pre_norm", True):
        raise HybOptionError(f"'{resolved[0][0]}' feeds the next norm's input: it needs pre_norm = true", st.span)
    kind, opts, espan = resolved[0]
    embed = next(iter(g.nodes(Op.IN_PROJ)), None)
    if embed is None:
        raise HybOptionError(f"'{kind}' reads the embedding output: the model needs an input projection", st.span)
    positions = sorted(pos for pos, _ in st.positions)
    for pos, span in st.positions:
        if not 1 <= pos <= n_layers:
            raise HybOptionError(
                f"shared block position {pos} is outside the stack (it has {n_layers} layers: 1..{n_layers})", span
            )
        if positions.count(pos) > 1:
            raise HybOptionError(f"position {pos} is listed twice", span)
        tail = tails[pos]
        norms = [v for v in g.succs(tail) if g[v]["op"] in (Op.NORM, Op.FINAL_NORM)]
        if len(norms) != 1:
            raise HybOptionError(
                f"position {pos}: '{kind}' needs one norm after it on the stream (one per position)", span
            )
        z = g.add(
            Op.MIXER,
            kind=kind,
            opts={**opts, "uses": len(positions)},
            weights=f"shared{k}_{kind}_0",
            role="shared",
            layer=pos,
            span=espan,
            use=positions.index(pos),
        )
        g.connect(tail, z)
        g.connect(embed, z, EMBED)
        a = g.add(Op.ADD, role="side", layer=pos, span=espan)
        g.connect(tail, a, RESIDUAL)
        g.connect(z, a, BRANCH)
        g.replace_uses(tail, a, users=norms)
