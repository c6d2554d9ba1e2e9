"""Compile Triton kernels for a real NVIDIA GPU on a machine that has none.

Triton's whole pipeline (TTIR -> TTGIR -> LLVM -> PTX -> cubin through the ``ptxas`` shipped in the
triton wheel) runs on a CPU once Triton believes a GPU is current. :func:`target` installs such a
believer as Triton's active driver: it names a compute capability and the device's properties
(shared memory, SM count), loads nothing, and launches nothing. A kernel launched on CPU tensors is
then compiled exactly as on that GPU, with the launcher's own block sizes, and Triton raises
``OutOfResources`` where the real device would (shared memory above the device's limit, too many
threads). Registers and spills are read back from each cubin with ``cuobjdump``.

Checked with Triton 3.9. Triton must be imported with ``TRITON_INTERPRET`` unset (``triton.jit``
decides at decoration time whether a kernel is interpreted), so run this in its own process.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    """What the launchers and Triton's compiler ask of a device."""

    name: str
    arch: int  # compute capability * 10 + minor, e.g. 90
    max_shared_mem: int  # bytes of shared memory one block may opt into
    multiprocessor_count: int


# Opt-in shared memory per block from NVIDIA's CUDA programming guide (compute capabilities table).
GPUS = {
    "sm_90": Gpu("H100 SXM (sm_90)", 90, 232448, 132),
    "sm_80": Gpu("A100 (sm_80)", 80, 166912, 108),
    "sm_89": Gpu("RTX 4090 / L40S (sm_89)", 89, 101376, 128),
}


@dataclass
class Compiled:
    """One kernel binary as Triton built it for the current fake device."""

    kernel: str
    gpu: str
    shared: int  # bytes of shared memory (Triton metadata)
    num_warps: int
    num_stages: int
    regs: int  # registers per thread (cuobjdump)
    spill_bytes: int  # local-memory bytes per thread, the spills' home (cuobjdump STACK + LOCAL)
    constants: dict  # the kernel's constexpr arguments (block sizes, flags)


# Every binary loaded while a fake device was active, in order; cleared by :func:`target`.
LOADED: list[Compiled] = []


def _cuobjdump() -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def resource_usage(cubin: bytes) -> tuple[int, int]:
    """(registers per thread, stack + local bytes per thread) of a cubin, from ``cuobjdump -res-usage``."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([_cuobjdump(), "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    regs = int(re.search(r"REG:(\d+)", out).group(1))
    stack = int(re.search(r"STACK:(\d+)", out).group(1))
    local = int(re.search(r"LOCAL:(\d+)", out).group(1))
    return regs, stack + local


def max_threads(regs: int) -> int:
    """Threads per block a kernel using ``regs`` registers per thread can launch with (64K registers per SM,
    allocated per warp in units of 256, as on sm_80 / sm_89 / sm_90): what CUDA reports as the function's
    MAX_THREADS_PER_BLOCK, which Triton checks against num_warps."""
    per_warp = -(-max(regs, 1) * 32 // 256) * 256
    return min(1024, 65536 // per_warp * 32)


class _Utils:
    def __init__(self, gpu: Gpu, key: str):
        self.gpu, self.key = gpu, key
        self.pending: tuple[object, dict] | None = None  # the launcher made just before load_binary

    def get_device_properties(self, device: int) -> dict:
        return {
            "max_shared_mem": self.gpu.max_shared_mem,
            "max_num_regs": 65536,
            "multiprocessor_count": self.gpu.multiprocessor_count,
            "warpSize": 32,
            "sm_clock_rate": 1_755_000,
            "mem_clock_rate": 2_619_000,
            "mem_bus_width": 5120,
        }

    def load_binary(self, name, cubin, shared, device):
        regs, spills = resource_usage(cubin)
        meta, consts = self.pending if self.pending else (None, {})
        warps = getattr(meta, "num_warps", 0)
        stages = getattr(meta, "num_stages", 0)
        LOADED.append(Compiled(name, self.key, shared, warps, stages, regs, spills, consts))
        return None, None, regs, spills, max_threads(regs)

    def unload_module(self, module) -> None:
        pass


def _constants(src) -> dict:
    """The constexpr arguments of a compiled kernel, by name."""
    consts = getattr(src, "constants", None) or {}
    names = getattr(getattr(src, "fn", None), "arg_names", [])
    out = {}
    for k, v in consts.items():
        i = k[0] if isinstance(k, tuple) and len(k) == 1 else k
        out[names[i] if isinstance(i, int) and i < len(names) else str(k)] = v
    return out


class FakeCudaDriver:
    """Triton's active driver for a GPU that is not there (see the module docstring)."""

    def __init__(self, key: str):
        self.gpu = GPUS[key]
        self.key = key
        # A distinct device id per target: Triton caches binders and kernels per device id, so one process can
        # compile for several targets in turn.
        self.device = list(GPUS).index(key)
        self.utils = utils = _Utils(self.gpu, key)

        class Launcher:
            """Stands in for the CUDA launcher: launches nothing."""

            def __init__(self, src, metadata):
                utils.pending = (metadata, _constants(src))  # Triton calls load_binary right after this

            def __call__(self, *args, **kwargs) -> None:
                return None

        self.launcher_cls = Launcher

    @staticmethod
    def is_active() -> bool:
        return True

    def map_python_to_cpp_type(self, ty: str) -> str:
        from triton.backends.nvidia.driver import ty_to_cpp

        return ty_to_cpp(ty)

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget

        return GPUTarget("cuda", self.gpu.arch, 32)

    def get_active_torch_device(self):
        import torch

        return torch.device("cpu")

    def get_current_device(self) -> int:
        return self.device

    def set_current_device(self, device: int) -> None:
        pass

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_device_capability(self, device: int = 0) -> tuple[int, int]:
        return divmod(self.gpu.arch, 10)

    def get_benchmarker(self):
        # Autotuned kernels: calling each candidate once compiles it (and raises OutOfResources where it does not
        # fit, which the autotuner turns into an infinite time); every candidate that fits then ties.
        def bench(kernel_call, quantiles=None, **kwargs):
            kernel_call()
            return [1.0, 1.0, 1.0] if quantiles else 1.0

        return bench

    def get_empty_cache_for_benchmark(self):
        import torch

        return torch.empty(1)

    def clear_cache(self, cache) -> None:
        pass


_HOOK_KEY = "hybriddsl-fake-gpu-shared-check-1"  # part of Triton's cache key for kernels compiled under the hook


def _fail_early(backend, stages, options, language, capability) -> None:
    """Triton stage hook: raise ``OutOfResources`` as soon as a kernel's shared memory is known (after LLVM IR)
    instead of after ``ptxas``, when it exceeds the current device's. The real driver raises the same exception
    for the same comparison (``metadata.shared > max_shared_mem``) when it loads the cubin; a launcher falling back
    to smaller tiles then skips the PTX and cubin work of every candidate that cannot fit."""
    from triton.runtime import driver
    from triton.runtime.errors import OutOfResources

    if "ptx" not in stages:
        return
    make_ptx = stages["ptx"]

    def ptx(src, metadata):
        active = driver.active
        limit = active.utils.get_device_properties(active.get_current_device())["max_shared_mem"]
        if metadata.get("shared", 0) > limit:
            raise OutOfResources(metadata["shared"], limit, "shared memory")
        return make_ptx(src, metadata)

    stages["ptx"] = ptx


def _stages_hook(*args):
    if not args:  # Triton asks for the hook's cache key first
        return _HOOK_KEY, _HOOK_KEY
    return _fail_early(*args)


@contextlib.contextmanager
def target(key: str) -> Iterator[FakeCudaDriver]:
    """``with target("sm_90"): launcher(cpu_tensors)`` compiles every kernel the launcher starts for that GPU."""
    from triton import knobs
    from triton.runtime import driver

    fake = FakeCudaDriver(key)
    old, old_hook = driver._active, knobs.runtime.add_stages_inspection_hook
    driver.set_active(fake)
    knobs.runtime.add_stages_inspection_hook = _stages_hook
    try:
        yield fake
    finally:
        driver._active = old
        knobs.runtime.add_stages_inspection_hook = old_hook
