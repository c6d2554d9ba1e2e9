"""Lowering: Graph -> ``nn.Module``.

``lower`` builds the graph's plan (:mod:`hybriddsl.plan`: one typed step per node over the registers ``r``, the
residual stream, ``y``, the block branch, and ``x0``, the embedding output) and a module for each weight group,
stored in ``model.blocks[group]``, so shared and tied weights are one set of parameters. ``HybridModel._run``
interprets the plan; :mod:`hybriddsl.codegen` prints the same plan as source (``model.code``). The result is a
plain module: ``state_dict``, ``torch.save``, ``torch.compile`` and DDP/FSDP treat it like any other.

    pre-norm block:   norm  y = N(r)      mixer  y = M(y)      add  r = r + y
    fused:            add_norm  r = r + y; y = N(r)            (one kernel; the next block reads y)
    post-norm block:  mixer y = M(r)      add   r = r + y      norm r = y = N(r)
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hybriddsl import registry, scales
from hybriddsl.errors import HybError, LoweringError
from hybriddsl.init import init_model
from hybriddsl.ir import Graph, Op
from hybriddsl.plan import Step
from hybriddsl.plan import build as build_plan

State = dict[str, Any]


def build_module(kind: str, opts: dict[str, Any], hidden: int) -> nn.Module:
    """Instantiate one layer kind's module through the registry (errors become LoweringError)."""
    spec = registry.get(kind)
    try:
        return spec.factory(hidden, **opts)
    except HybError:
        raise
    except Exception as e:  # a factory bug or a user's custom factory failing: say which layer
        if isinstance(e, MemoryError) or "can't allocate memory" in str(e):  # a size mistake, not a bug
            asked = str(e).partition("you tried to allocate ")[2].partition(" bytes")[0]
            size = f" ({int(asked) / 2**30:,.0f} GiB for one tensor)" if asked.isdigit() else ""
            raise LoweringError(
                f"out of memory building a {kind} layer{size}: the model is too large for this machine "
                "(a smaller hidden, fewer or narrower layers?)"
            ) from None
        raise LoweringError(f"building a {kind} layer failed: {type(e).__name__}: {e}") from e


def make_norm(kind: str, hidden: int, eps: float) -> nn.Module:
    """LayerNorm or RMSNorm over the hidden dim."""
    return nn.RMSNorm(hidden, eps=eps) if kind == "rmsnorm" else nn.LayerNorm(hidden, eps=eps)


# the plan's ops as module constants: the interpreter compares them by identity, once per step
_MIXER, _ADD_NORM, _NORM, _ADD = Op.MIXER, Op.ADD_NORM, Op.NORM, Op.ADD
_IN_PROJ, _POS_ENC, _HEAD, _OUTPUT = Op.IN_PROJ, Op.POS_ENC, Op.HEAD, Op.OUTPUT


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


def add_norm(y: torch.Tensor, r: torch.Tensor, norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
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


_add_norm = add_norm  # the name that model.py files generated by earlier versions import


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
        self.embed: nn.Module = nn.Identity()
        self.pos: nn.Module | None = None
        self.head: nn.Linear | None = None
        plan = build_plan(graph)
        self.plan: list[Step] = plan.steps
        ops = {st.op for st in plan.steps}
        # built in stream order (embedding, blocks by first use, head): the random init draws in that order
        if Op.IN_PROJ in ops:
            if self.vocab:
                self.embed = scales.embedding(self.vocab, self.hidden, s["embed_scale"])  # init: hybriddsl.init
            elif self.embed_dim != self.hidden:
                self.embed = nn.Linear(self.embed_dim, self.hidden)
        if Op.POS_ENC in ops:
            self.pos = SinusoidalEncoding(self.hidden)
        for key, b in plan.blocks.items():
            if b.op == Op.NORM:
                self.blocks[key] = make_norm(b.kind, self.hidden, b.opts["eps"])
            else:
                self.blocks[key] = build_module(b.kind, b.opts, self.hidden)
        if Op.HEAD in ops:
            self.head = scales.head(self.hidden, self.vocab, s["logit_scale"], s["logit_softcap"])
            if s["tie_embeddings"]:
                self.head.weight = self.embed.weight

    # ------------------------------------------------------------------------------------------ running the plan
    def _run(self, x: torch.Tensor, state: State | None, inplace: bool = False) -> tuple[torch.Tensor, State | None]:
        """Interpret the plan over a sequence (``state`` None: the parallel form) or one position (``step``).

        ``inplace`` (one position, what :class:`hybriddsl.streaming.Stream` runs): the new state goes into
        ``state``'s own tensors, which is returned. Layers with ``inplace_step`` write it there themselves; the
        others' new state is copied in (a tensor whose shape changed, a KV cache without a window, replaces
        the old one)."""
        stepping = state is not None
        new: State | None = state if inplace else ({"pos": state["pos"] + 1} if stepping else None)
        blocks = self.blocks
        r = y = x0 = x
        for st in self.plan:  # the most frequent ops first: this loop is the streaming step's overhead
            op = st.op
            if op is _MIXER:
                inp = y if st.src == "y" else r if st.src == "r" else x0
                if st.use >= 0:  # a side block (zamba_shared): the stream, the embedding output, its use
                    if not stepping:
                        y = blocks[st.key](inp, x0, st.use)
                    else:
                        y, out = blocks[st.key].step(inp, state[st.node], x0=x0, use=st.use)
                        if inplace:
                            _write_state(state[st.node], out)
                        else:
                            new[st.node] = out
                elif not stepping:
                    y = blocks[st.key](inp)
                    if self.dropout and self.training:
                        y = F.dropout(y, self.dropout, True)
                elif not inplace:
                    y, new[st.node] = blocks[st.key].step(inp, state[st.node])
                elif getattr(blocks[st.key], "inplace_step", False):
                    y = blocks[st.key].step(inp, state[st.node], inplace=True)[0]
                else:
                    y, out = blocks[st.key].step(inp, state[st.node])
                    _write_state(state[st.node], out)
            elif op is _ADD_NORM:
                y, r = add_norm(y, r, blocks[st.key])
                if st.post:
                    r = y
            elif op is _NORM:
                y = blocks[st.key](y if st.src == "y" else r)
                if st.post:  # post-norm: the stream itself is normed
                    r = y
            elif op is _ADD:
                if st.side:  # a side block's output joins the next norm's input, not the stream
                    y = r + y
                else:
                    r = r + y
            elif op is _IN_PROJ:
                r = y = x0 = self.embed(x)
            elif op is _POS_ENC:  # a step adds the encoding of each row's own position ([batch])
                r = r + self.pos.table(state["pos"], r.dtype) if stepping else self.pos(r)
            elif op is _HEAD:
                y = self.head(y)
            elif op is _OUTPUT:
                if not stepping and st.mode == "last":
                    y = y[:, -1]
                break
            else:
                raise LoweringError(f"the plan has a step the interpreter does not run: {op!r}")
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
            if st.op is Op.MIXER:
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

    @property
    def code(self) -> str:
        """The model as readable PyTorch source (:func:`hybriddsl.codegen.generate` of its plan): a module whose
        ``Model`` class computes what this one does and loads its ``state_dict``."""
        from hybriddsl.codegen import generate

        return generate(self.graph)

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, output={self.output_mode}, steps={len(self.plan)}"

    def __repr__(self) -> str:
        """One line (layers by kind, parameters); ``print(model.blocks)`` shows the module tree."""
        from hybriddsl.ir import _layers_summary

        keys = [st.key for st in self.plan if st.op is Op.MIXER]  # weight keys: kind_i, or sharedN_kind
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
