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


def source_arg(args: argparse.Namespace) -> str:
    """The FILE argument as something api.compile accepts (stdin is read as source text)."""
    if args.file == "-":
        import sys

        return sys.stdin.read()
    if not args.file.endswith(".hyb"):
        return Path(args.file)  # a path all the same; read_source reports a missing file
    return args.file


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--set`` values parsed like .hyb values: numbers, true/false/none, or names."""
    out: dict[str, Any] = {}
    for item in args.set:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise HybOptionError(f"--set takes KEY=VALUE, got '{item}'", Span(0, 0, 1, "<command line>"))
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
