"""``hybdsl render FILE -o out.svg``: draw the model (svg, png, pdf, or dot source)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hybriddsl.cli.common import add_file, check_output_dir, overrides, source_arg


def add_parser(sub) -> None:
    p = sub.add_parser(
        "render",
        help="draw a .hyb file to .svg/.png/.pdf/.dot",
        description="Draw the compiled graph with graphviz. Without the 'dot' program, the .dot "
        "source is written instead and the command exits with status 2.",
    )
    add_file(p)
    p.add_argument("-o", "--output", help="output file (default: FILE with .svg)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hybriddsl import api

    out = Path(args.output) if args.output else Path(args.file if args.file != "-" else "model.hyb").with_suffix(".svg")
    if args.output:  # the default sits next to FILE: a missing FILE is reported as such
        check_output_dir(out)
    graph = api.compile(source_arg(args), **overrides(args))
    written = api.render(graph, out)
    print(f"wrote {written}")
    return 0
