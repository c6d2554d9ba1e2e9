"""Argument helpers shared by subcommands: the FILE argument, ``--set key=value`` overrides."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hybriddsl.errors import HybFileError, HybOptionError, Span


def add_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help=".hyb file to read ('-' for standard input)")
    p.add_argument(
        "-s",
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set hidden=512 --set mamba.state=32 (repeatable)",
    )
    p.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=N",
        help="raise a safety limit, e.g. --limit max_mixers=50000 (see docs/security.md; repeatable)",
    )


def add_build(p: argparse.ArgumentParser) -> None:
    """Options of commands that build weights: the custom-code opt-in and the parameter budget."""
    p.add_argument(
        "--trust-custom",
        action="store_true",
        help='allow custom(fn="module:factory") layers named in the file to import and run that code',
    )
    p.add_argument("--max-params", type=int, default=None, metavar="N", help="refuse models with more parameters")


def source_arg(args: argparse.Namespace):
    """The FILE argument as something api.compile accepts: a Path, or standard input as source text (never a
    path, whatever it says)."""
    from hybriddsl.fileio import SourceText

    if args.file == "-":
        import sys

        return SourceText(sys.stdin.read(), "<stdin>")
    return Path(args.file)  # read_source reports a missing file


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for the API calls: ``--set`` values parsed like .hyb values (numbers, true/false/none,
    names), plus ``limits`` from ``--limit``/``--max-params`` and ``trust_custom`` from ``--trust-custom``."""
    from hybriddsl import limits

    out: dict[str, Any] = {}
    changes: dict[str, Any] = {}
    for item in getattr(args, "limit", []) or []:
        key, eq, raw = item.partition("=")
        value = parse_value(raw.strip())
        if not eq or not isinstance(value, int):
            raise HybOptionError(f"--limit takes NAME=N, got '{item}'", Span(0, 0, 1, "<command line>"))
        changes[key.strip()] = value
    if getattr(args, "max_params", None) is not None:
        changes["max_params"] = args.max_params
    if changes:
        out["limits"] = limits.DEFAULT.replace(**changes)
    if getattr(args, "trust_custom", False):
        out["trust_custom"] = True
    for item in args.set:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise HybOptionError(f"--set takes KEY=VALUE, got '{item}'", Span.none("<command line>"))
        out[key.strip()] = parse_value(raw.strip())
    return out


def parse_value(raw: str) -> Any:
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw.strip("\"'")


def require(module: str, what: str, install: str) -> None:
    """Raise HybOptionError now, before any work, when ``module`` (needed by ``what``) is not installed."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise HybOptionError(
            f"{what} needs the '{module}' package, which is not installed: {install}",
            Span(0, 0, 1, "<command line>"),
        )


def check_output_dir(path: str | Path | None) -> None:
    """HybFileError now, before any work, when the folder of an output file does not exist."""
    if path is None:
        return
    parent = Path(path).parent
    if not parent.is_dir():
        raise HybFileError(f"cannot write {path}: folder {parent} does not exist", Span(0, 0, 1, str(path)))
