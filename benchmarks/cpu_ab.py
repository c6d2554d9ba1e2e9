"""One layer kind from two source trees (an old commit's checkout and this one) in ONE process, on the CPU.

    git worktree add --detach /tmp/old 19dd6d5
    python benchmarks/cpu_ab.py --old /tmp/old --only delta_net,gated_delta_net --hidden 256 --shapes 2x256,1x2048

Both trees' ``hybriddsl`` packages are imported one after the other under the same name (the first one's modules
are taken out of ``sys.modules`` before the second is imported; each keeps its own module globals), each builds
the layer, the old one gets the new one's weights, and the two are timed round by round, interleaved with a
``torch.matmul`` [B·T, h] @ [h, 2h] sample: on a shared machine a ratio taken this way holds far better than two
separate runs. Forward under ``torch.no_grad()``; forward + backward differentiates the output sum with respect to
the input and every parameter. Prints old / new medians, ``ratio = old / new`` (above 1: new faster), the share of
the matmul sample's GFLOP/s (registry FLOPs, x3 for forward + backward; medians, and in brackets the new side's
fastest round over the fastest matmul round) and the largest output difference.

Lazy imports that a layer makes at call time resolve to whichever tree was imported last (the new one): the delta
rule layers' kernel lookup is pinned per tree below; other kinds may need the same.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from pathlib import Path

import torch

NEW = str(Path(__file__).resolve().parent.parent)
OPTS = {"gla": {"heads": 4}, "rwkv": {"cmix": False}, "delta_net": {"heads": 4}, "gated_delta_net": {"heads": 4}}


def load(root: str, kinds: list[str]):
    """The registry of the tree at ``root`` with the classes of ``kinds`` resolved (imported) now."""
    for name in [m for m in sys.modules if m == "hybriddsl" or m.startswith("hybriddsl.")]:
        del sys.modules[name]
    sys.path.insert(0, root)
    try:
        reg = importlib.import_module("hybriddsl.registry")
        for kind in kinds:
            reg.get(kind).factory.resolve()
        if {"delta_net", "gated_delta_net"} & set(kinds):
            common = importlib.import_module("hybriddsl.layers.delta_common")
            kern = importlib.import_module("hybriddsl.kernels.delta_rule")
            common._kernels = lambda k=kern: (k.chunk_delta_rule, k.delta_rule_step)
    finally:
        sys.path.remove(root)
    return reg


def case(reg_old, reg_new, kind: str, h: int, B: int, T: int, reps: int) -> str:
    opts = OPTS.get(kind, {})
    torch.manual_seed(0)
    new = reg_new.get(kind).factory(h, **opts)
    old = reg_old.get(kind).factory(h, **opts)
    old.load_state_dict(new.state_dict())
    x = torch.randn(B, T, h)
    with torch.no_grad():
        err = (old(x) - new(x)).abs().max().item()

    def calls(m):
        ps = list(m.parameters())

        def fwd():
            with torch.no_grad():
                m(x)

        def fb():
            xg = x.detach().requires_grad_(True)
            torch.autograd.grad(m(xg).sum(), [xg, *ps])

        return fwd, fb

    a, b = torch.randn(B * T, h), torch.randn(h, 2 * h)
    (of, ob), (nf, nb) = calls(old), calls(new)
    fs = {"of": of, "nf": nf, "ob": ob, "nb": nb, "mm": lambda: torch.matmul(a, b)}
    for f in fs.values():
        f()
    ts: dict[str, list[float]] = {k: [] for k in fs}
    for _ in range(reps):
        for k, f in fs.items():
            t0 = time.perf_counter()
            f()
            ts[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in ts.items()}
    best = {k: min(v) for k, v in ts.items()}
    spec = reg_new.get(kind)
    flops = spec.flops({**spec.defaults(), **opts}, h, sum(p.numel() for p in new.parameters()), T) * B * T
    mm_med, mm_best = (2 * B * T * h * 2 * h / t / 1e9 for t in (med["mm"], best["mm"]))

    def share(t: float, mult: int, mm: float) -> str:
        return f"{mult * flops / t / 1e9 / mm:.0%}"

    def ms(k: str) -> str:
        return f"{med[k] * 1e3:.1f}"

    return (
        f"| {kind} | B{B}-T{T}-h{h} | {ms('of')} / {ms('nf')} | **{med['of'] / med['nf']:.2f}x** | "
        f"{ms('ob')} / {ms('nb')} | **{med['ob'] / med['nb']:.2f}x** | {mm_med:.0f} / {mm_best:.0f} | "
        f"{share(med['of'], 1, mm_med)} -> {share(med['nf'], 1, mm_med)} ({share(best['nf'], 1, mm_best)}) | "
        f"{share(med['ob'], 3, mm_med)} -> {share(med['nb'], 3, mm_med)} ({share(best['nb'], 3, mm_best)}) | "
        f"{err:.1e} | {os.getloadavg()[0]:.1f} |"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--old", required=True, help="root of the old tree (a git worktree of the old commit)")
    p.add_argument("--only", default="delta_net,gated_delta_net", help="comma-separated kinds")
    p.add_argument("--hidden", default="256")
    p.add_argument("--shapes", default="2x256,1x2048", help="BATCHxSEQ,...")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    kinds = a.only.split(",")
    reg_old, reg_new = load(str(Path(a.old).resolve()), kinds), load(NEW, kinds)
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} | {a.threads} thread(s) | load {os.getloadavg()[0]:.1f}"
    )
    print(
        "| layer | shape | fwd ms old / new | fwd ratio | fwd+bwd ms old / new | fwd+bwd ratio "
        "| matmul GF/s median / best | fwd share | fwd+bwd share | max diff | load |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|",
        flush=True,
    )
    for kind in kinds:
        for h in (int(s) for s in a.hidden.split(",")):
            for B, T in (tuple(int(n) for n in s.split("x")) for s in a.shapes.split(",")):
                print(case(reg_old, reg_new, kind, h, B, T, a.reps), flush=True)


if __name__ == "__main__":
    main()
