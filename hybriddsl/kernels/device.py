"""What the current GPU can hold, and launches that fall back to smaller tiles when a kernel does not fit.

Block sizes tuned on an H100 (227 KB of shared memory per block) overflow an A100 (163 KB) or an sm_89 card
(RTX 4090, L40S: 99 KB). Triton finds out when it loads the compiled kernel, before anything runs, and raises
``OutOfResources``; :func:`launch_fitting` then tries the launcher's next, smaller configuration and remembers,
per kernel, device and shape key, the first one that fit, so later calls go straight to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hybriddsl.kernels.dispatch import interpreting

_fitting: dict[tuple, int] = {}  # (kernel, device, key) -> index of the first configuration that fit


def device_properties() -> dict[str, int]:
    """Triton's properties of the current device (``max_shared_mem`` in bytes, ``multiprocessor_count``...).

    Read through ``triton.runtime.driver.active``, so a stand-in driver (benchmarks/fake_gpu.py) answers for a GPU
    that is not there. In the CPU interpreter there is no device: generous limits are returned."""
    if interpreting():
        return {"max_shared_mem": 1 << 30, "multiprocessor_count": 4}
    from triton.runtime import driver

    active = driver.active
    return active.utils.get_device_properties(active.get_current_device())


def capability() -> int:
    """Compute capability of the current device as Triton names it (90 for sm_90; 0 in the CPU interpreter)."""
    if interpreting():
        return 0
    from triton.runtime import driver

    return int(driver.active.get_current_target().arch)


def multiprocessor_count() -> int:
    """Streaming multiprocessors of the current device (4 in the interpreter)."""
    return int(device_properties()["multiprocessor_count"])


def tile_configs(
    blocks: dict[str, int],
    shrink: Sequence[str] = (),
    stages: Sequence[int | None] = (None, 2, 1),
    floor: int = 16,
) -> list[dict[str, Any]]:
    """Launch options for :func:`launch_fitting`, largest tiles first.

    ``blocks`` (e.g. ``{"BK": 64, "BV": 64}``) at each pipeline depth of ``stages`` (None: the kernel's default,
    3) keeps the work per program and only drops shared-memory buffers; then each block named in ``shrink`` is
    halved in turn down to ``floor`` at the last depth (more programs, smaller tiles). Each option is a dict of
    the kernel's block constexprs plus ``num_stages`` where set, to be passed as keyword arguments."""
    out = [{**blocks, **({"num_stages": s} if s is not None else {})} for s in stages]
    last = {"num_stages": stages[-1]} if stages and stages[-1] is not None else {}
    cur = dict(blocks)
    for name in shrink:
        while cur[name] // 2 >= floor:
            cur = {**cur, name: cur[name] // 2}
            out.append({**cur, **last})
    return out


def launch_fitting(
    name: str, key: tuple, configs: Sequence[dict[str, Any]], launch: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """Run ``launch(config)`` with the first of ``configs`` (largest tiles first) that fits the device.

    ``name`` and ``key`` (the shape values the configuration depends on) identify the kernel for the memo. Raises
    the last ``OutOfResources`` when none fits. Returns the configuration used."""
    from triton.runtime.errors import OutOfResources

    device = None if interpreting() else _device_key()
    memo = (name, device, key)
    start = _fitting.get(memo, 0)
    for i in range(start, len(configs)):
        try:
            launch(configs[i])
        except OutOfResources:
            if i == len(configs) - 1:
                raise
            continue
        _fitting[memo] = i
        return configs[i]
    raise AssertionError("unreachable")


def launch_tiles(
    name: str, key: tuple, blocks: dict[str, int], shrink: Sequence[str], launch: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """:func:`launch_fitting` over :func:`tile_configs` ``(blocks, shrink)``: the kernel's blocks at 3, 2, 1 pipeline
    stages, then the blocks named in ``shrink`` halved. ``launch(c)`` passes ``c`` (block constexprs and
    ``num_stages``) to the kernel as keywords, and must size its grid from ``c``'s blocks."""
    return launch_fitting(name, key, tile_configs(blocks, shrink), launch)


def _device_key() -> tuple:
    from triton.runtime import driver

    active = driver.active
    dev = active.get_current_device()
    return (type(active).__name__, dev, active.get_current_target().arch)
