"""Every Triton kernel, forward and backward, compiled for real GPUs (sm_90 and sm_89 here; sm_80 too in the
full matrix, ``python -m benchmarks.gpu_compile``) without one.

The compile runs in its own process (``python -m benchmarks.gpu_compile --ci``): Triton must be imported without
``TRITON_INTERPRET``, which this test session sets. It fails on any compile error, and on a kernel whose shared
memory or threads the target could not launch (Triton's own ``OutOfResources`` check, with the target's limits).
Deselect with ``-m "not gpu_compile"``. Cost on a fresh Triton cache: ~230 CPU-seconds over two processes (measured
2026-12-02: delta rule 36 + 86, GLA 34 + 30, linear scan 10 + 11, add_norm 5 + 5, selective scan 5 + 5 CPU-s for
sm_90 + sm_89), i.e. about 2 minutes on the 2-core CI machine; a warm cache (~/.triton/cache) makes it seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import fake_gpu, gpu_compile

ROOT = Path(__file__).resolve().parents[2]


def test_every_family_has_a_launcher_and_a_case():
    """A new kernels/<family>/triton.py cannot be left out of the compile test."""
    fams = gpu_compile.families()
    assert {"selective_scan", "gla", "delta_rule", "linear_scan", "add_norm"} <= set(fams)
    for fam in fams:
        assert fam in gpu_compile.CASES, f"kernels/{fam} has no compile case in benchmarks/gpu_compile.CASES"
        assert callable(gpu_compile.launcher(fam))


def test_max_threads_follows_register_use():
    # 255 registers per thread leave room for 8 warps per block; 64 registers for the full 1024 threads
    assert fake_gpu.max_threads(255) == 256
    assert fake_gpu.max_threads(128) == 512
    assert fake_gpu.max_threads(64) == 1024


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu_compile") / "result.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_compile", "--ci", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    result = json.loads(out.read_text()) if out.exists() else {"records": [], "errors": []}
    result["returncode"], result["stderr"] = proc.returncode, proc.stderr[-5000:]
    return result


@pytest.mark.gpu_compile
def test_every_kernel_compiles_and_fits(compiled):
    assert not compiled["errors"], "\n\n".join(compiled["errors"])
    assert compiled["returncode"] == 0, compiled["stderr"]
    for r in compiled["records"]:
        assert r["shared"] <= r["max_shared"], r


@pytest.mark.gpu_compile
@pytest.mark.parametrize("target", gpu_compile.CI_TARGETS)
def test_forward_and_backward_compile_for_each_target(compiled, target):
    """Each family's forward and backward kernels reached the compiler for each target (a launcher that raised
    before its backward, or a family skipped, leaves no backward binary)."""
    recs = [r for r in compiled["records"] if r["target"] == target]
    for fam in gpu_compile.families():
        names = {r["kernel"] for r in recs if r["family"] == fam}
        assert any("bwd" in n for n in names), f"{target} {fam}: no backward kernel compiled ({sorted(names)})"
        assert any("bwd" not in n for n in names), f"{target} {fam}: no forward kernel compiled ({sorted(names)})"


@pytest.mark.gpu_compile
def test_small_shared_memory_gets_smaller_tiles(compiled):
    """On sm_89 (~99 KB per block) the delta rule's state passes, 145-195 KB on an H100, fall back to smaller
    value blocks or fewer stages instead of failing at launch."""
    by = {}
    for r in compiled["records"]:
        if r["family"] == "delta_rule" and r["kernel"] in ("_state_fwd", "_state_bwd"):
            by.setdefault((r["target"], r["kernel"]), []).append(r)
    for kernel in ("_state_fwd", "_state_bwd"):
        big = max(r["shared"] for r in by[("sm_90", kernel)])
        small = max(r["shared"] for r in by[("sm_89", kernel)])
        assert big > fake_gpu.GPUS["sm_89"].max_shared_mem, (kernel, big)
        assert small <= fake_gpu.GPUS["sm_89"].max_shared_mem, (kernel, small)


def test_tile_configs_drop_stages_then_halve_blocks():
    from hybriddsl.kernels.device import tile_configs

    got = tile_configs({"BK": 64, "BV": 32}, ("BV", "BK"), floor=16)
    assert got == [
        {"BK": 64, "BV": 32},
        {"BK": 64, "BV": 32, "num_stages": 2},
        {"BK": 64, "BV": 32, "num_stages": 1},
        {"BK": 64, "BV": 16, "num_stages": 1},  # BV halved to the floor first,
        {"BK": 32, "BV": 16, "num_stages": 1},  # then BK
        {"BK": 16, "BV": 16, "num_stages": 1},
    ]
    at_floor = tile_configs({"BV": 16}, ("BV",), stages=(2, 1))
    assert at_floor == [{"BV": 16, "num_stages": 2}, {"BV": 16, "num_stages": 1}]


def test_fake_driver_refuses_oversized_kernels_before_ptxas():
    """The stand-in driver's stage hook raises Triton's own OutOfResources once the shared memory is known, for
    the current target's limit, and leaves kernels that fit to the real PTX stage."""
    from triton.runtime.errors import OutOfResources

    limit = fake_gpu.GPUS["sm_89"].max_shared_mem
    stages = {"llir": None, "ptx": lambda src, meta: "ptx of " + src, "cubin": None}
    with fake_gpu.target("sm_89"):
        fake_gpu._stages_hook(None, stages, None, None, 89)
        assert stages["ptx"]("k", {"shared": limit}) == "ptx of k"
        with pytest.raises(OutOfResources):
            stages["ptx"]("k", {"shared": limit + 1})
    with fake_gpu.target("sm_90"):  # the limit is read from the device current at compile time
        assert stages["ptx"]("k", {"shared": limit + 1}) == "ptx of k"


def test_launch_fitting_falls_back_and_remembers():
    from triton.runtime.errors import OutOfResources

    from hybriddsl.kernels.device import launch_fitting

    calls = []

    def launch(cfg):
        calls.append(cfg["BV"])
        if cfg["BV"] > 32:
            raise OutOfResources(200_000, 101_376, "shared memory")

    configs = [{"BV": 128}, {"BV": 64}, {"BV": 32}, {"BV": 16}]
    assert launch_fitting("test.kernel", (1,), configs, launch) == {"BV": 32}
    assert calls == [128, 64, 32]
    calls.clear()
    assert launch_fitting("test.kernel", (1,), configs, launch) == {"BV": 32}
    assert calls == [32]  # the first fit is remembered: no failed attempt again
    with pytest.raises(OutOfResources):
        launch_fitting("test.other", (1,), configs[:2], launch)
