"""How checkpoint tensors become our state_dict entries and back: a :class:`Rule` per tensor of ours, or a
:class:`Group` where tensors of ours and of the checkpoint correspond only together.

A family module (``hybriddsl/interop/<family>.py``) describes its weights as a list of rules, usually built from
a declarative table per layer kind::

    MAMBA = {"in_proj.weight": "in_proj.weight", "conv1d.conv.weight": "conv1d.weight", ...}
    rules += table(MAMBA, ours=f"blocks.{mixer}.", theirs=f"backbone.layers.{i}.mixer.")

and uses a named transform where the layouts differ (``gated_up``: our SwiGLU ``up`` is HF's ``gate_proj`` and
``up_proj`` stacked; ``unsqueeze``/``squeeze`` for a conv weight stored without its channel axis). Each transform
is a pair of functions: ``load(*theirs) -> ours`` and ``save(ours) -> theirs`` (a tuple in the rule's order), so
the same rules serve import and export. A :class:`Group` maps several tensors of ours and several of theirs
as one (``load(*theirs) -> tuple of ours``, ``save(*ours) -> tuple of theirs``): one checkpoint tensor that
holds pieces of several of ours (Qwen3-Next's ``in_proj_qkvz`` is our q, k, v and gate projections interleaved
per head), built with :func:`pieces` / :func:`split0`.

A concatenation along dim 0 (``cat0``, ``GATED_UP``) costs no copy at import when the parts lie back to back in
one safetensors file, as ``gate_proj`` and ``up_proj`` do in every file safetensors writes (it orders tensors
by name): the loader then hands out one view spanning both (``Checkpoint.span``).

:func:`layer_keys` walks a built model's plan: for every mixer use, in stream order, the key of the norm
in front of it and of the mixer module (``blocks.<key>``); :func:`final_norm` the norm before the head.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported when a checkpoint is read, not when the converters load
    import torch

    from hybriddsl.lower import HybridModel


@dataclass(frozen=True)
class Transform:
    """``load(*their tensors) -> our tensor`` and its inverse ``save(ours) -> tuple of theirs``."""

    name: str
    load: Callable[..., torch.Tensor]
    save: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
    copies: bool = True  # load makes a new tensor (so the source pages can be released)
    concat0: bool = False  # load is torch.cat(theirs, 0): a view when they lie back to back in the file


SAME = Transform("same", lambda t: t, lambda t: (t,), copies=False)


def _cat0(*ts: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.cat(ts, 0)


def cat0(n: int = 2) -> Transform:
    """Our tensor is ``n`` of theirs stacked along dim 0 (equal parts): gate/up projections, q/k/v."""
    return Transform(f"cat0x{n}", _cat0, lambda t: tuple(t.chunk(n, 0)), concat0=True)


GATED_UP = cat0(2)  # our gated FFN's ``up`` = [gate_proj; up_proj] (layers/ffn.py: act(first half) * second)


def reshape(ours: tuple[int, ...], theirs: tuple[int, ...]) -> Transform:
    """Same data, another shape (e.g. a conv weight [C, 1, K] stored as [C, K])."""
    return Transform(
        f"reshape{theirs}->{ours}",
        lambda t: t.reshape(ours),
        lambda t: (t.reshape(theirs),),
        copies=False,
    )


@dataclass(frozen=True)
class Rule:
    """One tensor of ours (``ours``, a state_dict key) from the checkpoint tensors ``theirs``."""

    ours: str
    theirs: tuple[str, ...]
    transform: Transform = SAME

    def __post_init__(self):
        if isinstance(self.theirs, str):
            object.__setattr__(self, "theirs", (self.theirs,))

    # the interface the loader and the writer use for rules and groups alike
    @property
    def keys(self) -> tuple[str, ...]:
        return (self.ours,)

    @property
    def copies(self) -> bool:
        return self.transform.copies

    def load_all(self, *theirs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.transform.load(*theirs),)

    def save_all(self, *ours: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.transform.save(*ours)


@dataclass(frozen=True)
class Group:
    """Tensors of ours (``ours``) and of the checkpoint (``theirs``) that convert only together:
    ``load(*theirs) -> tuple in ours' order`` and ``save(*ours) -> tuple in theirs' order``."""

    ours: tuple[str, ...]
    theirs: tuple[str, ...]
    load: Callable[..., tuple[torch.Tensor, ...]]
    save: Callable[..., tuple[torch.Tensor, ...]]
    name: str = "group"
    copies: bool = True  # load makes new tensors (so the source pages can be released)

    def __post_init__(self):
        for f in ("ours", "theirs"):
            if isinstance(getattr(self, f), str):
                object.__setattr__(self, f, (getattr(self, f),))

    @property
    def keys(self) -> tuple[str, ...]:
        return self.ours

    def load_all(self, *theirs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.load(*theirs))

    def save_all(self, *ours: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.save(*ours))


def pieces(ours: list[str], theirs: str, split: Callable, join: Callable, name: str = "pieces") -> Group:
    """Our tensors ``ours`` are pieces of the one checkpoint tensor ``theirs``: ``split(t) -> list`` (in ours'
    order; each piece is copied, contiguous) and ``join(list) -> t``."""
    import torch

    def load(t):
        return tuple(p.clone(memory_format=torch.contiguous_format) for p in split(t))

    return Group(tuple(ours), (theirs,), load, lambda *ps: (join(list(ps)),), name)


def split0(ours: list[str], theirs: str, sizes: list[int]) -> Group:
    """Our tensors ``ours`` are the checkpoint tensor ``theirs`` cut along dim 0 into ``sizes`` rows: views of it
    at import (no copy), concatenated at export."""
    import torch

    return Group(
        tuple(ours),
        (theirs,),
        lambda t: tuple(t.split(list(sizes), 0)),
        lambda *ps: (torch.cat(ps, 0),),
        f"split0{list(sizes)}",
        copies=False,
    )


def table(mapping: dict[str, Any], ours: str, theirs: str, skip: tuple[str, ...] = ()) -> list[Rule]:
    """Rules from ``{our suffix: their suffix | (their suffixes, Transform)}`` under two prefixes."""
    out = []
    for o, t in mapping.items():
        if o in skip:
            continue
        if isinstance(t, tuple):
            names, tr = t
            names = (names,) if isinstance(names, str) else names
            out.append(Rule(ours + o, tuple(theirs + n for n in names), tr))
        else:
            out.append(Rule(ours + o, (theirs + t,)))
    return out


def present(rules: list[Rule | Group], model: HybridModel) -> list[Rule | Group]:
    """The rules whose tensors the model has (optional biases, norms): a table may list more than a layer uses.
    A group is kept when the model has all of its tensors."""
    keys = model.state_dict(keep_vars=True).keys()
    return [r for r in rules if all(k in keys for k in r.keys)]


@dataclass(frozen=True)
class LayerKeys:
    """One mixer use: the norm before it and the mixer module (keys in ``model.blocks``)."""

    norm: str | None
    mixer: str
    kind: str


def layer_keys(model: HybridModel) -> list[LayerKeys]:
    """Every mixer use in stream order with the norm that feeds it (shared blocks once per use)."""
    from hybriddsl import registry

    out, norm = [], None
    graph = getattr(model, "graph", None)
    for st in model.plan:
        if st.op in ("norm", "add_norm"):
            norm = st.key
        elif st.op == "mixer":
            kind = graph[st.node]["kind"] if graph is not None else type(model.blocks[st.key]).__name__.lower()
            out.append(LayerKeys(norm, st.key, registry.canonical(kind) or kind))
            norm = None
    return out


def final_norm(model: HybridModel) -> str | None:
    """The key of the norm after the last mixer (before the head), or None."""
    norm = None
    for st in model.plan:
        if st.op in ("norm", "add_norm"):
            norm = st.key
        elif st.op == "mixer":
            norm = None
    return norm


def embed_head(model: HybridModel, embed: str, head: str | None) -> list[Rule]:
    """The embedding and the LM head; a tied head reads the embedding (HF checkpoints then omit ``head``)."""
    out = [Rule("embed.weight", embed)]
    if model.head is not None:
        tied = model.head.weight is model.embed.weight
        out.append(Rule("head.weight", embed if tied or head is None else head))
    return out


def mamba_backbone(model, mixer: dict[str, Any]) -> list[Rule]:
    """Checkpoint names of the ``backbone.*`` layout that MambaForCausalLM and Mamba2ForCausalLM share: embeddings,
    one pre-norm and one mixer (named by the family's ``mixer`` table) per layer, ``norm_f``, the head."""
    rules = embed_head(model, "backbone.embeddings.weight", "lm_head.weight")
    for i, lk in enumerate(layer_keys(model)):
        rules.append(Rule(f"blocks.{lk.norm}.weight", f"backbone.layers.{i}.norm.weight"))
        rules += table(mixer, f"blocks.{lk.mixer}.", f"backbone.layers.{i}.mixer.")
    rules.append(Rule(f"blocks.{final_norm(model)}.weight", "backbone.norm_f.weight"))
    return present(rules, model)
