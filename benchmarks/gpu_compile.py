"""Compile every Triton kernel, forward and backward, for real GPUs on a machine without one.

    python -m benchmarks.gpu_compile                      # the full matrix: 3 targets x bf16/fp32 x shapes
    python -m benchmarks.gpu_compile --ci                 # what CI runs (tests/gpu_compile): bf16, benchmark
                                                          # shapes, sm_90 and sm_89 (~230 CPU-s)
    python -m benchmarks.gpu_compile --md docs/benchmarks.md   # also rewrite the table in the docs

Each case calls a family's real launcher (``<family>_triton``) on CPU tensors, forward then backward, under
:mod:`benchmarks.fake_gpu`'s stand-in driver for one target (sm_90 H100, sm_80 A100, sm_89 RTX 4090/L40S with
~100 KB of shared memory): the launcher picks its block sizes from the device's properties as on the GPU, Triton
compiles the kernels down to a cubin with the wheel's ``ptxas`` and raises where the device could not launch
them. Shapes: ``bench``, every family at the benchmark shapes of ``benchmarks/kernel_suites``; ``model``, every family
at the sizes of the default model's layers and then a whole model mixing every recurrent kind at the default sizes
(``hidden = 256``) run with ``backend("triton")``.

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
    # per-key decay (GLA), per-key decay with RWKV-6's bonus u, a scalar decay per head with u (without u, chunk_gla
    # sends a scalar decay to the SSD kernels, so that combination never reaches these)
    for variant in ("gk", "u", "gs-u"):
        ins = [_leaf(b, t, h, d, dtype=dt) for _ in range(3)]
        ins.append(_leaf(b, t, h, dtype=dt) if variant == "gs-u" else _leaf(b, t, h, d, dtype=dt))
        ins.append(_leaf(h, d, dtype=dt) if variant != "gk" else None)
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
    _forget_autotuning()
    records, errors = [], []
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
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
    cpu = _cpu_seconds() - cpu0
    return dict(records=records, errors=errors, seconds=time.perf_counter() - t0, cpu_seconds=round(cpu, 1))


def _forget_autotuning() -> None:
    """Empty every autotuner's chosen-config cache: it is keyed by the kernel's arguments, not by the device, so
    a worker that tuned a kernel for one target would otherwise compile only the winner for the next."""
    from triton.runtime.autotuner import Autotuner

    for name, mod in list(sys.modules.items()):
        if name.startswith("hybriddsl.kernels."):
            for obj in vars(mod).values():
                if isinstance(obj, Autotuner):
                    obj.cache.clear()


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (ptxas runs as a child)."""
    import resource

    return sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))  # fmt: skip


# Relative compile cost of a job (CPU-seconds, measured cold for sm_89 bf16), to start the longest first.
_COST = {"model": 6, "delta_rule": 5, "gla": 4, "ssd": 2, "linear_scan": 1.5, "add_norm": 1, "selective_scan": 1}


def run(targets, dtypes, shapes, only, jobs: int, progress: Path | None = None) -> dict:
    """Every (target, dtype, shape, family) job on ``jobs`` worker processes; returns the merged records.

    Workers are ``python -m benchmarks.gpu_compile --worker`` processes (Triton must be imported without
    TRITON_INTERPRET, which a pytest session sets), each taking the next job as it finishes one, longest first:
    torch and Triton are imported once per worker, not once per job, and one process compiles for several targets
    in turn (the stand-in driver gives each target its own device id, so Triton's per-device caches keep them
    apart). A worker that dies costs its current job only (reported as an error) and is replaced. With
    ``progress``, the merged result so far is rewritten after every job."""
    import queue
    import subprocess
    import tempfile
    import threading

    fams = [f for f in families() if not only or f in only]
    # each family alone at every shape asked for (the "model" shape: the family's kernels at the default model
    # sizes), then the whole default model (every layer calling its launchers as in training) unless --only
    # names families without "model"
    work = [(t, f, d, s) for s in shapes for t in targets for d in dtypes for f in fams]
    if "model" in shapes and (not only or "model" in only):
        work += [(t, "model", d, "model") for t in targets for d in dtypes]
    # fp32 dots compile to float32 FMAs (ieee), several times slower than 16-bit tensor-core code
    work.sort(key=lambda w: -_COST.get(w[1], 1) * (4 if w[2] == "fp32" else 1))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = dict(records=[], errors=[], jobs=[])
    todo: queue.Queue = queue.Queue()
    for job in work:
        todo.put(job)
    lock = threading.Lock()

    def start() -> subprocess.Popen:
        cmd = [sys.executable, "-m", "benchmarks.gpu_compile", "--worker"]
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def serve(tmp: str, n: int) -> None:
        proc = start()
        while True:
            try:
                job = todo.get_nowait()
            except queue.Empty:
                break
            path = Path(tmp) / f"{n}-{'-'.join(job)}.json"
            try:
                proc.stdin.write(f"{','.join(job)} {path}\n")
                proc.stdin.flush()
                done = proc.stdout.readline()
            except (BrokenPipeError, OSError):
                done = ""
            if done.strip() == "done" and path.exists():
                res = json.loads(path.read_text())
            else:  # the worker died (a crash in the compiler): report the job, carry on with a new worker
                proc.kill()
                proc.wait()
                res = dict(records=[], errors=[f"{' '.join(job)}: the worker died (exit {proc.returncode})"])
                res["seconds"], res["cpu_seconds"] = 0.0, None
                proc = start()
            with lock:
                out["records"] += res["records"]
                out["errors"] += res["errors"]
                out["jobs"].append(dict(job=job, seconds=round(res["seconds"], 1), cpu_seconds=res["cpu_seconds"]))
                print(f"  {' '.join(job)}: {res['seconds']:.1f} s, {res['cpu_seconds']} CPU-s, "
                      f"{len(res['errors'])} errors", file=sys.stderr, flush=True)  # fmt: skip
                if progress is not None:
                    progress.write_text(json.dumps(out, indent=1))
        proc.stdin.close()
        proc.wait()

    with tempfile.TemporaryDirectory() as tmp:
        threads = [threading.Thread(target=serve, args=(tmp, n)) for n in range(max(1, min(jobs, len(work))))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return out


def _worker() -> None:
    """Read ``TARGET,FAMILY,DTYPE,SHAPE PATH`` lines from stdin; compile each job, write its JSON, say 'done'."""
    reply, sys.stdout = sys.stdout, sys.stderr  # stdout carries the protocol only
    for line in sys.stdin:
        job, path = line.split()
        Path(path).write_text(json.dumps(_job(*job.split(","))))
        print("done", file=reply, flush=True)


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
        f"Generated by {argv} (no GPU: Triton compiles for a stand-in",
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
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="compile nothing: merge these --json results")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # internal: see run()
    args = ap.parse_args(argv)
    if args.worker:
        _worker()
        sys.stdout.flush()
        os._exit(0)  # skip interpreter teardown: Triton's kernel finalizers would ask for a real driver
    if args.ci:
        # sm_80 left out of CI: it shares sm_89's code generation (mma.sync, no wgmma) with more shared memory, so
        # sm_89 fails wherever it would; the full matrix (no --ci) compiles it too.
        args.targets, args.dtypes, args.shapes = ",".join(CI_TARGETS), "bf16", "bench"
    split = lambda s: [x for x in s.split(",") if x]
    t0 = time.perf_counter()
    if args.merge:
        res = dict(records=[], errors=[], jobs=[])
        for path in args.merge:
            part = json.loads(Path(path).read_text())
            for k in res:
                res[k] += part.get(k, [])
        done = {tuple(j["job"]) for j in res["jobs"]}
        shown = "`python -m benchmarks.gpu_compile --merge` of runs covering " + ", ".join(
            f"{t} {d} {s}" for t in TARGETS for d in DTYPES for s in SHAPES
            if any(j[0] == t and j[2] == d and j[3] == s for j in done)
        )  # fmt: skip
    else:
        progress = Path(args.json) if args.json else None
        res = run(split(args.targets), split(args.dtypes), split(args.shapes), split(args.only), args.jobs, progress)
        only = f" --only {args.only}" if args.only else ""
        shown = f"`python -m benchmarks.gpu_compile --targets {args.targets} --dtypes {args.dtypes} --shapes "
        shown += f"{args.shapes}{only}`"
    res["seconds"] = round(time.perf_counter() - t0, 1)
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
