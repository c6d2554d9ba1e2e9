"""``hybdsl compile FILE``: run the passes, print the layer table, optionally write an artifact.

``-o model.pt`` writes weights + source (``hybriddsl.load`` rebuilds it), ``-o model.py`` readable PyTorch
source, ``-o model.json`` the IR as node-link JSON. Files are written atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from hybriddsl.cli.common import add_build, add_file, check_output_dir, overrides, source_arg
from hybriddsl.errors import HybFileError, Span
from hybriddsl.fileio import write_text
from hybriddsl.report import layer_table as table  # the table lives in the core; this name is kept

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
        raise HybFileError(f"cannot write '{out.suffix or out.name}': use .pt, .py or .json", Span.none(str(out)))
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
