"""Pass ``fuse_add_norm``: an ``add`` whose only consumer is a norm becomes one ``add_norm`` node.

Rewrite rule (pre-norm):   add(r, y) -> norm         =>   add_norm(r, y)      [returns norm(r+y) and r+y]
              (post-norm): add(r, y) -> norm         =>   add_norm(r, y)      [the stream continues normed]
              (last block): add(r, y) -> final_norm  =>   add_norm(r, y)

In a pre-norm model the add also feeds the next block's residual input, so "only consumer" means: the norm is
the only *norm* reading it; the residual edge moves to the fused node, which outputs both tensors. Lowering runs
the fused Triton kernel (one read of r and y, one write of each output) in place of two memory-bound ops.
"""

from __future__ import annotations

from hybriddsl.ir import Graph, Op


def fuse_add_norm(graph: Graph) -> Graph:
    """Returns a new graph with every add -> norm pair fused."""
    g = graph.copy()
    for nid in list(g.nodes(Op.ADD)):
        if g[nid]["role"] == "side":  # stream + a side block's output feeds the norm only: r must not change
            continue
        norms = [v for v in g.succs(nid) if g[v]["op"] in (Op.NORM, Op.FINAL_NORM)]
        if len(norms) != 1:
            continue
        (n,) = norms
        add = g[nid]
        # The fused node takes the norm's identity (kind, weights) and the add's inputs.
        g[nid].update(
            op=Op.ADD_NORM,
            kind=g[n]["kind"],
            opts=dict(g[n]["opts"]),
            weights=g[n]["weights"],
            fused=True,
            final=g[n]["op"] == Op.FINAL_NORM,
            post=not g.settings.get("pre_norm", True),
            norm_role=g[n]["role"],
            role=add["role"],
        )
        g.replace_uses(n, nid)  # consumers of the norm now read the fused node (its normed output)
        g.erase(n)  # with its input edge from the add
    return g
