"""The ``hybdsl`` command: one module per subcommand, each with ``add_parser(subparsers)`` and ``run(args)``.

Every user mistake ends with a positioned message on stderr and exit status 2; no Python traceback unless
``--debug`` is given.

Start-up is kept short: ``hybdsl --help`` lists the commands from :data:`COMMANDS` without importing any of
their modules, and ``hybdsl CMD ...`` imports only ``hybriddsl.cli.CMD``; torch is imported by the commands
that build a model, when they run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from hybriddsl import __version__
from hybriddsl.errors import HybError, Span

# command -> the line `hybdsl --help` shows for it (its module's own parser has the details)
COMMANDS = {
    "check": "check a .hyb file (exit 2 with positioned errors)",
    "compile": "compile a .hyb file: layer table, optional .pt/.py/.json artifact",
    "render": "draw a .hyb file to .svg/.png/.pdf/.dot",
    "bench": "measure forward / forward+backward tokens per second",
    "layers": "list layer kinds, their aliases and options, and the model settings",
    "train": "train a model on a synthetic recall task (mqar, selective_copy, induction) or a text file",
    "compare": "train several .hyb architectures on one task (same seed and data) and plot accuracy",
    "convert": "convert between .hyb and Megatron-LM patterns or Hugging Face configs",
    "export": "torch.export the streaming step (and the parallel forward) to .pt2",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written, and every option's default in its help (unless the help already says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, argparse.SUPPRESS) or action.default == []:
            return text
        return super()._get_help_string(action)


class _Subparsers:
    """Hands each command module the subparsers action, with the shared formatter and the line from COMMANDS."""

    def __init__(self, action):
        self.action = action

    def add_parser(self, name: str, **kw) -> argparse.ArgumentParser:
        kw["formatter_class"] = HelpFormatter
        kw["help"] = COMMANDS.get(name, kw.get("help"))
        return self.action.add_parser(name, **kw)


def parser(command: str | None = "*") -> argparse.ArgumentParser:
    """The ``hybdsl`` parser. ``command`` names the one subcommand whose module is imported and whose full
    parser is built (``"*"``: all of them, ``None``: none, only the listing)."""
    p = argparse.ArgumentParser(
        prog="hybdsl",
        description="Compile hybrid sequence-model patterns (.hyb) to PyTorch, or draw them.",
        epilog="Example: hybdsl compile examples/jamba.hyb   (hybdsl COMMAND --help for each command)",
    )
    p.add_argument("--version", action="version", version=f"hybdsl {__version__}")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks and lint the IR after every pass")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    wrapped = _Subparsers(sub)
    for name, line in COMMANDS.items():
        if command in ("*", name):
            importlib.import_module(f"hybriddsl.cli.{name}").add_parser(wrapped)
        else:
            sub.add_parser(name, help=line)
    return p


def _command_of(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first word that is one), or None."""
    for a in argv:
        if a in COMMANDS:
            return a
        if not a.startswith("-"):
            return None
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    p = parser(_command_of(argv))
    args = p.parse_args(argv)
    if not args.command:
        p.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except HybError as e:
        print(str(_named_for_cli(e)), file=sys.stderr)
        return 2
    except MemoryError:
        print(f"error: out of memory: {_OOM_HINT}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # torch reports a failed allocation as a RuntimeError (OutOfMemoryError on CUDA)
        if type(e).__name__ != "OutOfMemoryError" and "can't allocate memory" not in str(e):
            return _internal(e, args.debug)
        print(f"error: out of memory ({str(e).splitlines()[0][:200]}): {_OOM_HINT}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:
        return _internal(e, args.debug)


_OOM_HINT = "the model or batch is too large for this machine; try a smaller hidden, fewer layers or a smaller --batch"


def _internal(e: Exception, debug: bool) -> int:
    """A bug, not a user mistake: say so plainly (exit 1)."""
    if debug:
        traceback.print_exc()
    else:
        print(
            f"internal error: {type(e).__name__}: {e}\n(run with --debug for a traceback, and please report it)",
            file=sys.stderr,
        )
    return 1


def _named_for_cli(e: HybError) -> HybError:
    """Errors about ``--set`` values name the flag, not the Python API's keyword argument."""
    sp = e.span
    prefix = "<keyword argument "
    if sp is not None and sp.file.startswith(prefix):
        e.span = Span(sp.line, sp.column, sp.length, "--set " + sp.file[len(prefix) : -1])
    return e


if __name__ == "__main__":
    sys.exit(main())
