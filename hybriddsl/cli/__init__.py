"""The ``hybdsl`` command: one module per subcommand, each with ``add_parser(subparsers)`` and ``run(args)``.

Every user mistake ends with a positioned message on stderr and exit status 2; no Python traceback unless
``--debug`` is given.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from hybriddsl.errors import HybError

COMMANDS = ("check", "compile", "render", "bench", "layers", "train", "compare", "convert", "export")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hybdsl",
        description="Compile hybrid sequence-model patterns (.hyb) to PyTorch, or draw them.",
        epilog="Example: hybdsl compile examples/jamba.hyb -o jamba.pt",
    )
    p.add_argument("--debug", action="store_true", help="show Python tracebacks and lint the IR after every pass")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"hybriddsl.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"hybriddsl.cli.{name}":
                continue
            raise
        mod.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    p = parser()
    args = p.parse_args(argv)
    if not args.command:
        p.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except HybError as e:
        print(str(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug, not a user mistake: say so plainly
        if args.debug:
            traceback.print_exc()
        else:
            print(
                f"internal error: {type(e).__name__}: {e}\n(run with --debug for a traceback, and please report it)",
                file=sys.stderr,
            )
        return 1


if __name__ == "__main__":
    sys.exit(main())
