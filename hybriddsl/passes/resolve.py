"""Pass ``resolve``: names -> kinds, settings -> typed model settings, options -> checked typed values.

Precedence of an option's value: the kind's default < a model-wide setting of that name (``heads = 8``) <
a kind-scoped setting (``attention.heads = 8``) < the option written on the layer. Every check happens here,
before any tensor exists, and every error points at the text that caused it. Kinds that bring sub-blocks
(attention's FFN, RWKV's channel mix, Griffin's MLP) get them inserted as their own residual blocks.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

from hybriddsl import limits, registry
from hybriddsl.errors import HybError, HybNameError, HybOptionError, Span, suggest
from hybriddsl.ir import Graph, LayerEntry, Op, Resolved, SettingEntry
from hybriddsl.settings import MODEL_SETTINGS, model_setting


def resolve(graph: Graph) -> Graph:
    """Resolve every mixer of ``graph`` and every ``shared`` statement's layers; returns a new graph with
    ``settings`` filled in."""
    g = graph.copy()
    settings, defaults = _settings(g.statements.settings)
    g.settings.update(settings)
    hidden = settings["hidden"]
    counters: dict[str, int] = {}
    for nid in g.mixers():
        node = g[nid]
        entry: LayerEntry = node.pop("entry")
        kind, opts = resolve_layer(entry, defaults, hidden)
        node.update(kind=kind, opts=opts, weights=_group(counters, kind))
        tail = g.succs(nid)[0] if settings["pre_norm"] else g.succs(g.succs(nid)[0])[0]
        for sub in companions(kind, opts, entry.span, defaults, hidden):
            attrs = dict(
                kind=sub.kind,
                opts=sub.opts,
                weights=_group(counters, sub.kind),
                role="companion",
                layer=node["layer"],
                span=node["span"],
                parent=nid,
            )
            tail = g.add_block(tail, mixer=attrs, norm={"layer": node["layer"]})
    if settings["vocab"]:  # token model: an LM head before the output
        (out,) = g.nodes(Op.OUTPUT)
        (prev,) = g.preds(out)
        g.insert_after(prev, Op.HEAD)
    if settings["pos"] == "sinusoidal":  # added to the embedded input (rope lives inside attention)
        (proj,) = g.nodes(Op.IN_PROJ)
        g.insert_after(proj, Op.POS_ENC, kind="sinusoidal")
    for nid in g.nodes(Op.NORM, Op.FINAL_NORM):
        g[nid].update(kind=settings["norm"], opts={"eps": settings["norm_eps"]}, weights=_group(counters, "norm"))
    shared = []
    for st in g.statements.shared:  # resolved here, inserted by insert_shared
        layers: list[Resolved] = []
        for e in st.layers:
            kind, opts = resolve_layer(e, defaults, hidden)
            layers += [Resolved(kind, opts, e.span), *companions(kind, opts, e.span, defaults, hidden)]
        shared.append(replace(st, resolved=tuple(layers)))
    g.statements = replace(g.statements, shared=tuple(shared))
    return g


def companions(kind: str, opts: dict[str, Any], span: Span | None, defaults: Defaults, hidden: int) -> list[Resolved]:
    """The sub-blocks a resolved layer brings (attention's FFN, RWKV's channel mix), resolved, in stream order."""
    spec = registry.get(kind)
    if spec.companions is None:
        return []
    return [
        Resolved(*resolve_layer(LayerEntry(ck, {}, span), defaults, hidden, preset=co), span)
        for ck, co in spec.companions(opts)
    ]


def _group(counters: dict[str, int], kind: str) -> str:
    i = counters.get(kind, 0)
    counters[kind] = i + 1
    return f"{kind}_{i}"


class Defaults(NamedTuple):
    """Option values that settings give: to every kind with that option (``heads = 8``) and to one kind
    (``attention.heads = 8``), each with the position of the setting."""

    common: dict[str, tuple[Any, Span | None]]
    scoped: dict[str, dict[str, tuple[Any, Span | None]]]


def resolve_layer(
    entry: LayerEntry, defaults: Defaults, hidden: int, preset: dict[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    """(kind, checked options) for one layer as written."""
    span = entry.span
    try:
        spec = registry.get(entry.name)
    except HybNameError as e:
        raise HybNameError(e.message, span) from None
    opts: dict[str, Any] = spec.defaults()
    where: dict[str, Span | None] = {}
    for name, (value, vspan) in defaults.common.items():
        if spec.option(name) is not None:
            opts[name], where[name] = value, vspan
    for name, (value, vspan) in defaults.scoped.get(spec.name, {}).items():
        opts[name], where[name] = value, vspan
    if entry.name == "*" and preset is None:  # Megatron's attention letter: its MLP is a letter of its own
        preset = {"ffn": False}
    opts.update(preset or {})
    for name, val in entry.options.items():
        if spec.option(name) is None and spec.open_options:  # e.g. custom: the user's factory takes it
            opts[name] = val.value
            continue
        if spec.option(name) is None:
            known = [o.name for o in spec.options]
            listing = f" (it takes: {', '.join(known)})" if known else " (it takes no options)"
            raise HybNameError(
                f"layer '{spec.name}' has no option '{name}'" + suggest(name, known) + listing,
                val.name_span or val.span,
            )
        opts[name], where[name] = val.value, val.span
    for o in spec.options:
        msg = o.check(opts[o.name])
        if msg:
            raise HybOptionError(f"{spec.name}: {msg}", where.get(o.name) or span)
        opts[o.name] = o.coerce(opts[o.name])
    if isinstance(opts.get("experts"), int) and opts["experts"] > limits.current().max_experts:
        lim = limits.current().max_experts
        raise limits.exceeded(
            "the number of experts", opts["experts"], "max_experts", lim, where.get("experts") or span
        )
    if spec.name == "parallel":
        opts["branches"] = [
            [dict(zip(("kind", "opts"), resolve_layer(b, defaults, hidden))) for b in branch]
            for branch in entry.branches
        ]
    if spec.validate is not None:
        msg = spec.validate(opts, hidden)
        if msg:
            raise HybOptionError(f"{spec.name}: {msg}", span)
    return spec.name, opts


def _settings(stmts: tuple[SettingEntry, ...]) -> tuple[dict[str, Any], Defaults]:
    """Split setting statements into model settings and option defaults (for all kinds, and kind-scoped)."""
    model: dict[str, Any] = {o.name: o.default for o in MODEL_SETTINGS}
    spans: dict[str, Span] = {}
    layer_defaults: dict[str, tuple[Any, Span]] = {}
    scoped: dict[str, dict[str, tuple[Any, Span]]] = {}
    option_names = {o.name for s in registry.specs() for o in s.options}
    for st in stmts:
        val = st.value
        if st.scope is not None:
            spec = _scoped_spec(st)
            opt = spec.option(st.name)
            if opt is None:
                known = [o.name for o in spec.options]
                raise HybNameError(f"layer '{spec.name}' has no option '{st.name}'" + suggest(st.name, known), st.span)
            msg = opt.check(val.value)
            if msg:
                raise HybOptionError(f"{spec.name}: {msg}", val.span)
            scoped.setdefault(spec.name, {})[st.name] = (opt.coerce(val.value), val.span)
            continue
        ms = model_setting(st.name)
        if ms is None and st.name not in option_names:
            known = [o.name for o in MODEL_SETTINGS] + sorted(option_names)
            raise HybNameError(f"unknown setting '{st.name}'" + suggest(st.name, known), st.span)
        if ms is not None:
            msg = ms.check(val.value)
            if msg:
                raise HybOptionError(msg.replace("option", "setting", 1), val.span)
            model[st.name], spans[st.name] = ms.coerce(val.value), val.span
        if st.name in option_names:
            layer_defaults[st.name] = (val.value, val.span)
    if model["pos"] == "rope" and "rope" not in layer_defaults:  # rotary positions live inside attention
        layer_defaults["rope"] = (True, spans["pos"])
    if model["output"] is None:
        model["output"] = "logits" if model["vocab"] else "last"
    if model["output"] == "logits" and not model["vocab"]:
        raise HybOptionError("output = logits needs a vocabulary: set 'vocab = N'", spans.get("output"))
    for k in ("embed_scale", "logit_scale", "logit_softcap"):  # they scale token embeddings and logits
        if k in spans and not model["vocab"]:
            raise HybOptionError(f"{k} scales token embeddings or logits: set 'vocab = N'", spans[k])
    if model["embed_dim"] is not None and model["vocab"]:
        raise HybOptionError(
            "set either embed_dim (feature input) or vocab (token input), not both", spans.get("embed_dim")
        )
    if model["embed_dim"] is None:
        model["embed_dim"] = model["hidden"]
    return model, Defaults(layer_defaults, scoped)


def _scoped_spec(st: SettingEntry) -> registry.LayerSpec:
    try:
        return registry.get(st.scope)
    except HybError as e:
        raise HybNameError(e.message, st.span) from None
