"""Resource limits for untrusted input, checked before the work they bound.

A ``.hyb`` file is small text, but text can ask for a lot: ``block p1 = [p0 | p0]`` doubles per line, a repeat
count can be huge, ``hidden = 4096, vocab = 1000000`` asks for 16 GB. Every limit below is checked before the
corresponding work starts (before parsing, before expanding, before any tensor exists) and fails with a
positioned error that names the limit. The limits come from the caller, never from the file (a file could raise
its own): Python passes ``limits=Limits(...)`` (or ``max_params=`` to the building functions), the CLI
``--limit NAME=VALUE`` and ``--max-params N``.

    >>> import hybriddsl
    >>> hybriddsl.compile("M*20000", limits=Limits(max_mixers=50_000))   # raise one limit for one call

The defaults admit every real model (a 7B model and its 64k-position configs) and keep a hostile file below a
couple of seconds and a few hundred MB.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hybriddsl.errors import HybOptionError, LimitError, Span


@dataclass(frozen=True)
class Limits:
    """Upper bounds on what one source or file may ask for. Each field can be raised by the caller."""

    max_source_bytes: int = 256_000  # size of one .hyb text (real files are a few hundred bytes)
    max_tokens: int = 10_000  # words, numbers and symbols in one text (parsing costs ~0.1 ms each)
    max_depth: int = 64  # nesting of ( ) and [ ] plus block macros inside block macros
    max_number_length: int = 40  # characters of one number literal
    max_mixers: int = 10_000  # layers built in all: stack, parallel branches, shared uses, macro expansion
    max_experts: int = 4096  # experts of one mixture-of-experts layer
    max_params: int = 10_000_000_000  # parameters allocated by one build or load (a 7B model fits)
    max_bytes: int | None = None  # bytes of those parameters; None: half the memory available (CPU builds)

    def replace(self, **changes: Any) -> Limits:
        """A copy with some limits changed (unknown names raise HybOptionError)."""
        names = {f.name for f in dataclasses.fields(self)}
        for k, v in changes.items():
            if k not in names:
                from hybriddsl.errors import suggest

                raise HybOptionError(
                    f"unknown limit '{k}'" + suggest(k, sorted(names)) + f" (limits: {', '.join(sorted(names))})",
                    Span(0, 0, 1, "<limits>"),
                )
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise HybOptionError(f"limit '{k}' must be a positive integer, got {v!r}", Span(0, 0, 1, "<limits>"))
        return dataclasses.replace(self, **changes)


DEFAULT = Limits()
_CURRENT: contextvars.ContextVar[Limits] = contextvars.ContextVar("hybriddsl_limits", default=DEFAULT)


def current() -> Limits:
    """The limits in force (the default ones unless a caller set others with :func:`using`)."""
    return _CURRENT.get()


@contextlib.contextmanager
def using(limits: Limits | None) -> Iterator[Limits]:
    """Make ``limits`` current inside the ``with`` block (None: keep the current ones)."""
    if limits is None:
        yield current()
        return
    token = _CURRENT.set(limits)
    try:
        yield limits
    finally:
        _CURRENT.reset(token)


def resolve(limits: Limits | None = None, **changes: Any) -> Limits:
    """``limits`` (or the current ones) with the non-None ``changes`` applied (``max_params=...``)."""
    base = limits if limits is not None else current()
    changes = {k: v for k, v in changes.items() if v is not None}
    return base.replace(**changes) if changes else base


def exceeded(what: str, value: int, name: str, limit: int, span: Span | None, hint: str = "") -> LimitError:
    """The error for one limit: what was asked, the limit's name and value, and how to raise it."""
    return LimitError(
        f"{what} ({value:,}) exceeds the limit {name} = {limit:,}",
        span,
        hint=hint
        or f"if this is intended, raise it: Python limits=Limits({name}=...), the CLI --limit {name}=N"
        + (" or --max-params N" if name == "max_params" else ""),
    )


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation on this machine (Linux MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_budget(graph: Any, device: Any = None, dtype: Any = None) -> None:
    """Refuse to build ``graph`` when its parameters (from the count pass, no tensor allocated) exceed
    ``max_params``, or their bytes exceed ``max_bytes`` (default: the memory available, for a CPU build)."""
    lim = graph.compiled.limits or current()  # those the graph was compiled under
    params = int(graph.totals.get("params") or 0)
    span = Span(0, 0, 1, graph.file)
    if params > lim.max_params:
        raise exceeded("the model has too many parameters", params, "max_params", lim.max_params, span)
    import torch

    itemsize = (dtype or torch.get_default_dtype()).itemsize
    need = params * itemsize
    cap = lim.max_bytes
    if cap is None and (device is None or torch.device(device).type == "cpu"):
        # half: loading a checkpoint holds the weights twice, training holds them and two Adam moments
        free = available_memory()
        if free is not None and need > free // 2:
            raise LimitError(
                f"the model's {params:,} parameters need {need / 2**30:.1f} GiB, more than half of the "
                f"{free / 2**30:.1f} GiB of memory available",
                span,
                hint="build it on a machine with more memory, in a smaller dtype, or raise the limit max_bytes "
                "(Python limits=Limits(max_bytes=...), the CLI --limit max_bytes=N)",
            )
        return
    if cap is not None and need > cap:
        raise exceeded("the model's parameter bytes", need, "max_bytes", cap, span)
