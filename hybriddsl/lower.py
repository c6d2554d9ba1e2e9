"""Lowering: Graph -> ``nn.Module``.

``lower`` walks the graph in topological order and writes a *plan*: one step per node, reading and writing two
registers, ``r`` (the residual stream) and ``y`` (the block branch). Nodes with one weight group get one module
instance, stored in ``model.blocks[group]``, so shared and tied weights are one set of parameters. The result is
a plain module: ``state_dict``, ``torch.save``, ``torch.compile`` and DDP/FSDP treat it like any other.

    pre-norm block:   norm  y = N(r)      mixer  y = M(y)      add  r = r + y
    fused:            add_norm  r = r + y; y = N(r)            (one kernel; the next block reads y)
    post-norm block:  mixer y = M(r)      add   r = r + y      norm r = y = N(r)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from hybriddsl import registry, scales
from hybriddsl.init import init_model
from hybriddsl.ir import Graph, Op

State = dict[str, Any]


# Building one layer is the registry's job; the old name stays for callers.
build_module = registry.build


def make_norm(kind: str, hidden: int, eps: float) -> nn.Module:
    """LayerNorm or RMSNorm over the hidden dim."""
    return nn.RMSNorm(hidden, eps=eps) if kind == "rmsnorm" else nn.LayerNorm(hidden, eps=eps)


class Step(NamedTuple):
    """One instruction of the plan."""

    op: str  # in_proj | pos | norm | mixer | add | add_norm | head | output
    key: str  # module key in model.blocks ("" when none)
    node: str  # graph node id (names the mixer's state in step mode)
    arg: Any = None  # mixer: the register it reads; add_norm: post-norm flag; output: mode


class SinusoidalEncoding(nn.Module):
    """Fixed sin/cos position encoding (Vaswani et al. 2017) added to [batch, seq, hidden] inputs."""

    def __init__(self, hidden: int):
        super().__init__()
        self.hidden = hidden

    def table(self, positions: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """[len] int positions -> [len, hidden] encodings."""
        half = (self.hidden + 1) // 2
        freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device) * 2 / self.hidden)
        ang = positions.float()[:, None] * freq[None]
        pe = torch.stack([ang.sin(), ang.cos()], dim=-1).flatten(-2)[:, : self.hidden]
        return pe.to(dtype)

    def forward(self, x: torch.Tensor, offset: torch.Tensor | int = 0) -> torch.Tensor:
        pos = torch.arange(x.shape[1], device=x.device) + offset
        return x + self.table(pos, x.dtype)


def _add_norm(y: torch.Tensor, r: torch.Tensor, norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(norm(r + y), r + y) through the fused kernel family. y, r: [..., hidden].

    float32/float64 CPU tensors on the PyTorch backend take ``F.layer_norm`` / ``F.rms_norm`` directly: what the
    family's reference path computes there, without its argument checks and dispatch (a few us a call, which
    adds up when streaming one frame at a time)."""
    from hybriddsl.kernels.add_norm import add_norm
    from hybriddsl.kernels.dispatch import get_backend

    w = norm.weight
    if (
        y.device.type == "cpu"
        and y.dtype in (torch.float32, torch.float64)
        and r.dtype == y.dtype
        and (w is None or w.dtype == y.dtype)
        and get_backend() != "triton"
    ):
        if isinstance(norm, nn.LayerNorm):
            r = y + r
            return F.layer_norm(r, norm.normalized_shape, w, norm.bias, norm.eps), r
        if isinstance(norm, nn.RMSNorm):
            r = y + r
            eps = norm.eps if norm.eps is not None else torch.finfo(r.dtype).eps
            return F.rms_norm(r, norm.normalized_shape, w, eps), r
    kind = "rms" if isinstance(norm, nn.RMSNorm) else "layer"
    eps = norm.eps if norm.eps is not None else torch.finfo(r.dtype).eps
    return add_norm(y, r, norm.weight, getattr(norm, "bias", None), eps=eps, norm=kind)


def _write_state(state: State, new: State) -> None:
    """Put a layer's new state into its state dict's own tensors (replacing those whose shape changed)."""
    for k, t in new.items():
        buf = state[k]
        if t is buf:
            continue
        if isinstance(t, dict):
            _write_state(buf, t)
        elif t.shape == buf.shape:
            buf.copy_(t)
        else:  # a growing cache (attention without a window): it cannot stay in place
            state[k] = t


class HybridModel(nn.Module):
    """A compiled hybrid model.

    forward(x): x is [batch, seq, embed_dim] features, or [batch, seq] token ids when the model has a vocab.
    Returns [batch, hidden] (output=last), [batch, seq, hidden] (sequence) or logits [batch, seq, vocab].
    step(x_t, state): one position, x_t [batch, embed_dim] or [batch] ids; returns the output at that position.
    """

    def __init__(self, graph: Graph):
        super().__init__()
        from hybriddsl.trust import require_trust

        require_trust(graph)  # before any factory runs: custom code named in text needs trust_custom=True
        s = graph.settings
        self.hidden, self.vocab, self.output_mode = s["hidden"], s["vocab"], s["output"]
        self.embed_dim = s["embed_dim"]
        self.dropout = s["dropout"]
        self.hyb_source, self.hyb_file = graph.source, graph.file
        self.hyb_overrides: dict[str, Any] = dict(graph.directives.get("overrides", {}))
        self.blocks = nn.ModuleDict()
        self.plan: list[Step] = []
        self.embed: nn.Module = nn.Identity()
        self.pos: nn.Module | None = None
        self.head: nn.Linear | None = None
        pre = s["pre_norm"]
        for nid in graph.order():
            node = graph[nid]
            op, key = node["op"], node.get("weights") or ""
            if op == Op.IN_PROJ:
                if self.vocab:
                    self.embed = scales.embedding(self.vocab, self.hidden, s["embed_scale"])  # init: hybriddsl.init
                elif self.embed_dim != self.hidden:
                    self.embed = nn.Linear(self.embed_dim, self.hidden)
                self.plan.append(Step("in_proj", "", nid))
                if s["pos"] == "sinusoidal":
                    self.pos = SinusoidalEncoding(self.hidden)
                    self.plan.append(Step("pos", "", nid))
            elif op in (Op.NORM, Op.FINAL_NORM, Op.ADD_NORM):
                if key not in self.blocks:
                    self.blocks[key] = make_norm(node["kind"], self.hidden, node["opts"]["eps"])
                if op == Op.ADD_NORM:
                    self.plan.append(Step("add_norm", key, nid, not pre))
                else:
                    self.plan.append(Step("norm", key, nid, op == Op.NORM and not pre))
            elif op == Op.MIXER:
                if key not in self.blocks:
                    self.blocks[key] = build_module(node["kind"], node["opts"], self.hidden)
                self.plan.append(Step("mixer", key, nid, "y" if pre else "r"))
            elif op == Op.ADD:
                self.plan.append(Step("add", "", nid))
            elif op == Op.HEAD:
                self.head = scales.head(self.hidden, self.vocab, s["logit_scale"], s["logit_softcap"])
                if s["tie_embeddings"]:
                    self.head.weight = self.embed.weight
                self.plan.append(Step("head", "", nid))
            elif op == Op.OUTPUT:
                self.plan.append(Step("output", "", nid, self.output_mode))

    # ------------------------------------------------------------------------------------------ running the plan
    def _run(self, x: torch.Tensor, state: State | None, inplace: bool = False) -> tuple[torch.Tensor, State | None]:
        """Interpret the plan over a sequence (``state`` None: the parallel form) or one position (``step``).

        ``inplace`` (one position, what :class:`hybriddsl.streaming.Stream` runs): the new state goes into
        ``state``'s own tensors, which is returned. Layers with ``inplace_step`` write it there themselves; the
        others' new state is copied in (a tensor whose shape changed, a KV cache without a window, replaces
        the old one)."""
        stepping = state is not None
        new: State | None = state if inplace else ({"pos": state["pos"] + 1} if stepping else None)
        r = y = x
        for st in self.plan:
            if st.op == "in_proj":
                r = y = self.embed(x)
            elif st.op == "pos":  # a step adds the encoding of each row's own position ([batch])
                r = r + self.pos.table(state["pos"], r.dtype) if stepping else self.pos(r)
            elif st.op == "norm":
                y = self.blocks[st.key](r)
                if st.arg:  # post-norm: the stream itself is normed
                    r = y
            elif st.op == "mixer":
                inp = y if st.arg == "y" else r
                if not stepping:
                    y = self.blocks[st.key](inp)
                    if self.dropout and self.training:
                        y = F.dropout(y, self.dropout, True)
                elif not inplace:
                    y, new[st.node] = self.blocks[st.key].step(inp, state[st.node])
                elif getattr(self.blocks[st.key], "inplace_step", False):
                    y = self.blocks[st.key].step(inp, state[st.node], inplace=True)[0]
                else:
                    y, out = self.blocks[st.key].step(inp, state[st.node])
                    _write_state(state[st.node], out)
            elif st.op == "add":
                r = r + y
            elif st.op == "add_norm":
                y, r = _add_norm(y, r, self.blocks[st.key])
                if st.arg:
                    r = y
            elif st.op == "head":
                y = self.head(y)
            elif st.op == "output":
                if not stepping and st.arg == "last":
                    y = y[:, -1]
                break
        if inplace:
            state["pos"].add_(1)
        return y, new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, None)[0]

    def init_state(
        self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """Every layer's state before the first position (recurrent states, conv buffers, KV caches)."""
        p = next(self.parameters())
        device, dtype = device or p.device, dtype or p.dtype
        # per-row positions: a stream can restart one row of the batch (hybriddsl.streaming)
        state: State = {"pos": torch.zeros(batch, dtype=torch.long, device=device)}
        for st in self.plan:
            if st.op == "mixer":
                state[st.node] = self.blocks[st.key].init_state(batch, device=device, dtype=dtype)
        return state

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One position. x: [batch, embed_dim] (or [batch] ids). Returns (output [batch, ...], new state)."""
        return self._run(x, state)

    def stream(self, batch: int = 1, **kw: Any):
        """A :class:`hybriddsl.streaming.Stream`: push one frame, get one output, state kept in place."""
        from hybriddsl.streaming import Stream

        return Stream(self, batch, **kw)

    def aux_loss(self) -> torch.Tensor | float:
        """Sum of the auxiliary losses of the last forward (MoE load balancing); add it to the training loss."""
        return sum((m.aux_loss for m in self.modules() if isinstance(getattr(m, "aux_loss", None), torch.Tensor)), 0.0)

    def _repr_svg_(self) -> str | None:  # Jupyter: the diagram (None without Graphviz's dot: text instead)
        from hybriddsl.notebook import svg

        return svg(self)

    def _repr_pretty_(self, p, cycle: bool) -> None:  # IPython: the layer table
        from hybriddsl.notebook import pretty

        pretty(self, p, cycle)

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, output={self.output_mode}, steps={len(self.plan)}"

    def __repr__(self) -> str:
        """One line (layers by kind, parameters); ``print(model.blocks)`` shows the module tree."""
        from hybriddsl.ir import _layers_summary

        keys = [st.key for st in self.plan if st.op == "mixer"]  # weight keys: kind_i, or sharedN_kind
        kinds = [
            k.split("_", 1)[1].rsplit("_", 1)[0] + " (shared)" if k.startswith("shared") else k.rsplit("_", 1)[0]
            for k in keys
        ]
        n = sum(p.numel() for p in self.parameters())
        blocks = _layers_summary(kinds).replace("layer", "block", 1)  # companions (attention's FFN) count too
        return f"HybridModel({blocks}; {n:,} params; hidden {self.hidden}, output {self.output_mode})"


def lower(graph: Graph, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> HybridModel:
    """Build the PyTorch module for a graph that went through the pipeline; ``model.graph`` is that graph.

    Refuses (before any tensor exists) a graph that names custom code it was not trusted with, or whose
    parameters exceed the current limits (:mod:`hybriddsl.trust`, :mod:`hybriddsl.limits`)."""
    from hybriddsl import limits

    limits.check_budget(graph, device, dtype)
    if device is None or torch.device(device).type == "cpu":
        model = HybridModel(graph)  # no device context: its torch-function mode slows every init op ~2x
    else:
        with torch.device(device):
            model = HybridModel(graph)
    init_model(model, graph.settings)  # model-level rules: embedding, head, depth-scaled residual outputs
    if dtype is not None:
        model = model.to(dtype)
    model.graph = graph  # the diagram, the layer table and distributed wrapping read it
    return model
