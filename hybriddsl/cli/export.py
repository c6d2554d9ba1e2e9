"""``hybdsl export FILE -o model.pt2``: the streaming step through ``torch.export`` (state in, state out).

The step is ``(x, *state) -> (y, *new_state)`` over flat tensors; the file carries ``hybriddsl.json`` with the
state layout (see :mod:`hybriddsl.export`). ``--aot`` also puts the step compiled by AOTInductor in the same
file (load it with ``torch._inductor.aoti_load_package``, or from C++). ``--forward`` also writes the parallel
forward to ``<name>.forward.pt2``. Weights are random (``--seed``) unless ``--weights model.pt`` (from ``hybdsl compile
-o model.pt`` or ``hybriddsl.save``) supplies trained ones.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hybriddsl import api
from hybriddsl.cli.common import add_build, add_file, overrides, source_arg
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
    p.add_argument("--seq", type=int, default=None, help="example length for --forward (default seq_len)")
    p.add_argument("--seed", type=int, default=0, help="random seed for the weights (default 0)")
    p.add_argument("--weights", default=None, help="a model.pt whose weights to load (strict)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from hybriddsl.export import save_forward, save_step

    out = Path(args.output)
    if out.suffix != ".pt2":
        raise HybFileError(f"export writes a .pt2 file, got '{out.name}'", Span(0, 0, 1, str(out)))
    if args.batch < 1 or (args.seq is not None and args.seq < 1):
        raise HybOptionError("--batch and --seq must be at least 1")
    torch.manual_seed(args.seed)
    model = api.parse_and_build(source_arg(args), **overrides(args)).eval()
    if args.weights:
        _load_weights(model, args.weights)
    save_step(model, out, args.batch, aot=args.aot)
    compiled = ", AOTInductor-compiled inside" if args.aot else ""
    print(f"wrote {out} (step: x, *state -> y, *new_state; batch {args.batch}{compiled})")
    if args.forward:
        fwd = out.with_name(out.stem + ".forward.pt2")
        save_forward(model, fwd, args.batch, args.seq)
        print(f"wrote {fwd} (parallel forward)")
    return 0


def _load_weights(model, path: str) -> None:
    import torch

    p = Path(path)
    if not p.is_file():
        raise HybFileError(f"no such weights file: {p}", Span(0, 0, 1, str(p)))
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise HybFileError(f"cannot read {p}: {e}", Span(0, 0, 1, str(p))) from None
    sd = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(sd, dict):
        raise HybFileError(f"{p} holds no state_dict", Span(0, 0, 1, str(p)))
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise HybOptionError(f"weights in {p} do not fit this model: {str(e).splitlines()[0]}") from None
