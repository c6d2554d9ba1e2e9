"""The graph IR: a ``networkx.DiGraph`` of operations on the residual stream, wrapped in :class:`Graph`.

Nodes are operations (a closed set, :class:`Op`); edges carry data. Every edge has a ``port``: 0 for the
residual stream, 1 for a block's branch output into an ``add``. Node attributes:

    op       Op            what the node does
    kind     str           layer kind for mixers (canonical registry name), norm type for norms, "sinusoidal"
                           for pos_enc
    opts     dict          resolved options (mixers), or parameters of the op
    weights  str | None    weight-group id: nodes with equal ids share parameters
    role     str           "main" (from the stack), "companion" (sub-block a kind brings), "shared"
    layer    int | None    1-based position in the user's stack that this node belongs to
    shape    tuple         output shape, symbolic: ("B", "T", 512)
    params, flops, state_bytes   filled by the count pass (params counted once per weight group)
    span     Span | None   where in the source the node came from
    entry    LayerEntry    a stack mixer as written (from expand until resolve gives it kind and opts)
    parent   str           a companion's main mixer (so that ``tie`` ties companions along)

The stream is ``input -> in_proj [-> pos_enc] -> blocks -> [final_norm ->] [head ->] output``. A pre-norm block is
``r -> norm -> mixer -> add(r, .)``; a post-norm block is ``r -> mixer -> add(r, .) -> norm``. Readers switch
over ops through :meth:`Graph.walk` (which raises on an op without a handler); passes edit through
:meth:`Graph.add_block`, :meth:`Graph.insert_after`, :meth:`Graph.replace_uses` and :meth:`Graph.erase`.
:meth:`Graph.lint` checks every invariant; the pipeline runs it after each pass in debug mode.

Besides the nodes, ``graph.statements`` holds the program's other statements (settings, ``shared``, ``tie``) as
typed, frozen entries that ``expand`` makes from the AST (:class:`Statements`): no pass after ``expand`` reads
syntax objects. ``graph.compiled`` records how :func:`hybriddsl.compile` was called (:class:`CompileOptions`).
"""

from __future__ import annotations

import copy
import enum
import heapq
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import networkx as nx

from hybriddsl.errors import IRError, Span

if TYPE_CHECKING:
    from hybriddsl.limits import Limits


class Op(str, enum.Enum):
    """The closed set of node operations."""

    INPUT = "input"
    IN_PROJ = "in_proj"
    POS_ENC = "pos_enc"
    NORM = "norm"
    MIXER = "mixer"
    ADD = "add"
    ADD_NORM = "add_norm"
    FINAL_NORM = "final_norm"
    HEAD = "head"
    OUTPUT = "output"


RESIDUAL, BRANCH = 0, 1  # edge ports
EMBED = 2  # edge port: the embedding output into a side block (zamba_shared; passes/shared.py)

Handler = Callable[[str, dict[str, Any]], Any]  # (node id, node attributes) -> anything: see Graph.walk


# ---------------------------------------------------------------------------------------------- statements
# What the text says besides the stack, lowered by ``expand`` into typed entries (no AST past expand): the passes
# read these, never syntax objects. All are frozen; a pass that changes one replaces it.


@dataclass(frozen=True)
class Written:
    """An option or setting value as written, with where it stands."""

    value: Any
    span: Span | None
    name_span: Span | None = None  # the option's name (for "no such option" errors)


@dataclass(frozen=True)
class LayerEntry:
    """One layer as written, macros and repeats expanded: a name (kind, alias or Megatron letter) and options.

    ``expand`` leaves one on every stack mixer node (attribute ``entry``) and in every :class:`SharedEntry`;
    ``resolve`` turns it into a kind and checked options."""

    name: str
    options: Mapping[str, Written]
    span: Span | None
    branches: tuple[tuple[LayerEntry, ...], ...] = ()  # a parallel block's branches


@dataclass(frozen=True)
class Resolved:
    """A layer resolved: canonical kind and complete, checked options."""

    kind: str
    opts: dict[str, Any]
    span: Span | None


@dataclass(frozen=True)
class SettingEntry:
    """``hidden = 512`` (``scope`` None) or ``mamba.state = 32`` (default for one kind)."""

    name: str
    scope: str | None
    value: Written
    span: Span | None


@dataclass(frozen=True)
class SharedEntry:
    """``shared X@2,4``: X's layers applied after those stack positions with one set of weights.

    ``layers`` as written (from expand); ``resolved`` (from resolve) the same layers followed by the sub-blocks
    their kinds bring, in stream order; ``insert_shared`` inserts those."""

    layers: tuple[LayerEntry, ...]
    positions: tuple[tuple[int, Span], ...]
    span: Span | None
    resolved: tuple[Resolved, ...] = ()


@dataclass(frozen=True)
class TieEntry:
    """``tie A@1,3``: the 1st and 3rd layers of that kind share weights (``positions`` None: all of them)."""

    name: str
    positions: tuple[tuple[int, Span], ...] | None
    span: Span | None


@dataclass(frozen=True)
class Statements:
    """The program's non-stack statements, typed (read by resolve, insert_shared and tie)."""

    settings: tuple[SettingEntry, ...] = ()
    shared: tuple[SharedEntry, ...] = ()
    ties: tuple[TieEntry, ...] = ()


@dataclass(frozen=True)
class CompileOptions:
    """How :func:`hybriddsl.compile` made the graph: keyword overrides (saved with the model), the custom-code
    opt-in and the limits in force (checked again before lowering)."""

    overrides: Mapping[str, Any] = field(default_factory=dict)
    trust_custom: bool = False
    limits: Limits | None = None


class Graph:
    """A model as a graph of operations, plus its model-wide settings and source text."""

    def __init__(self, settings: dict[str, Any] | None = None, source: str = "", file: str = "<string>"):
        self.g = nx.DiGraph()
        self.settings: dict[str, Any] = dict(settings or {})
        self.source, self.file = source, file
        self.statements = Statements()  # typed statements for later passes (expand writes them)
        self.compiled = CompileOptions()  # set by api.compile
        self.totals: dict[str, int] = {}  # filled by the count pass: params, flops_per_token, state_bytes
        self._next = 0

    # ------------------------------------------------------------------------------------------ building
    def add(self, op: Op, **attrs: Any) -> str:
        """Add a node and return its id (``n0``, ``n1``, ...)."""
        nid = f"n{self._next}"
        self._next += 1
        attrs.setdefault("opts", {})
        attrs.setdefault("weights", None)
        attrs.setdefault("kind", None)
        attrs.setdefault("role", "main")
        attrs.setdefault("layer", None)
        attrs.setdefault("span", None)
        self.g.add_node(nid, op=Op(op), **attrs)
        return nid

    def connect(self, u: str, v: str, port: int = RESIDUAL) -> None:
        self.g.add_edge(u, v, port=port)

    def add_block(self, after: str, mixer: dict[str, Any], norm: dict[str, Any]) -> str:
        """Insert one residual block on the stream right after node ``after``; returns its output node.

        ``mixer``/``norm`` are node attributes. Everything that consumed ``after`` consumes the new block's
        output instead. The block is pre-norm or post-norm by ``settings['pre_norm']``.
        """
        consumers = list(self.g._succ[after].items())
        for v, _ in consumers:
            self.g.remove_edge(after, v)
        n = self.add(Op.NORM, **norm)
        m = self.add(Op.MIXER, **mixer)
        a = self.add(Op.ADD, role=mixer.get("role", "main"), layer=mixer.get("layer"), span=mixer.get("span"))
        if self.settings.get("pre_norm", True):
            self.connect(after, n)
            self.connect(n, m)
            self.connect(after, a, RESIDUAL)
            self.connect(m, a, BRANCH)
            out = a
        else:
            self.connect(after, m)
            self.connect(after, a, RESIDUAL)
            self.connect(m, a, BRANCH)
            self.connect(a, n)
            out = n
        for v, d in consumers:
            self.g.add_edge(out, v, **d)
        return out

    # ------------------------------------------------------------------------------------------ reading
    def __getitem__(self, nid: str) -> dict[str, Any]:
        return self.g.nodes[nid]

    def __len__(self) -> int:
        return self.g.number_of_nodes()

    def order(self) -> list[str]:
        """Node ids in topological order (ties broken by creation order, so the order is stable).

        Kahn's algorithm on the adjacency dicts directly: networkx's lexicographical sort is 10x slower, and
        passes call this often on graphs of thousands of nodes. Raises NetworkXUnfeasible on a cycle.
        """
        succ, pred = self.g._succ, self.g._pred
        indeg = {n: len(p) for n, p in pred.items()}
        ready = [(int(n[1:]), n) for n, d in indeg.items() if d == 0]
        heapq.heapify(ready)
        out = []
        while ready:
            _, n = heapq.heappop(ready)
            out.append(n)
            for m in succ[n]:
                indeg[m] -= 1
                if indeg[m] == 0:
                    heapq.heappush(ready, (int(m[1:]), m))
        if len(out) != len(indeg):
            raise nx.NetworkXUnfeasible("the graph has a cycle")
        return out

    def nodes(self, *ops: Op) -> Iterator[str]:
        """Node ids in topological order, only those with one of ``ops`` when given."""
        for nid in self.order():
            if not ops or self[nid]["op"] in ops:
                yield nid

    def mixers(self) -> list[str]:
        return list(self.nodes(Op.MIXER))

    def preds(self, nid: str, port: int | None = None) -> list[str]:
        return [u for u, _, d in self.g.in_edges(nid, data=True) if port is None or d["port"] == port]

    def succs(self, nid: str) -> list[str]:
        return list(self.g.successors(nid))

    def walk(self, handlers: Mapping[Op, Handler], order: Iterable[str] | None = None) -> None:
        """Call ``handlers[op](nid, node)`` for every node in topological order (or ``order``).

        The one way readers of the graph (plan, shapes, counts, diagram) switch over node ops: every op present
        must have a handler, checked before any handler runs, so a reader that misses an op (a new one, or one
        it never saw, like ``pos_enc``) raises IRError instead of silently skipping nodes."""
        ids = self.order() if order is None else list(order)
        nodes = self.g._node
        missing = {nodes[n]["op"] for n in ids} - handlers.keys()
        if missing:
            names = ", ".join(sorted(op.value if isinstance(op, Op) else repr(op) for op in missing))
            raise IRError(f"no handler for op {names} (handled: {', '.join(sorted(o.value for o in handlers))})")
        for n in ids:
            d = nodes[n]
            handlers[d["op"]](n, d)

    # ------------------------------------------------------------------------------------------ editing
    def insert_after(self, after: str, op: Op, **attrs: Any) -> str:
        """Add a node that reads ``after`` and takes over everything ``after`` fed (edges keep their ports).

        ``a -> b`` becomes ``a -> new -> b``; returns the new node's id."""
        new = self.add(op, **attrs)
        self.replace_uses(after, new)
        self.connect(after, new)
        return new

    def replace_uses(self, old: str, new: str, users: Iterable[str] | None = None) -> None:
        """Every edge out of ``old`` (or only those into ``users``) leaves from ``new`` instead (same port);
        ``old`` keeps its inputs."""
        succ = self.g._succ[old]
        for v, d in list(succ.items()):
            if users is not None and v not in users:
                continue
            self.g.remove_edge(old, v)
            self.g.add_edge(new, v, **d)

    def erase(self, nid: str) -> None:
        """Remove a node that nothing reads any more (use :meth:`replace_uses` first), with its input edges;
        raises IRError if something still reads it."""
        if self.g._succ[nid]:
            users = ", ".join(self.g._succ[nid])
            raise IRError(f"cannot erase node {nid} ({self[nid]['op'].value}): {users} still read it")
        self.g.remove_node(nid)

    def copy(self) -> Graph:
        """A copy that passes can edit: passes return new graphs and leave their input alone.

        Node attribute dicts are copied, and each node's ``opts`` dict one level deep (passes replace or update
        them); other values are shared: spans and statements are frozen, edge attributes are replaced with their
        edge (:meth:`replace_uses`), never edited, and a pass that changes a nested value (a parallel block's
        branch list) replaces it. A generic deepcopy costs 70% of compile time on
        a 1,000-layer model; this is C-level dict copies only (10,000 layers: ~40k nodes in tens of ms)."""
        new = Graph.__new__(Graph)
        # Built on networkx's own dicts: add_node/add_edges_from cost ~20 us per item, too slow for this hot path.
        g = nx.DiGraph()
        nodes, succ, pred = g._node, g._succ, g._pred
        for n, d in self.g._node.items():
            d = nodes[n] = d.copy()
            o = d.get("opts")
            if o:
                d["opts"] = o.copy()
        for u, nbrs in self.g._succ.items():
            succ[u] = nbrs.copy()  # edge dicts ({"port": p}) are shared: edits replace edges, never change them
        for v, nbrs in self.g._pred.items():
            pred[v] = nbrs.copy()
        new.g = g
        new.settings = copy.deepcopy(self.settings)
        new.statements, new.compiled = self.statements, self.compiled
        new.totals = dict(self.totals)
        new.source, new.file, new._next = self.source, self.file, self._next
        return new

    # ------------------------------------------------------------------------------------------ checking
    def lint(self) -> Graph:
        """Check every invariant; raise IRError naming the node, its span and the printed graph. Returns self."""
        g = self.g

        def fail(msg: str, nid: str | None = None) -> None:
            span = self[nid].get("span") if nid else None
            where = f"node {nid} ({self[nid]['op'].value}): " if nid else ""
            raise IRError(f"{where}{msg}\n{self}", span, self.source)

        # networkx's views and traversals cost ~10x the raw adjacency dicts here; `check` lints after every pass
        nodes, succ, pred = g._node, g._succ, g._pred
        try:
            self.order()
        except nx.NetworkXUnfeasible:
            fail("the graph has a cycle")
        ins = [n for n, d in nodes.items() if d["op"] == Op.INPUT]
        outs = [n for n, d in nodes.items() if d["op"] == Op.OUTPUT]
        if len(ins) != 1 or len(outs) != 1:
            fail(f"expected one input and one output, found {len(ins)} and {len(outs)}")
        reach, back = _reachable(ins[0], succ), _reachable(outs[0], pred)
        pre_norm = self.settings.get("pre_norm", True)
        stream_ops = (Op.MIXER, Op.ADD, Op.NORM, Op.ADD_NORM)
        groups: dict[str, tuple] = {}
        for n, node in nodes.items():
            op = node.get("op")
            if not isinstance(op, Op):
                fail(f"unknown op {op!r}", n)
            if n not in reach or n not in back:
                fail("not on a path from the input to the output", n)
            preds = pred[n]
            if op == Op.INPUT and preds:
                fail("the input has predecessors", n)
            if op != Op.INPUT and not preds:
                fail("no input edge", n)
            if op == Op.ADD or op == Op.ADD_NORM:
                ports = sorted(d["port"] for d in preds.values())
                if ports != [RESIDUAL, BRANCH]:
                    fail(f"an add needs one residual and one branch input, has ports {ports}", n)
                (m,) = (u for u, d in preds.items() if d["port"] == BRANCH)
                if nodes[m]["op"] != Op.MIXER:
                    fail("the branch input of an add must be a mixer", n)
            elif op == Op.MIXER and node.get("use") is not None:  # a side block: the stream and the embeddings
                ports = sorted(d["port"] for d in preds.values())
                if ports != [RESIDUAL, EMBED]:
                    fail(f"a side block reads the stream and the embedding output, has ports {ports}", n)
            elif op != Op.INPUT and len(preds) != 1:
                fail(f"expected one input edge, found {len(preds)}", n)
            if op == Op.MIXER:
                if not node.get("kind") and not node.get("entry"):  # expand leaves entries, resolve gives kinds
                    fail("a mixer without a kind", n)
                out = list(succ[n])
                if len(out) != 1 or nodes[out[0]]["op"] not in (Op.ADD, Op.ADD_NORM):
                    fail("a mixer must feed exactly one add", n)
                side = node.get("use") is not None  # reads the stream itself (passes/shared.py)
                if not side and pre_norm and nodes[next(iter(preds))]["op"] not in (Op.NORM, Op.ADD_NORM):
                    fail("in a pre-norm model every mixer reads a norm", n)
            shape = node.get("shape")
            if shape is not None and op in stream_ops:
                for p in preds:
                    ps = nodes[p].get("shape")
                    if ps is not None and tuple(ps) != tuple(shape):
                        fail(f"shape {shape} does not match its input {p}'s shape {ps}", n)
            w = node.get("weights")
            if w is not None:
                # one op, kind and options per group: opts compared by value (callables by identity)
                sig = groups.setdefault(w, (op, node.get("kind"), node.get("opts")))
                if (
                    sig[0] != op
                    or sig[1] != node.get("kind")
                    or (sig[2] is not node.get("opts") and sig[2] != node.get("opts"))
                ):
                    fail(f"weight group {w} mixes different ops, kinds or options", n)
        return self

    # ------------------------------------------------------------------------------------------ printing
    def __str__(self) -> str:
        rows = [("node", "op", "kind", "options", "weights", "shape", "params")]
        # a broken graph (a cycle) is printed too, in creation order, so that lint can show it
        ids = self.order() if nx.is_directed_acyclic_graph(self.g) else sorted(self.g, key=lambda n: int(n[1:]))
        for n in ids:
            d = self[n]
            rows.append(
                (
                    n,
                    d["op"].value,
                    d.get("kind") or "",
                    format_opts(d.get("opts") or {}),
                    d.get("weights") or "",
                    "x".join(map(str, d["shape"])) if d.get("shape") else "",
                    f"{d['params']:,}" if d.get("params") is not None else "",
                )
            )
        widths = [min(48, max(len(r[i]) for r in rows)) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c[:48].ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)

    def __repr__(self) -> str:
        """One line: file, stack layers by kind, and the parameter count once the count pass has run."""
        main = [n for n in self.mixers() if self[n].get("role", "main") == "main"]
        return (
            f"<Graph {self.file}: {_layers_summary([self[n].get('kind') or self[n]['entry'].name for n in main])}"
            + (f", {self.totals['params']:,} params>" if self.totals else ">")
        )

    def _repr_svg_(self) -> str | None:  # Jupyter: the diagram (None without Graphviz's dot: text instead)
        from hybriddsl.notebook import svg

        return svg(self)

    def _repr_pretty_(self, p, cycle: bool) -> None:  # IPython: the layer table
        from hybriddsl.notebook import pretty

        pretty(self, p, cycle)

    def to_json(self) -> str:
        """The graph in networkx node-link JSON, with settings and source (spans as [line, col])."""
        data = nx.node_link_data(self.g, edges="edges")
        for node in data["nodes"]:
            node["op"] = node["op"].value
            span = node.get("span")
            node["span"] = [span.line, span.column] if isinstance(span, Span) else None
            node["opts"] = _jsonable(node.get("opts"))
        return json.dumps(
            {
                "format": "hybriddsl-ir/1",
                "settings": _jsonable(self.settings),
                "source": self.source,
                "graph": data,
            },
            indent=1,
        )


def _reachable(start: str, adj: dict[str, dict]) -> set[str]:
    """Nodes reachable from ``start`` (itself included) along ``adj`` (successor or predecessor dicts)."""
    seen, todo = {start}, [start]
    while todo:
        for m in adj[todo.pop()]:
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def _freeze(x: Any) -> Any:
    if isinstance(x, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return tuple(_freeze(v) for v in x)
    if callable(x):
        return id(x)
    return x


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (int, float, bool, str)) or x is None:
        return x
    return repr(x)


def format_opts(opts: dict[str, Any], keys: tuple[str, ...] | None = None) -> str:
    """``heads=8, window=128`` (only ``keys`` when given; nested branch lists shown compactly)."""
    parts = []
    for k, v in opts.items():
        if keys is not None and k not in keys or v is None:
            continue
        if k == "branches":
            v = " | ".join(" ".join(b["kind"] for b in br) for br in v)
            parts.append(f"[{v}]")
            continue
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, float):
            v = f"{v:g}"
        elif callable(v):
            v = getattr(v, "__name__", "fn")
        parts.append(f"{k}={v}")
    return ", ".join(parts)


def _layers_summary(kinds: list) -> str:
    """'6 layers (mamba x3, attention x2, gla)': kinds in first-seen order."""
    counts: dict = {}
    for k in kinds:
        counts[k] = counts.get(k, 0) + 1
    parts = ", ".join(f"{k} x{c}" if c > 1 else str(k) for k, c in counts.items())
    return f"{len(kinds)} layer{'' if len(kinds) == 1 else 's'}" + (f" ({parts})" if parts else "")
