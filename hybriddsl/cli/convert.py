"""``hybdsl convert``: between .hyb and Megatron-LM patterns or Hugging Face configs.

    hybdsl convert --from megatron "M-M*-"              Megatron letters -> .hyb (M = mamba2; --mamba mamba)
    hybdsl convert config.json --from hf                HF config (family from model_type) -> .hyb
    hybdsl convert model.hyb --to megatron              .hyb -> Megatron letters
    hybdsl convert model.hyb --to hf-jamba -o c.json    .hyb -> HF config JSON
    hybdsl convert config.json --from hf --to megatron  both: through .hyb

Families: hf-jamba, hf-zamba2, hf-nemotron-h, hf-qwen3-next, hf-recurrentgemma, hf-falcon-h1. With --from,
``--set KEY=VALUE`` is written into the .hyb as a setting; with --to it overrides the file's settings.
Output goes to stdout, or atomically to ``-o FILE``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from hybriddsl.cli.common import overrides
from hybriddsl.errors import HybFileError, Span
from hybriddsl.fileio import SourceText, read_source, write_text
from hybriddsl.interop import from_hf, from_megatron, to_hf, to_megatron
from hybriddsl.interop.common import ConvertError, value
from hybriddsl.interop.hf import DISPLAY

TARGETS = ("hyb", "megatron", *DISPLAY.values())


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert between .hyb and Megatron-LM patterns or Hugging Face configs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", help="a .hyb file, a Megatron pattern (with --from megatron), a config.json, or '-'")
    p.add_argument(
        "--from",
        dest="src_format",
        choices=("hyb", "megatron", "hf"),
        default="hyb",
        help="what SOURCE is (default: hyb)",
    )
    p.add_argument(
        "--to",
        dest="dst_format",
        default="hyb",
        metavar="FORMAT",
        help=f"what to write: {', '.join(TARGETS)} (default: hyb)",
    )
    p.add_argument(
        "--mamba",
        choices=("mamba", "mamba2"),
        default="mamba2",
        help="the kind a Megatron 'M' becomes (default mamba2: Megatron's Mamba layer is Mamba-2)",
    )
    p.add_argument(
        "-s",
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting: written into the .hyb (--from) or overriding it (--to); repeatable",
    )
    p.add_argument("-o", "--output", help="write here (atomically) instead of standard output")
    p.set_defaults(func=run)


def _read(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    return read_source(Path(source))


def run(args: argparse.Namespace) -> int:
    dst = args.dst_format.lower()
    if dst not in TARGETS and not dst.startswith("hf-"):
        raise ConvertError(f"--to {args.dst_format}: choose one of {', '.join(TARGETS)}")
    if args.src_format == "hyb" and dst == "hyb":
        raise ConvertError("nothing to convert: give --from megatron|hf or --to megatron|hf-FAMILY")
    settings = overrides(args)
    # 1. SOURCE -> .hyb text
    if args.src_format == "megatron":
        path = Path(args.source)
        pattern = _read(args.source).strip() if args.source == "-" or path.is_file() else args.source
        text = from_megatron(pattern, mamba=args.mamba, **settings)
        settings = {}  # already written into the text
    elif args.src_format == "hf":
        raw = _read(args.source)
        try:
            config = json.loads(raw)
        except json.JSONDecodeError as e:
            raise HybFileError(f"{args.source} is not JSON: {e.msg}", Span(e.lineno, e.colno, 1, args.source)) from None
        text = from_hf(config)
        for k, v in settings.items():  # --set replaces the converted line (a setting may be written once)
            line = f"{k} = {value(v)}"
            text, n = re.subn(rf"(?m)^{re.escape(k)} = .*$", lambda _m, line=line: line, text)
            text += "" if n else line + "\n"
        settings = {}
    else:
        # standard input is text whatever it says; a path keeps its name in errors
        text = SourceText(sys.stdin.read(), "<stdin>") if args.source == "-" else Path(args.source)
    # 2. .hyb text -> the target
    if dst == "hyb":
        out = str(text)
    elif dst == "megatron":
        out = to_megatron(text, **settings) + "\n"
    else:
        out = json.dumps(to_hf(text, dst, **settings), indent=2) + "\n"
    if args.output:
        write_text(args.output, out)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(out)
    return 0
