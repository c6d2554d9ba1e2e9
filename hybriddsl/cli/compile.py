"""``hybdsl compile FILE``: run the passes, print the layer table, optionally write an artifact.

``-o model.pt`` writes weights + source (``hybriddsl.load`` rebuilds it), ``-o model.py`` readable PyTorch
source, ``-o model.json`` the IR as node-link JSON. Files are written atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from hybriddsl import registry
from hybriddsl.cli.common import add_build, add_file, check_output_dir, overrides, source_arg
from hybriddsl.errors import HybFileError, Span
from hybriddsl.fileio import write_text

if TYPE_CHECKING:
    from hybriddsl.ir import Graph

ARTIFACTS = (".pt", ".py", ".json")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "compile",
        help="compile a .hyb file: layer table, optional .pt/.py/.json artifact",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_file(p)
    add_build(p)
    p.add_argument(
        "-o", "--output", help="write model.pt (weights+source), model.py (PyTorch source) or model.json (IR)"
    )
    p.add_argument("--dump-ir", action="store_true", help="print the graph after each pass")
    p.add_argument("--seed", type=int, default=0, help="random seed for the weights written to .pt (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.output) if args.output else None
    if out is not None and out.suffix not in ARTIFACTS:
        raise HybFileError(f"cannot write '{out.suffix or out.name}': use .pt, .py or .json", Span(0, 0, 1, str(out)))
    check_output_dir(out)

    from hybriddsl import api

    def dump(name: str, g: Graph) -> None:
        print(f"== after {name} ==\n{g}\n")

    graph = api.compile(source_arg(args), debug=args.debug, dump=dump if args.dump_ir else None, **overrides(args))
    print(table(graph))
    if out is None:
        return 0
    if out.suffix == ".json":
        write_text(out, graph.to_json())
    elif out.suffix == ".py":
        from hybriddsl.codegen import generate

        write_text(out, generate(graph))
    else:
        import torch

        from hybriddsl.lower import lower

        torch.manual_seed(args.seed)
        model = lower(graph)
        api.save(model, out)
    print(f"wrote {out}")
    return 0


def _human(n: int | None) -> str:
    if n is None:  # a custom layer: counted only once built
        return "?"
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def table(graph: Graph) -> str:
    """The layer table: one row per mixer use, then totals (parameters counted once per weight group)."""
    from hybriddsl.ir import Op, format_opts

    s = graph.settings
    rows = [("#", "kind", "options", "shape", "params", "FLOPs/tok", "state")]
    for nid in graph.nodes(Op.MIXER):
        d = graph[nid]
        spec = registry.get(d["kind"])
        pos = str(d["layer"]) + {"companion": "+", "shared": "s"}.get(d["role"], "")
        params = "(shared)" if d["shared_use"] else _human(d["params"])
        rows.append(
            (
                pos,
                d["kind"],
                format_opts(d["opts"], spec.key_options or None),
                "x".join(map(str, d["shape"])),
                params,
                _human(d["flops"]),
                _human(d["state_bytes"]) + "B" if d["state_bytes"] else "-" if d["state_bytes"] == 0 else "?",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    t = graph.totals
    inp = f"tokens (vocab {s['vocab']})" if s["vocab"] else f"features [B, T, {s['embed_dim']}]"
    lines += [
        "-" * len(lines[0]),
        f"input {inp} -> hidden {s['hidden']} -> output {s['output']} ({'x'.join(map(str, _out_shape(graph)))})",
        f"parameters      {t['params']:,}"
        + (f" + ? ({t['unknown']} custom layer(s), counted when built)" if t.get("unknown") else ""),
        f"FLOPs / token   {t['flops_per_token']:,}  (forward, at seq_len {s['seq_len']})",
        f"state / seq     {t['state_bytes']:,} bytes  (recurrent states + KV caches after {s['seq_len']} tokens)",
        f"fused add+norm  {sum(1 for _ in graph.nodes(Op.ADD_NORM))}",
    ]
    return "\n".join(lines)


def _out_shape(graph: Graph) -> tuple:
    from hybriddsl.ir import Op

    (o,) = graph.nodes(Op.OUTPUT)
    return graph[o]["shape"]
