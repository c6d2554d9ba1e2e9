"""``hybdsl export FILE -o model.pt2``: the streaming step through ``torch.export`` (state in, state out).

The step is ``(x, *state) -> (y, *new_state)`` over flat tensors; the file carries ``hybriddsl.json`` with the
state layout (see :mod:`hybriddsl.export`). ``--aot`` also puts the step compiled by AOTInductor in the same
file (load it with ``torch._inductor.aoti_load_package``, or from C++). ``--forward`` also writes the parallel
forward to ``<name>.forward.pt2``. Weights are random (``--seed``) unless ``--weights model.pt`` (from ``hybdsl compile
-o model.pt`` or ``hybriddsl.save``) supplies trained ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hybriddsl.cli.common import add_build, add_file, check_output_dir, overrides, source_arg
from hybriddsl.errors import HybFileError, HybOptionError, Span


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="torch.export the streaming step (and the parallel forward) to .pt2",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_file(p)
    add_build(p)
    p.add_argument("-o", "--output", required=True, help="the .pt2 file for the step")
    p.add_argument("--forward", action="store_true", help="also write the parallel forward to NAME.forward.pt2")
    p.add_argument(
        "--aot",
        action="store_true",
        help="also compile the step with AOTInductor into the same .pt2 (torch._inductor.aoti_load_package, "
        "or C++ AOTIModelPackageLoader)",
    )
    p.add_argument("--batch", type=int, default=1, help="streams per step call (default 1)")
    p.add_argument(
        "--seq",
        type=int,
        default=None,
        help="example length for --forward (default: 64, or seq_len when shorter; tracing time grows with it)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed for the weights (default 0)")
    p.add_argument("--weights", default=None, help="a model.pt whose weights to load (strict)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from hybriddsl import api
    from hybriddsl.export import forward_lengths, save_forward, save_step

    out = Path(args.output)
    if out.suffix != ".pt2":
        raise HybFileError(f"export writes a .pt2 file, got '{out.name}'", Span.none(str(out)))
    check_output_dir(out)
    if args.batch < 1 or (args.seq is not None and args.seq < 1):
        raise HybOptionError("--batch and --seq must be at least 1")
    torch.manual_seed(args.seed)
    model = api.parse_and_build(source_arg(args), **overrides(args)).eval()
    if args.weights:
        _load_weights(model, args.weights)
    what = "exporting and AOT-compiling (about a minute or more on 2 CPU cores)" if args.aot else "exporting"
    print(f"{what} the streaming step ...", file=sys.stderr, flush=True)
    save_step(model, out, args.batch, aot=args.aot)
    compiled = ", AOTInductor-compiled inside" if args.aot else ""
    print(f"wrote {out} (step: x, *state -> y, *new_state; batch {args.batch}{compiled})")
    if args.forward:
        fwd = out.with_name(out.stem + ".forward.pt2")
        at = args.seq or "min(seq_len, 64)"
        print(f"exporting the parallel forward at T = {at} ...", file=sys.stderr, flush=True)
        lo, hi = forward_lengths(torch.export.load(save_forward(model, fwd, args.batch, args.seq)))
        lengths = f"T = {lo}" if lo == hi else f"T from {lo}" + (f" to {hi}" if hi is not None else " up")
        print(f"wrote {fwd} (parallel forward; accepts {lengths}; --seq N for another length)")
    return 0


def _load_weights(model, path: str) -> None:
    import torch

    p = Path(path)
    if not p.is_file():
        raise HybFileError(f"no such weights file: {p}", Span.none(str(p)))
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise HybFileError(f"cannot read {p}: {e}", Span.none(str(p))) from None
    sd = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(sd, dict):
        raise HybFileError(f"{p} holds no state_dict", Span.none(str(p)))
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise HybOptionError(f"weights in {p} do not fit this model: {str(e).splitlines()[0]}") from None
