"""Human-readable reports of a processed graph: number formatting and the layer table.

One place for both, so that ``hybdsl compile``'s table, the notebook's text form and the rendered diagram
print the same numbers the same way (``1.69M`` parameters, ``71.7KB`` of state).
"""

from __future__ import annotations

from hybriddsl import registry
from hybriddsl.ir import Graph, Op, format_opts


def human(n: int | float | None) -> str:
    """A count in three significant digits: ``1.5B``, ``3.54M``, ``71.7K``, ``512``; ``?`` when unknown."""
    if n is None:  # a custom layer: counted only once built
        return "?"
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


def human_bytes(n: int | float | None) -> str:
    """A size in bytes in three significant digits: ``4.19MB``, ``71.7KB``, ``1.5GB``; ``?`` when unknown."""
    if n is None:
        return "?"
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n}B"


def layer_table(graph: Graph) -> str:
    """The layer table: one row per mixer use, then totals (parameters counted once per weight group).

    ``graph`` must have been through the ``count`` pass (``graph.totals`` filled)."""
    s = graph.settings
    rows = [("#", "kind", "options", "shape", "params", "FLOPs/tok", "state")]
    for nid in graph.nodes(Op.MIXER):
        d = graph[nid]
        spec = registry.get(d["kind"])
        pos = str(d["layer"]) + {"companion": "+", "shared": "s"}.get(d["role"], "")
        rows.append(
            (
                pos,
                d["kind"],
                format_opts(d["opts"], spec.key_options or None),
                "x".join(map(str, d["shape"])),
                "(shared)" if d["shared_use"] else human(d["params"]),
                human(d["flops"]),
                "-" if d["state_bytes"] == 0 else human_bytes(d["state_bytes"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    t = graph.totals
    inp = f"tokens (vocab {s['vocab']})" if s["vocab"] else f"features [B, T, {s['embed_dim']}]"
    (out,) = graph.nodes(Op.OUTPUT)
    lines += [
        "-" * len(lines[0]),
        f"input {inp} -> hidden {s['hidden']} -> output {s['output']} ({'x'.join(map(str, graph[out]['shape']))})",
        f"parameters      {t['params']:,}"
        + (f" + ? ({t['unknown']} custom layer(s), counted when built)" if t.get("unknown") else ""),
        f"FLOPs / token   {t['flops_per_token']:,}  (forward, at seq_len {s['seq_len']})",
        f"state / seq     {t['state_bytes']:,} bytes  (recurrent states + KV caches after {s['seq_len']} tokens)",
        f"fused add+norm  {sum(1 for _ in graph.nodes(Op.ADD_NORM))}",
    ]
    return "\n".join(lines)
