"""Pass ``expand``: Program (AST) -> Graph. Unrolls repeats, expands ``block`` macros, splits Megatron letters.

The AST stops here. The result is a chain of pre-/post-norm residual blocks whose mixers carry the layer as
written (``attrs['entry']``: a :class:`hybriddsl.ir.LayerEntry`, name and options with positions), and
``graph.statements``: the settings, ``shared`` and ``tie`` statements as typed entries (``shared`` blocks
expanded like the stack). ``resolve`` turns entries into kinds and typed options.
"""

from __future__ import annotations

from collections.abc import Mapping

from hybriddsl import limits, registry
from hybriddsl.errors import HybNameError, HybOptionError, HybSyntaxError, Span
from hybriddsl.ir import Graph, LayerEntry, Op, SettingEntry, SharedEntry, Statements, TieEntry, Written
from hybriddsl.settings import model_setting
from hybriddsl.syntax import Group, Item, Layer, Parallel, Program, Repeat, Value

# Megatron-LM hybrid pattern letters, which real configs run together ("M-M-M-MM-M-M*-").
MEGATRON = {"M": "mamba", "*": "attention", "-": "ffn", "E": "moe"}


def expand(prog: Program) -> Graph:
    """Build the block chain of ``prog``. Raises HybSyntaxError/HybNameError with positions."""
    pre_norm = True
    for s in prog.settings:  # pre_norm decides the block shape, so it is read here (resolve checks its type)
        if s.scope is None and s.name == "pre_norm" and isinstance(s.value.value, bool):
            pre_norm = s.value.value
    g = Graph({"pre_norm": pre_norm}, prog.source, prog.file)
    src = g.add(Op.INPUT)
    proj = g.add(Op.IN_PROJ)
    g.connect(src, proj)
    out = g.add(Op.OUTPUT)
    if pre_norm:  # a post-norm stack already ends in a norm
        fin = g.add(Op.FINAL_NORM)
        g.connect(proj, fin)
        g.connect(fin, out)
    else:
        g.connect(proj, out)

    for name, block in prog.blocks.items():
        if registry.canonical(name) is not None:
            raise HybNameError(
                f"block '{block.name}' would hide the layer kind '{registry.canonical(name)}'; choose another name",
                block.span,
            )
    _check_size(prog)
    entries = flatten(prog.stack, prog)
    if not entries:
        raise HybSyntaxError("the model has no layers: write a stack such as 'M M A'", Span(1, 1, 1, prog.file))
    tail = proj
    for pos, entry in enumerate(entries, start=1):
        tail = g.add_block(tail, mixer={"entry": entry, "span": entry.span, "layer": pos}, norm={"layer": pos})
    g.statements = Statements(
        settings=tuple(SettingEntry(st.name, st.scope, _written(st.value), st.span) for st in prog.settings),
        shared=tuple(SharedEntry(tuple(flatten([st.item], prog)), tuple(st.positions), st.span) for st in prog.shared),
        ties=tuple(TieEntry(t.name, None if t.positions is None else tuple(t.positions), t.span) for t in prog.ties),
    )
    return g


def _written(v: Value) -> Written:
    return Written(v.value, v.span, v.name_span)


def _options(options: Mapping[str, Value]) -> dict[str, Written]:
    return {k: _written(v) for k, v in options.items()}


def flatten(items: list[Item], prog: Program, stack: tuple[str, ...] = ()) -> list[LayerEntry]:
    """Items -> a flat list of layers as written (parallel blocks nested in their entry's branches)."""
    out: list[LayerEntry] = []
    for item in items:
        if isinstance(item, Repeat):
            if item.count < 1:
                raise HybOptionError(f"a repeat count must be at least 1, got {item.count}", item.span)
            body = flatten([item.item], prog, stack)
            if len(body) * item.count + len(out) > limits.current().max_mixers:  # _check_size saw it first
                raise limits.exceeded(
                    "the stack's number of layers",
                    len(body) * item.count + len(out),
                    "max_mixers",
                    limits.current().max_mixers,
                    item.span,
                )
            out += body * item.count  # entries are frozen: the copies can share them
        elif isinstance(item, Group):
            out += flatten(item.items, prog, stack)
        elif isinstance(item, Parallel):
            branches = tuple(tuple(flatten(b, prog, stack)) for b in item.branches)
            out.append(LayerEntry("parallel", _options(item.options), item.span, branches))
        elif isinstance(item, Layer):
            out += _layer(item, prog, stack)
        if len(out) > limits.current().max_mixers:
            lim = limits.current().max_mixers
            raise limits.exceeded("the stack's number of layers", len(out), "max_mixers", lim, item.span)
    return out


def _layer(item: Layer, prog: Program, stack: tuple[str, ...]) -> list[LayerEntry]:
    key = item.name.lower()
    if key in prog.blocks:
        if key in stack:
            cycle = " -> ".join((*stack, key))
            raise HybNameError(f"block '{item.name}' uses itself ({cycle})", item.span)
        if item.options:
            raise HybOptionError(f"block '{item.name}' is a macro and takes no options", item.span)
        return flatten(prog.blocks[key].items, prog, (*stack, key))
    if registry.canonical(item.name) is None and len(item.name) > 1 and set(item.name) <= set(MEGATRON):
        # "MM" in a Megatron string: one layer per letter
        s = item.span
        return [LayerEntry(ch, {}, Span(s.line, s.column + i, 1, s.file)) for i, ch in enumerate(item.name)]
    if registry.canonical(item.name) is None and model_setting(item.name) is not None:
        raise HybSyntaxError(f"'{item.name}' is a setting: write '{item.name} = value'", item.span)
    return [LayerEntry(item.name, _options(item.options), item.span)]


def _check_size(prog: Program) -> None:
    """Count the mixers the program expands to (stack, parallel branches, macros, shared uses) and its nesting
    depth, without expanding anything; raise a positioned error over :mod:`hybriddsl.limits` before any work."""
    lim = limits.current()
    memo: dict[tuple[str, int], int] = {}  # (block, depth): a block's size, its depth checked where it is used

    def size(items: list[Item], depth: int, stack: tuple[str, ...]) -> int:
        n = 0
        for item in items:
            n += one(item, depth, stack)
            if n > lim.max_mixers:
                return n
        return n

    def one(item: Item, depth: int, stack: tuple[str, ...]) -> int:
        if depth > lim.max_depth:
            raise limits.exceeded("nesting depth (brackets and blocks)", depth, "max_depth", lim.max_depth, item.span)
        if isinstance(item, Repeat):
            n = one(item.item, depth, stack) * max(item.count, 0)
        elif isinstance(item, Group):
            n = size(item.items, depth + 1, stack)
        elif isinstance(item, Parallel):
            n = 1 + sum(size(b, depth + 1, stack) for b in item.branches)
        else:
            key = item.name.lower()
            if key not in prog.blocks or key in stack:  # a cycle is reported by flatten
                return 1
            if (key, depth) not in memo:
                memo[key, depth] = size(prog.blocks[key].items, depth + 1, (*stack, key))
            n = memo[key, depth]
        if n > lim.max_mixers:
            raise limits.exceeded("the layers this expands to", n, "max_mixers", lim.max_mixers, item.span)
        return n

    total = 0
    for item in prog.stack:  # item by item, so that the error points where the total crosses the limit
        total += one(item, 0, ())
        if total > lim.max_mixers:
            raise limits.exceeded("the stack's number of layers", total, "max_mixers", lim.max_mixers, item.span)
    for st in prog.shared:
        total += one(st.item, 0, ()) * len(st.positions)
        if total > lim.max_mixers:
            raise limits.exceeded("the layers built with shared blocks", total, "max_mixers", lim.max_mixers, st.span)
