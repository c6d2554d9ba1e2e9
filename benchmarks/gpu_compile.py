"""Compile every Triton kernel, forward and backward, for real GPUs on a machine without one.

    python -m benchmarks.gpu_compile                      # the full matrix: 3 targets x bf16/fp32 x shapes
    python -m benchmarks.gpu_compile --ci                 # what CI runs (tests/gpu_compile): bf16, benchmark
                                                          # shapes, sm_90 and sm_89 (~230 CPU-s)
    python -m benchmarks.gpu_compile --md docs/benchmarks.md   # also rewrite the table in the docs

Each case calls a family's real launcher (``<family>_triton``) on CPU tensors, forward then backward, under
:mod:`benchmarks.fake_gpu`'s stand-in driver for one target (sm_90 H100, sm_80 A100, sm_89 RTX 4090/L40S with
~100 KB of shared memory): the launcher picks its block sizes from the device's properties as on the GPU, Triton
compiles the kernels down to a cubin with the wheel's ``ptxas`` and raises where the device could not launch
them. Shapes: every family at the benchmark shapes of ``benchmarks/kernel_suites`` and a whole model mixing every
recurrent kind at the default sizes (``hidden = 256``) run with ``backend("triton")``.

Output: one row per distinct binary (kernel, target, constexprs) with shared memory, registers per thread and
spill bytes, as JSON (``--json``) and Markdown (``--md`` replaces the block between the GPU-COMPILE markers).
Exit status 1 when any case fails to compile or does not fit its target.

Kernel families are found by folder (``hybriddsl/kernels/<family>/triton.py``); each needs a case builder in
``CASES`` below, and a family without one is reported as an error, so a new family cannot be skipped silently.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGETS = ("sm_90", "sm_80", "sm_89")
CI_TARGETS = ("sm_90", "sm_89")  # the smallest shared memory (sm_89) and the one wgmma target (sm_90)
DTYPES = ("bf16", "fp32")
SHAPES = ("bench", "model")
MODEL = "M M2 A GLA R D GD L"  # every kind with a Triton kernel (plus attention), default options
BEGIN, END = "<!-- GPU-COMPILE:BEGIN -->", "<!-- GPU-COMPILE:END -->"


def families() -> list[str]:
    """Kernel families with Triton kernels, by folder."""
    kdir = ROOT / "hybriddsl" / "kernels"
    return sorted(p.parent.name for p in kdir.glob("*/triton.py"))


def launcher(family: str) -> Callable:
    """The family's Triton entry point: ``<family>_triton`` (or the older ``chunk_<family>_triton``)."""
    import importlib

    mod = importlib.import_module(f"hybriddsl.kernels.{family}.triton")
    for name in (f"{family}_triton", f"chunk_{family}_triton"):
        if hasattr(mod, name):
            return getattr(mod, name)
    raise AttributeError(f"hybriddsl.kernels.{family}.triton has no {family}_triton launcher")


# ----------------------------------------------------------------------------------------------- cases
# A case builder returns [(case name, thunk)]; the thunk runs forward and backward. Inputs are torch.empty:
# nothing is computed (the launcher launches nothing), and untouched pages cost no memory at these sizes.


def _leaf(*shape, dtype):
    import torch

    return torch.empty(*shape, dtype=dtype).requires_grad_()


def _fwd_bwd(fn: Callable, inputs: list) -> Callable[[], None]:
    import torch

    def run() -> None:
        out = fn(*inputs)
        outs = [o for o in (out if isinstance(out, tuple) else (out,)) if o is not None and o.requires_grad]
        leaves = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
        torch.autograd.grad(outs, leaves, [torch.empty_like(o) for o in outs], allow_unused=True)

    return run


def _selective_scan(dt, shape):
    import torch

    b, t, dm, n = (8, 2048, 2048, 16) if shape == "bench" else (2, 256, 512, 16)
    f32 = torch.float32
    ins = [_leaf(b, t, dm, dtype=dt), _leaf(b, t, dm, dtype=dt), _leaf(dm, n, dtype=f32)]
    ins += [_leaf(b, t, n, dtype=dt), _leaf(b, t, n, dtype=dt), _leaf(dm, dtype=f32), _leaf(b, t, dm, dtype=dt)]
    ins += [_leaf(dm, dtype=f32)]
    fn = launcher("selective_scan")
    return [(f"B{b}-T{t}-D{dm}-N{n}", _fwd_bwd(lambda *a: fn(*a, True, None, True), ins))]


def _gla(dt, shape):
    b, t, h, d = (8, 2048, 16, 128) if shape == "bench" else (2, 256, 4, 64)
    fn = launcher("gla")
    out = []
    for variant in ("gk", "gs", "u"):
        ins = [_leaf(b, t, h, d, dtype=dt) for _ in range(3)]
        ins.append(_leaf(b, t, h, dtype=dt) if variant == "gs" else _leaf(b, t, h, d, dtype=dt))
        ins.append(_leaf(h, d, dtype=dt) if variant == "u" else None)
        out.append((f"B{b}-T{t}-H{h}-D{d}-{variant}", _fwd_bwd(lambda *a: fn(*a, d**-0.5, None, True, 64), ins)))
    return out


def _delta_rule(dt, shape):
    b, t, h, d = (8, 2048, 16, 128) if shape == "bench" else (2, 256, 4, 64)
    fn = launcher("delta_rule")
    out = []
    for gated in (False, True):
        ins = [_leaf(b, t, h, d, dtype=dt) for _ in range(3)] + [_leaf(b, t, h, dtype=dt)]
        ins.append(_leaf(b, t, h, dtype=dt) if gated else None)
        name = f"B{b}-T{t}-H{h}-D{d}-{'gated' if gated else 'plain'}"
        out.append((name, _fwd_bwd(lambda *a: fn(*a, d**-0.5, None, 64), ins)))
    return out


def _ssd(dt, shape):
    import torch

    # the issue-15 bar's shape: B8 T2048, 32 heads of 64, state 128, one B/C group (mamba_chunk_scan_combined's)
    b, t, h, g, n, p = (8, 2048, 32, 1, 128, 64) if shape == "bench" else (2, 256, 8, 1, 64, 64)
    fn = launcher("ssd")
    ins = [_leaf(b, t, g, n, dtype=dt), _leaf(b, t, g, n, dtype=dt), _leaf(b, t, h, p, dtype=dt)]
    ins.append(_leaf(b, t, h, dtype=torch.float32))
    return [(f"B{b}-T{t}-H{h}x{p}-G{g}-N{n}", _fwd_bwd(lambda *a: fn(*a, 1.0, None, True, 64), ins))]


def _linear_scan(dt, shape):
    b, t, d = (8, 2048, 4096) if shape == "bench" else (2, 256, 256)
    fn = launcher("linear_scan")
    return [(f"B{b}-T{t}-D{d}", _fwd_bwd(lambda a, b_: fn(a, b_, None), [_leaf(b, t, d, dtype=dt) for _ in "ab"]))]


def _add_norm(dt, shape):
    rows, d = (8 * 2048, 4096) if shape == "bench" else (2 * 256, 256)
    fn = launcher("add_norm")
    out = []
    for norm in ("rms", "layer"):
        ins = [_leaf(rows, d, dtype=dt), _leaf(rows, d, dtype=dt), _leaf(d, dtype=dt)]
        ins.append(_leaf(d, dtype=dt) if norm == "layer" else None)
        out.append((f"N{rows}-D{d}-{norm}", _fwd_bwd(lambda *a, norm=norm: fn(*a, 1e-5, norm, False), ins)))
    return out


CASES: dict[str, Callable] = {
    "selective_scan": _selective_scan,
    "gla": _gla,
    "delta_rule": _delta_rule,
    "linear_scan": _linear_scan,
    "add_norm": _add_norm,
    "ssd": _ssd,
}


def _model(dt):
    """A whole model mixing every recurrent kind at the default sizes, forward and backward on Triton."""
    import torch

    from hybriddsl.api import parse_and_build

    model = parse_and_build(MODEL, dtype=dt)
    x = torch.zeros(2, 256, model.hidden, dtype=dt)

    def run() -> None:
        from hybriddsl.kernels import backend

        with backend("triton"):
            y = model(x)
            y = y[0] if isinstance(y, tuple) else y
            torch.autograd.grad(y, [p for p in model.parameters() if p.requires_grad], torch.ones_like(y))

    return [(f"model '{MODEL}' hidden={model.hidden} B2-T256", run)]


# ----------------------------------------------------------------------------------------------- running


def _job(target: str, family: str, dtype: str, shape: str) -> dict:
    """Compile one family (or the model) for one target in this process; returns records and errors."""
    os.environ.pop("TRITON_INTERPRET", None)  # triton.jit decides at import whether to interpret
    import torch

    torch.set_num_threads(1)
    from benchmarks import fake_gpu
    from hybriddsl.kernels.dispatch import compile_only

    dt = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    records, errors = [], []
    t0 = time.perf_counter()
    try:
        cases = _model(dt) if family == "model" else CASES[family](dt, shape)
    except KeyError:
        cases = []
        errors.append(f"{family}: no compile case: add a builder to CASES in benchmarks/gpu_compile.py")
    except Exception as e:
        cases = []
        errors.append(f"{family}: building inputs failed: {type(e).__name__}: {e}")
    for name, run in cases:
        fake_gpu.LOADED.clear()
        try:
            with fake_gpu.target(target), compile_only():
                run()
        except Exception as e:
            msg = "".join(traceback.format_exception_only(type(e), e)).strip()
            errors.append(f"{target} {dtype} {family} {name}: {msg[-1500:]}")
        gpu = fake_gpu.GPUS[target]
        for c in fake_gpu.LOADED:
            records.append(
                dict(
                    family=family, case=name, dtype=dtype, target=target, kernel=c.kernel, shared=c.shared,
                    max_shared=gpu.max_shared_mem, regs=c.regs, spill_bytes=c.spill_bytes, num_warps=c.num_warps,
                    num_stages=c.num_stages, constants={k: str(v) for k, v in c.constants.items()},
                )
            )  # fmt: skip
    import resource

    cpu = sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))  # fmt: skip
    return dict(records=records, errors=errors, seconds=time.perf_counter() - t0, cpu_seconds=round(cpu, 1))


def run(targets, dtypes, shapes, only, jobs: int) -> dict:
    """Every (target, dtype, shape, family) job, ``jobs`` processes at a time; returns the merged records.

    Each job is its own ``python -m benchmarks.gpu_compile --job ...`` process (Triton must be imported without
    TRITON_INTERPRET, and a process per job keeps one target's driver out of another's)."""
    import subprocess
    import tempfile

    fams = [f for f in families() if not only or f in only]
    work = [(t, f, d, "bench") for t in targets for d in dtypes for f in fams if "bench" in shapes]
    work += [(t, "model", d, "model") for t in targets for d in dtypes if "model" in shapes]
    work.sort(key=lambda w: {"delta_rule": 0, "gla": 1, "model": 2}.get(w[1], 3))  # longest first
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = dict(records=[], errors=[], jobs=[])
    with tempfile.TemporaryDirectory() as tmp:
        pending, running = list(enumerate(work)), []
        while pending or running:
            while pending and len(running) < jobs:
                i, job = pending.pop(0)
                path = Path(tmp) / f"{i}.json"
                cmd = [sys.executable, "-m", "benchmarks.gpu_compile", "--job", ",".join(job), "--json", str(path)]
                proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                running.append((proc, job, path))
            proc, job, path = running.pop(0)
            _, err = proc.communicate()
            if path.exists():
                res = json.loads(path.read_text())
            else:
                tail = err.decode(errors="replace")[-1500:]
                res = dict(records=[], errors=[f"{' '.join(job)}: the job died (exit {proc.returncode}): {tail}"])
                res["seconds"] = 0.0
            out["records"] += res["records"]
            out["errors"] += res["errors"]
            out["jobs"].append(dict(job=job, seconds=round(res["seconds"], 1), cpu_seconds=res.get("cpu_seconds")))
            print(f"  {' '.join(job)}: {res['seconds']:.1f} s, {len(res['errors'])} errors", file=sys.stderr)
    return out


_KEY_CONSTS = ("BT", "BK", "BV", "BLOCK_T", "BLOCK_D", "BLOCK_N", "PREC", "HAS_G", "USE_U", "G_K", "IS_RMS")


def distinct(records: list[dict]) -> list[dict]:
    """One record per (target, kernel, dtype, constexprs): the same binary reached from several cases once."""
    seen, out = set(), []
    for r in records:
        key = (r["target"], r["kernel"], r["dtype"], json.dumps(r["constants"], sort_keys=True), r["shared"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def markdown(result: dict, argv: str) -> str:
    """The docs table: per target, every distinct binary with shared memory, registers and spills."""
    recs = distinct(result["records"])
    lines = [
        BEGIN,
        f"Generated by `python -m benchmarks.gpu_compile {argv}`".rstrip() + " (no GPU: Triton compiles for a stand-in",
        "device; registers and spills read from each cubin with `cuobjdump -res-usage`). `shared` is bytes per block;",
        "spills are local-memory bytes per thread. Constexprs name the block sizes the launcher chose for that target.",
        "",
        "| target | kernel | dtype | cases | constexprs | warps | stages | shared (of max) | regs | spill B |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    cases: dict[tuple, set] = {}
    for r in result["records"]:
        key = (r["target"], r["kernel"], r["dtype"], json.dumps(r["constants"], sort_keys=True), r["shared"])
        cases.setdefault(key, set()).add(f"{r['family']} {r['case']}".replace("|", "/"))
    order = {t: i for i, t in enumerate(TARGETS)}
    recs.sort(key=lambda r: (order.get(r["target"], 9), r["kernel"], r["dtype"]))
    for r in recs:
        key = (r["target"], r["kernel"], r["dtype"], json.dumps(r["constants"], sort_keys=True), r["shared"])
        consts = ", ".join(f"{k}={v}" for k, v in r["constants"].items() if k in _KEY_CONSTS)
        n = len(cases[key])
        where = sorted(cases[key])[0] + (f" (+{n - 1})" if n > 1 else "")
        lines.append(
            f"| {r['target']} | `{r['kernel']}` | {r['dtype']} | {where} | {consts} | {r['num_warps']} | "
            f"{r['num_stages']} | {r['shared']:,} ({r['max_shared']:,}) | {r['regs']} | {r['spill_bytes']} |"
        )
    if result["errors"]:
        lines += ["", "Failures:", ""] + [f"- {e.splitlines()[-1][:300]}" for e in result["errors"]]
    lines.append(END)
    return "\n".join(lines)


def write_md(path: Path, block: str) -> None:
    """Replace the marked block in ``path`` (or append it under a heading)."""
    from hybriddsl.fileio import write_text

    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text += "\n## Kernels compiled for real GPUs (registers, spills, shared memory)\n\n" + block + "\n"
    write_text(path, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ci", action="store_true", help="the CI subset: bf16 at the benchmark shapes, sm_90 and sm_89")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--dtypes", default=",".join(DTYPES))
    ap.add_argument("--shapes", default=",".join(SHAPES), help="bench (kernel_suites shapes), model (defaults)")
    ap.add_argument("--only", default="", help="comma-separated families")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", help="write every record and error to this file")
    ap.add_argument("--md", help="replace the GPU-COMPILE block of this Markdown file")
    ap.add_argument("--job", help=argparse.SUPPRESS)  # internal: TARGET,FAMILY,DTYPE,SHAPE in this process
    args = ap.parse_args(argv)
    if args.job:
        res = _job(*args.job.split(","))
        Path(args.json).write_text(json.dumps(res))
        sys.stdout.flush()
        os._exit(0)  # skip interpreter teardown: Triton's kernel finalizers would ask for a real driver
    if args.ci:
        # sm_80 left out of CI: it shares sm_89's code generation (mma.sync, no wgmma) with more shared memory, so
        # sm_89 fails wherever it would; the full matrix (no --ci) compiles it too.
        args.targets, args.dtypes, args.shapes = ",".join(CI_TARGETS), "bf16", "bench"
    split = lambda s: [x for x in s.split(",") if x]
    t0 = time.perf_counter()
    res = run(split(args.targets), split(args.dtypes), split(args.shapes), split(args.only), args.jobs)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    shown = " ".join(a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("--md"))
    for r in distinct(res["records"]):
        print(
            f"{r['target']} {r['dtype']} {r['kernel']:<28} shared {r['shared']:>7} / {r['max_shared']:<7} "
            f"regs {r['regs']:>3} spill {r['spill_bytes']:>5}  ({r['family']} {r['case']})"
        )
    for e in res["errors"]:
        print("ERROR", e, file=sys.stderr)
    cpu = sum(j["cpu_seconds"] or 0 for j in res["jobs"])
    n = len(distinct(res["records"]))
    print(f"{n} binaries, {len(res['errors'])} errors, {res['seconds']} s wall, {cpu:.0f} CPU-s", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    if args.md:
        write_md(Path(args.md), markdown(res, shown))
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
