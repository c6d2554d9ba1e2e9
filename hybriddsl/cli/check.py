"""``hybdsl check FILE``: report errors only (exit 0 when the file is good, 2 with positioned errors).

``check`` runs every pass except ``count``: counting parameters builds each layer on torch's meta device, and
importing torch alone takes seconds, while parsing and checking take a fraction of one. Everything a user can
get wrong in the text (syntax, names, option types and ranges, cross-option checks, shapes, sharing, ties) is
caught before ``count``; ``hybdsl compile`` prints the counts. A ``custom`` layer's factory is not imported.
"""

from __future__ import annotations

import argparse

from hybriddsl.cli.common import add_file, overrides, source_arg


def add_parser(sub) -> None:
    p = sub.add_parser(
        "check",
        help="check a .hyb file (exit 2 with positioned errors)",
        description="Parse and check a .hyb file without building any weights (and without importing torch). "
        "Parameter counts: hybdsl compile.",
    )
    add_file(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hybriddsl import api
    from hybriddsl.passes import PIPELINE, count

    passes = [p for p in PIPELINE if p is not count]
    g = api.compile(source_arg(args), debug=True, passes=passes, **overrides(args))
    n = sum(1 for m in g.mixers() if g[m]["role"] == "main")
    print(f"{args.file}: ok ({n} layer{'' if n == 1 else 's'})")
    return 0
