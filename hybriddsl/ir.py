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

The stream is ``input -> in_proj [-> pos_enc] -> blocks -> [final_norm ->] [head ->] output``. A pre-norm block is
``r -> norm -> mixer -> add(r, .)``; a post-norm block is ``r -> mixer -> add(r, .) -> norm``. Readers switch
over ops through :meth:`Graph.walk` (which raises on an op without a handler); passes edit through
:meth:`Graph.add_block`, :meth:`Graph.insert_after`, :meth:`Graph.replace_uses` and :meth:`Graph.erase`.
:meth:`Graph.lint` checks every invariant; the pipeline runs it after each pass in debug mode.
"""

from __future__ import annotations

import copy
import enum
import heapq
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import networkx as nx

from hybriddsl.errors import IRError, Span


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


class Graph:
    """A model as a graph of operations, plus its model-wide settings and source text."""

    def __init__(self, settings: dict[str, Any] | None = None, source: str = "", file: str = "<string>"):
        self.g = nx.DiGraph()
        self.settings: dict[str, Any] = dict(settings or {})
        self.source, self.file = source, file
        self.directives: dict[str, Any] = {}  # statements later passes consume (shared, tie, kind defaults)
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

    def replace_uses(self, old: str, new: str) -> None:
        """Every edge out of ``old`` leaves from ``new`` instead (same port); ``old`` keeps its inputs."""
        succ = self.g._succ[old]
        for v, d in list(succ.items()):
            self.g.remove_edge(old, v)
            self.g.add_edge(new, v, **d)

    def erase(self, nid: str) -> None:
        """Remove a node that nothing reads any more (use :meth:`replace_uses` first); raises IRError if it is."""
        if self.g._succ[nid]:
            users = ", ".join(self.g._succ[nid])
            raise IRError(f"cannot erase node {nid} ({self[nid]['op'].value}): {users} still read it")
        self.g.remove_node(nid)

    def copy(self) -> Graph:
        """A deep copy: passes return new graphs and leave their input alone."""
        # Node attribute dicts and their opts are copied (passes replace or update them); spans are frozen and
        # the statements in `directives` are read-only AST, so sharing them is safe. A generic deepcopy costs
        # 70% of compile time on a 1,000-layer model.
        new = Graph.__new__(Graph)
        # Built on networkx's own dicts: add_node/add_edges_from cost ~20 us per item, too slow for this hot path.
        g = nx.DiGraph()
        nodes, succ, pred = g._node, g._succ, g._pred
        for n, d in self.g._node.items():
            nodes[n] = {k: (dict(v) if type(v) is dict else v) for k, v in d.items()}
            succ[n] = {}
            pred[n] = {}
        for u, nbrs in self.g._succ.items():
            su = succ[u]
            for v, d in nbrs.items():
                su[v] = pred[v][u] = {"port": d["port"]} if len(d) == 1 else dict(d)  # one dict, both ends
        new.g = g
        new.settings = copy.deepcopy(self.settings)
        new.directives = dict(self.directives)
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

        if not nx.is_directed_acyclic_graph(g):
            fail("the graph has a cycle")
        ins = [n for n in g if self[n]["op"] == Op.INPUT]
        outs = [n for n in g if self[n]["op"] == Op.OUTPUT]
        if len(ins) != 1 or len(outs) != 1:
            fail(f"expected one input and one output, found {len(ins)} and {len(outs)}")
        (src,), (dst,) = ins, outs
        reach = nx.descendants(g, src) | {src}
        back = nx.ancestors(g, dst) | {dst}
        for n in g:
            node = self[n]
            if not isinstance(node.get("op"), Op):
                fail(f"unknown op {node.get('op')!r}", n)
            if n not in reach or n not in back:
                fail("not on a path from the input to the output", n)
            op = node["op"]
            preds = self.preds(n)
            if op == Op.INPUT and preds:
                fail("the input has predecessors", n)
            if op not in (Op.INPUT,) and not preds:
                fail("no input edge", n)
            if op in (Op.ADD, Op.ADD_NORM):
                ports = sorted(d["port"] for _, _, d in g.in_edges(n, data=True))
                if ports != [RESIDUAL, BRANCH]:
                    fail(f"an add needs one residual and one branch input, has ports {ports}", n)
                (m,) = self.preds(n, BRANCH)
                if self[m]["op"] != Op.MIXER:
                    fail("the branch input of an add must be a mixer", n)
            elif op == Op.MIXER and node.get("use") is not None:  # a side block: the stream and the embeddings
                ports = sorted(d["port"] for _, _, d in g.in_edges(n, data=True))
                if ports != [RESIDUAL, EMBED]:
                    fail(f"a side block reads the stream and the embedding output, has ports {ports}", n)
            elif op != Op.INPUT and len(preds) != 1:
                fail(f"expected one input edge, found {len(preds)}", n)
            if op == Op.MIXER:
                if not node.get("kind") and not node.get("name"):  # expand leaves names, resolve gives kinds
                    fail("a mixer without a kind", n)
                succ = self.succs(n)
                if len(succ) != 1 or self[succ[0]]["op"] not in (Op.ADD, Op.ADD_NORM):
                    fail("a mixer must feed exactly one add", n)
                side = node.get("use") is not None  # reads the stream itself (passes/shared.py)
                if (
                    not side
                    and self.settings.get("pre_norm", True)
                    and self[preds[0]]["op"] not in (Op.NORM, Op.ADD_NORM)
                ):
                    fail("in a pre-norm model every mixer reads a norm", n)
            shape = node.get("shape")
            if shape is not None and op in (Op.MIXER, Op.ADD, Op.NORM, Op.ADD_NORM):
                for p in preds:
                    ps = self[p].get("shape")
                    if ps is not None and tuple(ps) != tuple(shape):
                        fail(f"shape {shape} does not match its input {p}'s shape {ps}", n)
        groups: dict[str, tuple] = {}
        for n in g:
            w = self[n].get("weights")
            if w is None:
                continue
            sig = (self[n]["op"], self[n].get("kind"), _freeze(self[n].get("opts")))
            if groups.setdefault(w, sig) != sig:
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
        return f"<Graph {self.file}: {_layers_summary([self[n].get('kind') or self[n].get('name') for n in main])}" + (
            f", {self.totals['params']:,} params>" if self.totals else ">"
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
