"""``hybdsl check FILE``: report errors only (exit 0 when the file is good, 2 with positioned errors)."""

from __future__ import annotations

import argparse

from hybriddsl import api
from hybriddsl.cli.common import add_file, overrides, source_arg


def add_parser(sub) -> None:
    p = sub.add_parser(
        "check",
        help="check a .hyb file (exit 2 with positioned errors)",
        description="Parse and check a .hyb file without building any weights.",
    )
    add_file(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    g = api.compile(source_arg(args), debug=True, **overrides(args))
    n = sum(1 for m in g.mixers() if g[m]["role"] == "main")
    unknown = f" + {g.totals['unknown']} custom layer(s)" if g.totals.get("unknown") else ""
    print(f"{args.file}: ok ({n} layers, {g.totals['params']:,} parameters{unknown})")
    return 0
