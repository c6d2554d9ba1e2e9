"""The pass pipeline: expand -> resolve -> insert_shared -> tie -> infer_shapes -> fuse_add_norm -> count.

Each pass is a plain function ``Graph -> Graph`` that returns a new graph. ``run`` lints after every pass when
``debug`` is set, can hand each intermediate graph to ``dump`` (``hybdsl compile --dump-ir``), and when a pass
fails unexpectedly it names the pass and the passes that ran before it.
"""

from __future__ import annotations

from collections.abc import Callable

from hybriddsl.errors import HybError, IRError
from hybriddsl.gc_pause import paused_gc
from hybriddsl.ir import Graph
from hybriddsl.passes.count import count
from hybriddsl.passes.expand import expand
from hybriddsl.passes.fuse import fuse_add_norm
from hybriddsl.passes.resolve import resolve
from hybriddsl.passes.shapes import infer_shapes
from hybriddsl.passes.shared import insert_shared
from hybriddsl.passes.tie import tie
from hybriddsl.syntax import Program

Pass = Callable[[Graph], Graph]

PIPELINE: list[Pass] = [resolve, insert_shared, tie, infer_shapes, fuse_add_norm, count]


def run(
    program: Program,
    passes: list[Pass] | None = None,
    debug: bool = False,
    dump: Callable[[str, Graph], None] | None = None,
) -> Graph:
    """Program -> fully processed Graph. ``passes`` defaults to PIPELINE (drop fuse_add_norm to compare)."""
    passes = PIPELINE if passes is None else passes
    # The passes allocate hundreds of thousands of small dicts and free them by reference counting (graphs
    # hold no cycles): the cyclic collector's sweeps would cost 60% of a 10,000-layer compile.
    with paused_gc():
        return _run(program, passes, debug, dump)


def _run(program: Program, passes: list[Pass], debug: bool, dump: Callable[[str, Graph], None] | None) -> Graph:
    done: list[str] = []
    current = "expand"
    try:
        g = expand(program)
        _after("expand", g, debug, dump)
        done.append(current)
        for p in passes:
            current = p.__name__
            g = p(g)
            _after(current, g, debug, dump)
            done.append(current)
    except HybError as e:
        raise e.with_source(program.source, program.file) from None
    except Exception as e:  # a bug in a pass: say which, keep the original as the cause
        after = f" (after {', '.join(done)})" if done else ""
        raise IRError(f"internal error in pass '{current}'{after}: {type(e).__name__}: {e}") from e
    return g


def _after(name: str, g: Graph, debug: bool, dump: Callable[[str, Graph], None] | None) -> None:
    if debug:
        try:
            g.lint()
        except IRError as e:
            raise IRError(f"after pass '{name}': {e.message}", e.span) from None
    if dump is not None:
        dump(name, g)
