"""The plan: a processed graph as a flat list of steps, the one description of what a model computes.

:func:`build` walks the graph once (through :meth:`hybriddsl.ir.Graph.walk`, so an op it does not know raises)
and writes one :class:`Step` per node. Two readers share it: the interpreter
(:meth:`hybriddsl.lower.HybridModel._run`) runs it, :func:`hybriddsl.codegen.generate` prints it as Python
source. Steps read and write four registers:

    x     the input ([B, T, embed_dim] features or [B, T] ids; [B, ...] for one position)
    x0    the embedding output, before positions (a step may read it: embeddings fed to later layers)
    r     the residual stream
    y     the branch (and finally the output)

    IN_PROJ   r = y = x0 = embed(x)
    POS_ENC   r = r + positions                 (sinusoidal; a step adds each row's own position)
    NORM      y = N(r)                          post: r = y too (post-norm blocks normalise the stream)
    MIXER     y = M(<src>)                      src: "y" (pre-norm) or "r" (post-norm); one state per node
              y = M(r, x0, use)                 a side block (use >= 0: zamba_shared, its use index)
    ADD       r = r + y
              y = r + y                         side: the side block's output joins the next norm's input only
    NORM      y = N(<src>)                      src "r", or "y" after a side add
    ADD_NORM  r = r + y; y = N(r)               post: r = y too; one fused kernel
    HEAD      y = head(y)
    OUTPUT    return y                          mode "last": y[:, -1] of a sequence

A graph's ``final_norm`` node becomes a ``NORM`` step (it computes the same thing); the input node is register
``x`` and has no step. Modules live in ``model.blocks`` under their weight group (:attr:`Plan.blocks`, in order
of first use), so shared and tied weights are one module used by several steps. This module is torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hybriddsl.ir import Graph, Op

REGISTERS = ("x", "x0", "r", "y")


@dataclass(frozen=True, slots=True)
class Step:
    """One instruction of the plan (see the module docstring for what each op does)."""

    op: Op
    node: str  # graph node id: names the step's layer state (``state[node]``) and its source position
    key: str = ""  # module key in ``model.blocks`` ("" when the step has no module there)
    src: str = "y"  # MIXER: the register it reads
    post: bool = False  # NORM / ADD_NORM: the normed output also becomes the residual stream
    mode: str = ""  # OUTPUT: the model's output mode ("last", "sequence", "logits")
    use: int = -1  # MIXER of a side block: which use (its adapters); -1 otherwise
    side: bool = False  # ADD: y = r + y, the stream unchanged (a side block's output into the next norm)


@dataclass(frozen=True, slots=True)
class Block:
    """One module of ``model.blocks``: a norm (``kind`` layernorm/rmsnorm, ``opts`` {eps}) or a layer kind."""

    op: Op  # Op.NORM or Op.MIXER: what builds it
    kind: str
    opts: dict[str, Any]
    node: str  # the first node that uses it


@dataclass
class Plan:
    """The steps in execution order and the modules they use, keyed by weight group in order of first use."""

    steps: list[Step] = field(default_factory=list)
    blocks: dict[str, Block] = field(default_factory=dict)
    input: str = ""  # the graph's input node (register x)


def build(graph: Graph) -> Plan:
    """The plan of a graph that went through the pipeline (resolved: every mixer and norm has kind and weights)."""
    pre = graph.settings["pre_norm"]
    mode = graph.settings["output"]
    plan = Plan()
    steps, blocks = plan.steps, plan.blocks

    def module(op: Op, nid: str, d: dict[str, Any]) -> str:
        key = d["weights"]
        if key not in blocks:
            blocks[key] = Block(op, d["kind"], d["opts"], nid)
        return key

    def inp(nid: str, d: dict[str, Any]) -> None:
        plan.input = nid

    def norm(nid: str, d: dict[str, Any]) -> None:
        (prev,) = graph.preds(nid)
        src = "y" if graph[prev]["op"] == Op.ADD and graph[prev]["role"] == "side" else "r"
        steps.append(Step(Op.NORM, nid, module(Op.NORM, nid, d), src=src, post=d["op"] == Op.NORM and not pre))

    def add_norm(nid: str, d: dict[str, Any]) -> None:
        steps.append(Step(Op.ADD_NORM, nid, module(Op.NORM, nid, d), post=not pre))

    def mixer(nid: str, d: dict[str, Any]) -> None:
        if d.get("use") is not None:  # a side block reads the stream and x0
            steps.append(Step(Op.MIXER, nid, module(Op.MIXER, nid, d), src="r", use=d["use"]))
            return
        steps.append(Step(Op.MIXER, nid, module(Op.MIXER, nid, d), src="y" if pre else "r"))

    def add(nid: str, d: dict[str, Any]) -> None:
        steps.append(Step(Op.ADD, nid, side=d["role"] == "side"))

    def plain(nid: str, d: dict[str, Any]) -> None:
        steps.append(Step(d["op"], nid, mode=mode if d["op"] == Op.OUTPUT else ""))

    graph.walk(
        {
            Op.INPUT: inp,
            Op.IN_PROJ: plain,
            Op.POS_ENC: plain,
            Op.NORM: norm,
            Op.FINAL_NORM: norm,
            Op.MIXER: mixer,
            Op.ADD: add,
            Op.ADD_NORM: add_norm,
            Op.HEAD: plain,
            Op.OUTPUT: plain,
        }
    )
    return plan
