"""The IR past expand: typed statement entries (no syntax objects), and the graph's edit helpers."""

from __future__ import annotations

import dataclasses
import gc

import pytest

from hybriddsl import HybNameError, IRError, compile, parse, syntax
from hybriddsl.ir import (
    BRANCH,
    RESIDUAL,
    Graph,
    LayerEntry,
    Op,
    Resolved,
    SettingEntry,
    SharedEntry,
    TieEntry,
    Written,
)
from hybriddsl.passes import PIPELINE, expand

SRC = (
    "hidden = 32\nheads = 4\nattention.window = 8\nblock local = A FFN\nM local [M | GLA] M; shared local@1; tie M@1,2"
)
AST_TYPES = tuple(
    t
    for t in vars(syntax).values()
    if isinstance(t, type) and dataclasses.is_dataclass(t) and t.__module__ == syntax.__name__
)


def _objects(x, seen=None):
    """Everything reachable from x through dataclass fields, dicts, lists and tuples."""
    seen = set() if seen is None else seen
    if id(x) in seen:
        return
    seen.add(id(x))
    yield x
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        for f in dataclasses.fields(x):
            yield from _objects(getattr(x, f.name), seen)
    elif isinstance(x, dict):
        for k, v in x.items():
            yield from _objects(k, seen)
            yield from _objects(v, seen)
    elif isinstance(x, (list, tuple, set)):
        for v in x:
            yield from _objects(v, seen)


def test_no_syntax_object_passes_expand():
    assert syntax.Value in AST_TYPES and syntax.Shared in AST_TYPES  # the scan knows what to look for
    g = expand(parse(SRC))
    for p in [None, *PIPELINE]:
        g = p(g) if p else g
        everything = [g.statements, g.compiled, g.settings, [dict(d) for _, d in g.g.nodes(data=True)]]
        leaked = {type(o).__name__ for o in _objects(everything) if isinstance(o, AST_TYPES)}
        assert not leaked, f"after {p.__name__ if p else 'expand'}: {leaked}"


def test_expand_lowers_statements_to_typed_entries():
    g = expand(parse(SRC))
    st = g.statements
    assert [(s.name, s.scope, s.value.value) for s in st.settings] == [
        ("hidden", None, 32),
        ("heads", None, 4),
        ("window", "attention", 8),
    ]
    assert all(isinstance(s, SettingEntry) and isinstance(s.value, Written) for s in st.settings)
    (shared,) = st.shared
    assert isinstance(shared, SharedEntry) and shared.resolved == ()
    assert [e.name for e in shared.layers] == ["A", "FFN"]  # the macro expanded, as in the stack
    assert [p for p, _ in shared.positions] == [1]
    (tie,) = st.ties
    assert isinstance(tie, TieEntry) and tie.name == "M" and [p for p, _ in tie.positions] == [1, 2]
    entries = [g[n]["entry"] for n in g.mixers()]
    assert all(isinstance(e, LayerEntry) for e in entries)
    assert [e.name for e in entries] == ["M", "A", "FFN", "parallel", "M"]
    assert [[b.name for b in br] for br in entries[3].branches] == [["M"], ["GLA"]]


def test_resolve_resolves_shared_layers_with_their_companions():
    g = compile(SRC, passes=PIPELINE[:1])  # resolve only
    (shared,) = g.statements.shared
    assert [(r.kind, r.opts.get("window")) for r in shared.resolved] == [("attention", 8), ("ffn", None), ("ffn", None)]
    assert all(isinstance(r, Resolved) for r in shared.resolved)
    assert not any("entry" in g[n] for n in g.mixers())  # entries are consumed


def test_a_shared_layer_name_error_points_at_the_statement():
    with pytest.raises(HybNameError) as e:
        compile("M M; shared mamab@1")
    assert e.value.span.line == 1 and e.value.span.column == 13


def test_compile_records_its_options():
    g = compile("M", hidden=32, trust_custom=True)
    assert dict(g.compiled.overrides) == {"hidden": 32} and g.compiled.trust_custom is True
    assert g.compiled.limits is not None


def _chain() -> tuple[Graph, str, str, str]:
    g = Graph()
    a, b, c = g.add(Op.INPUT), g.add(Op.IN_PROJ), g.add(Op.OUTPUT)
    g.connect(a, b)
    g.connect(b, c, BRANCH)
    return g, a, b, c


def test_insert_after_takes_over_the_uses_and_keeps_ports():
    g, a, b, c = _chain()
    n = g.insert_after(b, Op.POS_ENC, kind="sinusoidal")
    assert g.order() == [a, b, n, c]
    assert g.succs(b) == [n] and g.succs(n) == [c]
    assert g.g.edges[n, c]["port"] == BRANCH and g.g.edges[b, n]["port"] == RESIDUAL
    assert g[n]["kind"] == "sinusoidal"


def test_replace_uses_then_erase():
    g, a, b, c = _chain()
    g.replace_uses(b, a)
    assert g.succs(a) == [b, c] and g.succs(b) == []
    g.erase(b)
    assert b not in g.g and g.preds(c) == [a] and g.g.edges[a, c]["port"] == BRANCH


def test_erase_refuses_a_node_still_read():
    g, a, b, c = _chain()
    with pytest.raises(IRError, match=f"{c} still read"):
        g.erase(b)
    assert b in g.g


def test_compile_leaves_the_garbage_collector_as_it_found_it():
    assert gc.isenabled()
    compile("M A", hidden=32, heads=4)
    assert gc.isenabled()
    with pytest.raises(HybNameError):
        compile("mamab")
    assert gc.isenabled()
    gc.disable()
    try:
        compile("M", hidden=32)
        assert not gc.isenabled()
    finally:
        gc.enable()
