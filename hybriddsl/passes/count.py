"""Pass ``count``: exact parameters, FLOPs per token and recurrent-state bytes, per node and in total.

Parameters are counted on the modules themselves, built on the ``meta`` device (no memory), so the count equals
``sum(p.numel() for p in model.parameters())`` of the lowered model by construction: each weight group once.
A layer that runs user code (``custom``, or a parallel block holding one) is never built here, trusted or not:
its ``params``, ``flops`` and ``state_bytes`` are None (unknown) and ``totals['unknown']`` counts such layers;
``parse_and_build`` fills them in from the built model (:func:`fill_built`).
FLOPs per token come from each kind's formula (matmuls: 2 per weight; attention scores and state updates on top)
and count every application (a shared block applied three times costs three times). State bytes are per
sequence after ``seq_len`` tokens, fp32 recurrent states and the KV cache in the model's dtype (2 bytes).
"""

from __future__ import annotations

import functools
from typing import Any

from hybriddsl import registry, trust
from hybriddsl.errors import HybError
from hybriddsl.ir import Graph, Op, _freeze


def count(graph: Graph) -> Graph:
    """Returns a new graph with ``params``, ``flops`` and ``state_bytes`` on nodes and ``totals`` filled."""
    g = graph.copy()
    s = g.settings
    hidden, seq_len = s["hidden"], s["seq_len"]
    seen: set[str] = set()
    totals = {"params": 0, "flops_per_token": 0, "state_bytes": 0, "unknown": 0}

    def record(node: dict[str, Any], params: int | None, flops: int | None, state: int | None) -> None:
        w = node.get("weights")
        node["params"] = params
        node["flops"] = flops
        node["state_bytes"] = state
        node["shared_use"] = w is not None and w in seen  # a later use of weights counted already
        if params is None:
            totals["unknown"] += 0 if node["shared_use"] else 1
        else:
            if not node["shared_use"]:
                totals["params"] += params
            totals["flops_per_token"] += flops
            totals["state_bytes"] += state
        if w is not None:
            seen.add(w)

    def free(nid: str, node: dict[str, Any]) -> None:  # input, output: no parameters, no work
        record(node, 0, 0, 0)

    def in_proj(nid: str, node: dict[str, Any]) -> None:
        if s["vocab"]:
            record(node, s["vocab"] * hidden, 0, 0)
        elif s["embed_dim"] != hidden:
            record(node, s["embed_dim"] * hidden + hidden, 2 * s["embed_dim"] * hidden, 0)
        else:
            record(node, 0, 0, 0)

    def add(nid: str, node: dict[str, Any]) -> None:  # also the positional encoding, a fixed table added
        record(node, 0, hidden, 0)

    def norm(nid: str, node: dict[str, Any]) -> None:
        record(node, hidden * (2 if node["kind"] == "layernorm" else 1), 5 * hidden, 0)

    def head(nid: str, node: dict[str, Any]) -> None:
        record(node, 0 if s["tie_embeddings"] else s["vocab"] * hidden, 2 * s["vocab"] * hidden, 0)

    def mixer(nid: str, node: dict[str, Any]) -> None:
        if trust.runs_code(node["kind"], node["opts"]):
            record(node, None, None, None)  # counting would build it, i.e. run the user's code
            return
        try:
            params, state = layer_cost(node["kind"], node["opts"], hidden, seq_len)
        except HybError as e:  # e.g. a custom factory that fails: point at the layer
            if e.span is None:
                e.span = node.get("span")
            raise
        record(node, params, layer_flops(node["kind"], node["opts"], hidden, params, seq_len), state)

    g.walk(
        {
            Op.INPUT: free,
            Op.IN_PROJ: in_proj,
            Op.POS_ENC: add,
            Op.NORM: norm,
            Op.FINAL_NORM: norm,
            Op.ADD_NORM: norm,
            Op.MIXER: mixer,
            Op.ADD: add,
            Op.HEAD: head,
            Op.OUTPUT: free,
        }
    )
    g.totals = totals
    return g


def fill_built(graph: Graph, model: Any) -> None:
    """Fill in (in place) the counts of layers left unknown by ``count``, from the built model's modules."""
    if not graph.totals.get("unknown"):
        return
    s = graph.settings
    seen: set[str] = set()
    for nid in graph.nodes(Op.MIXER):
        node = graph[nid]
        if node.get("params") is not None:
            continue
        module = model.blocks[node["weights"]]
        params = sum(p.numel() for p in module.parameters())
        node["params"] = params
        # the kind's own formula may count sub-layers by building them (parallel): 2 FLOPs per weight instead
        node["flops"] = registry.matmul_flops(node["opts"], s["hidden"], params, s["seq_len"])
        node["state_bytes"] = int(module.state_bytes(s["seq_len"], dtype_bytes=2))
        if node["weights"] not in seen and not node["shared_use"]:
            graph.totals["params"] += params
            graph.totals["unknown"] -= 1
        seen.add(node["weights"])
        graph.totals["flops_per_token"] += node["flops"]
        graph.totals["state_bytes"] += node["state_bytes"]


def layer_flops(kind: str, opts: dict[str, Any], hidden: int, params: int, seq_len: int) -> int:
    """FLOPs per token of one layer with ``params`` weights: its kind's formula, plus, for a kind with branches
    (parallel), what each sub-layer's own formula adds on top of its matmuls (2 FLOPs per weight, already in
    ``2 * params``)."""
    spec = registry.get(kind)
    total = spec.flops(opts, hidden, params, seq_len)
    for branch in opts["branches"] if spec.branches else ():
        for b in branch:
            p, _ = layer_cost(b["kind"], b["opts"], hidden, seq_len)
            total += layer_flops(b["kind"], b["opts"], hidden, p, seq_len) - 2 * p
    return total


def layer_cost(kind: str, opts: dict[str, Any], hidden: int, seq_len: int) -> tuple[int, int]:
    """(parameters, state bytes after seq_len tokens) of one layer, from its module on the meta device."""
    return _cost(kind, _freeze(opts), hidden, seq_len, _Opts(opts))


class _Opts:
    """Carries the real options dict through lru_cache, which only hashes the frozen copy."""

    def __init__(self, opts: dict[str, Any]):
        self.opts = opts

    def __hash__(self) -> int:
        return 0

    def __eq__(self, other: object) -> bool:
        return True


@functools.lru_cache(maxsize=4096)
def _cost(kind: str, frozen: Any, hidden: int, seq_len: int, opts: _Opts) -> tuple[int, int]:
    import torch  # here, not at the top: parsing and checking never need it

    with torch.device("meta"):
        module = registry.build(kind, opts.opts, hidden)
    params = sum(p.numel() for p in module.parameters())
    return params, int(module.state_bytes(seq_len, dtype_bytes=2))
