"""``hybdsl layers [KIND]``: the layer kinds, their names and options, read from the registry.

``hybdsl layers --settings`` lists the model-wide settings (``hidden``, ``vocab``, ...); ``hybdsl layers hidden``
shows one setting.

``hybdsl layers --markdown`` prints the reference that docs/layers.md holds (a test keeps the two equal).
"""

from __future__ import annotations

import argparse

from hybriddsl import registry
from hybriddsl.errors import HybNameError, suggest
from hybriddsl.settings import MODEL_SETTINGS, model_setting


def add_parser(sub) -> None:
    p = sub.add_parser(
        "layers",
        help="list layer kinds, their aliases and options",
        description="List the layer kinds the compiler knows, from its one registry, and the model settings.",
    )
    p.add_argument("kind", nargs="?", help="show one kind (any alias) or one model setting")
    p.add_argument("--settings", action="store_true", help="list the model-wide settings (hidden, vocab, ...)")
    p.add_argument("--markdown", action="store_true", help="print the Markdown reference (docs/layers.md)")
    p.set_defaults(func=run)


def _default(o: registry.Option) -> str:
    if o.default is None:
        return "(derived)" if o.optional else "-"
    if isinstance(o.default, bool):
        return "true" if o.default else "false"
    return str(o.default)


def _type(o: registry.Option) -> str:
    if o.choices:
        return " \\| ".join(str(c) for c in o.choices)
    rng = ""
    if o.min is not None or o.max is not None:
        lo = "" if o.min is None else f"≥ {o.min:g}"
        hi = "" if o.max is None else f"≤ {o.max:g}"
        rng = " " + ", ".join(x for x in (lo, hi) if x)
    return {int: "int", float: "number", bool: "bool", str: "name"}[o.type] + rng


def markdown() -> str:
    """The layer and settings reference in Markdown."""
    out = [
        "# Layer kinds and settings",
        "",
        "Generated from the layer registry by `hybdsl layers --markdown`; do not edit by hand.",
        "",
        "## Model settings",
        "",
        "| setting | type | default | meaning |",
        "|---|---|---|---|",
    ]
    out += [f"| `{o.name}` | {_type(o)} | {_default(o)} | {o.doc} |" for o in MODEL_SETTINGS]
    out += [
        "",
        "Any layer option can also be a setting (the default for every kind that takes it, e.g. "
        "`heads = 8`), or `kind.option` (the default for one kind, e.g. `mamba.state = 32`).",
        "",
        "## Kinds",
        "",
        "| kind | names | letter | what it is |",
        "|---|---|---|---|",
    ]
    for s in registry.specs():
        if s.internal:
            continue
        names = ", ".join(f"`{n}`" for n in (s.name, *s.aliases, *s.edifice))
        out.append(f"| {s.name} | {names} | {s.letter} | {s.summary} |")
    for s in registry.specs():
        out += [
            "",
            f"### {s.name}" + (" (internal: a sub-block of another kind)" if s.internal else ""),
            "",
            s.summary,
            "",
        ]
        if s.options:
            out += ["| option | type | default | meaning |", "|---|---|---|---|"]
            out += [f"| `{o.name}` | {_type(o)} | {_default(o)} | {o.doc} |" for o in s.options]
        else:
            out.append("No options.")
    return "\n".join(out) + "\n"


def _setting_line(o: registry.Option) -> str:
    return f"{o.name:16} {_type(o).replace(chr(92), ''):28} default {_default(o):10} {o.doc}"


def run(args: argparse.Namespace) -> int:
    if args.markdown:
        print(markdown(), end="")
        return 0
    if args.settings:
        print("model settings (write `name = value` in the file, or --set name=value):")
        for o in MODEL_SETTINGS:
            print("  " + _setting_line(o))
        return 0
    setting = model_setting(args.kind) if args.kind else None
    if setting is not None:
        print("model setting:\n  " + _setting_line(setting))
        return 0
    if args.kind and registry.canonical(args.kind) is None:
        known = [*registry.user_names(), *(o.name for o in MODEL_SETTINGS)]
        raise HybNameError(f"unknown layer or setting '{args.kind}'" + suggest(args.kind, known))
    specs = [registry.get(args.kind)] if args.kind else [s for s in registry.specs() if not s.internal]
    for s in specs:
        names = ", ".join((s.name, *s.aliases, *s.edifice))
        print(f"{s.name:16} {s.summary}\n{'':16} names: {names}")
        for o in s.options:
            print(f"{'':18}{o.name:12} {_type(o).replace(chr(92), ''):28} default {_default(o):10} {o.doc}")
        print()
    return 0
