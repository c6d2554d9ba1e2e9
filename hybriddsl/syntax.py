"""Text -> AST: the lark parser for .hyb files, and syntax errors with positions.

The grammar lives in ``grammar/hyb.lark`` (a copy ships inside the package). ``parse`` returns a
:class:`Program`; names are not resolved here (that is the ``resolve`` pass), so ``mamab`` parses and is reported
later with a suggestion.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union

import lark
from lark import Token, Transformer, v_args

from hybriddsl.errors import HybError, HybOptionError, HybSyntaxError, Span


# ---------------------------------------------------------------------------------------------------- the AST
@dataclass
class Value:
    """An option or setting value as written: int, float, bool, str or None."""

    value: Any
    span: Span
    name_span: Span | None = None  # where the option's name stands (for "no such option" errors)


@dataclass
class Layer:
    """A layer reference: a name (layer kind, alias or block macro) with options."""

    name: str
    options: dict[str, Value]
    span: Span


@dataclass
class Group:
    """A parenthesized sequence, e.g. ``(M M A)``."""

    items: list[Item]
    span: Span


@dataclass
class Parallel:
    """``[M | A](mix=gate)``: branches that see the same input; outputs combined."""

    branches: list[list[Item]]
    options: dict[str, Value]
    span: Span


@dataclass
class Repeat:
    """``item*count``."""

    item: Item
    count: int
    span: Span


Item = Union[Layer, Group, Parallel, Repeat]  # noqa: UP007  (a runtime alias; X | Y needs 3.10 classes)


@dataclass
class Setting:
    """``hidden = 512`` (model-wide) or ``mamba.state = 32`` (default for one kind)."""

    name: str
    scope: str | None
    value: Value
    span: Span


@dataclass
class Shared:
    """``shared attn@2,4,6``: one block, one set of weights, applied after those stack positions."""

    item: Item
    positions: list[tuple[int, Span]]
    span: Span


@dataclass
class Tie:
    """``tie A@1,3``: the 1st and 3rd layers of that kind share weights (all of them without positions)."""

    name: str
    positions: list[tuple[int, Span]] | None
    span: Span


@dataclass
class Define:
    """``block local = A(window=64) FFN``: a named macro usable like a layer name."""

    name: str
    items: list[Item]
    span: Span


@dataclass
class Program:
    """A parsed .hyb file. Only the stack keeps statement order; the rest apply wherever they stand."""

    stack: list[Item] = field(default_factory=list)
    settings: list[Setting] = field(default_factory=list)
    shared: list[Shared] = field(default_factory=list)
    ties: list[Tie] = field(default_factory=list)
    blocks: dict[str, Define] = field(default_factory=dict)
    source: str = ""
    file: str = "<string>"


# ---------------------------------------------------------------------------------------------------- the parser
@functools.lru_cache(maxsize=1)
def grammar_text() -> str:
    """The grammar, from the installed package (or the repository's grammar/ when run from a checkout)."""
    try:
        return resources.files("hybriddsl").joinpath("grammar/hyb.lark").read_text()
    except (FileNotFoundError, OSError):
        return (Path(__file__).resolve().parent.parent / "grammar" / "hyb.lark").read_text()


@functools.lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    return lark.Lark(grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=False)


def _span(meta_or_tok: Any, file: str) -> Span:
    if isinstance(meta_or_tok, Token):
        return Span(meta_or_tok.line, meta_or_tok.column, max(1, len(str(meta_or_tok))), file)
    m = meta_or_tok
    if getattr(m, "empty", True) and not hasattr(m, "line"):
        return Span.none(file)
    length = m.end_pos - m.start_pos if m.end_line == m.line else 1
    return Span(m.line, m.column, max(1, length), file)


_WORDS = {"true": True, "false": False, "none": None, "null": None}


class _ToAST(Transformer):
    """lark tree -> AST dataclasses (one method per grammar rule)."""

    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _s(self, x: Any) -> Span:
        return _span(x, self.file)

    @v_args(meta=True)
    def start(self, meta, children):
        prog = Program(file=self.file)
        for c in children:
            if isinstance(c, list) and c and isinstance(c[0], Setting):
                prog.settings += c
            elif isinstance(c, _Stack):
                prog.stack += c.items
            elif isinstance(c, Shared):
                prog.shared.append(c)
            elif isinstance(c, Tie):
                prog.ties.append(c)
            elif isinstance(c, Define):
                if c.name.lower() in prog.blocks:
                    raise HybSyntaxError(f"block '{c.name}' is defined twice", c.span)
                prog.blocks[c.name.lower()] = c
        return prog

    def settings(self, children):
        return list(children)

    @v_args(meta=True)
    def assign(self, meta, children):
        if len(children) == 3:
            scope, name, value = children
            return Setting(str(name), str(scope), value, self._s(meta))
        name, value = children
        return Setting(str(name), None, value, self._s(meta))

    @v_args(meta=True)
    def shared(self, meta, children):
        item, positions = children
        return Shared(item, positions, self._s(meta))

    @v_args(meta=True)
    def tie(self, meta, children):
        name = children[0]
        return Tie(str(name), children[1] if len(children) > 1 else None, self._s(meta))

    @v_args(meta=True)
    def define(self, meta, children):
        name, items = children
        return Define(str(name), items, self._s(name))

    def stack(self, children):
        return _Stack(children[0])

    def sequence(self, children):
        return list(children)

    @v_args(meta=True)
    def item(self, meta, children):
        if len(children) == 1:
            return children[0]
        atom, rep = children
        count = int(str(rep).lstrip("*").strip())
        return Repeat(atom, count, self._s(rep))

    @v_args(meta=True)
    def group(self, meta, children):
        return Group(children[0], self._s(meta))

    @v_args(meta=True)
    def parallel(self, meta, children):
        branches = [c for c in children if isinstance(c, list)]
        opts = self._options([c for c in children if isinstance(c, tuple)])
        return Parallel(branches, opts, self._s(meta))

    def layer(self, children):
        tok = children[0]
        name = str(tok).rstrip("(")
        span = Span(tok.line, tok.column, len(name), self.file)
        return Layer(name, self._options(children[1:]), span)

    def star(self, children):
        return Layer("*", {}, self._s(children[0]))

    def dash(self, children):
        return Layer("-", {}, self._s(children[0]))

    def _options(self, pairs: list[tuple[Token, Value]]) -> dict[str, Value]:
        out: dict[str, Value] = {}
        for name, value in pairs:
            if str(name) in out:
                raise HybSyntaxError(f"option '{name}' is given twice", self._s(name))
            value.name_span = self._s(name)
            out[str(name)] = value
        return out

    def option(self, children):
        return children[0], children[1]

    def number(self, children):
        tok = children[0]
        text = str(tok)
        is_int = all(c.isdigit() or c in "+-" for c in text)
        return Value(int(text) if is_int else float(text), self._s(tok))

    def string(self, children):
        tok = children[0]
        return Value(str(tok)[1:-1], self._s(tok))

    def word(self, children):
        tok = children[0]
        return Value(_WORDS.get(str(tok).lower(), str(tok)), self._s(tok))

    def positions(self, children):
        return [(int(str(t)), self._s(t)) for t in children]


@dataclass
class _Stack:
    items: list[Item]


# Known mistakes, recognised by the parser state they fail in (lark's match_examples).
_EXAMPLES: dict[str, list[str]] = {
    "a setting needs a value after '='": ["hidden =", "hidden = \n", "M(heads=)"],
    "options are written name=value, separated by commas": [
        "M(8)",
        "M(state)",
        "M(state 8)",
        "A(heads=8 window=4)",
    ],
    "'shared' needs a layer and positions, as in 'shared attn@2,4'": [
        "shared",
        "shared attn",
        "shared attn@",
    ],
    "positions are whole numbers separated by commas, as in '@2,4,6'": [
        "shared attn@x",
        "tie A@1,",
        "tie A@",
    ],
    "'block' needs a name, '=' and layers, as in 'block local = A FFN'": ["block", "block x", "block x ="],
    "a parallel block needs at least two branches separated by '|', as in '[M | A]'": ["[M]", "[]", "[M |]"],
    "an unclosed '(' or '['": ["(M M", "[M | A", "M(heads=8", "(M"],
    "a ')' or ']' without its opening bracket": ["M)", "M]", ")"],
    "a repeat count follows '*' directly, as in 'M*3' or '(M A)*2'": ["M*x", "(M A)*"],
}


def _describe(tok_type: str) -> str:
    names = {
        "NAME": "a name",
        "INT": "a whole number",
        "SIGNED_NUMBER": "a number",
        "STRING": "a string",
        "LPAR": "'('",
        "CALL": "a layer with options",
        "CLOSE_CALL": "'](' (options of a parallel block)",
        "RPAR": "')'",
        "LSQB": "'['",
        "RSQB": "']'",
        "EQUAL": "'='",
        "COMMA": "','",
        "AT": "'@'",
        "VBAR": "'|'",
        "DOT": "'.'",
        "SEMICOLON": "';'",
        "_NL": "a new line",
        "REPEAT": "'*N'",
        "STAR": "'*'",
        "DASH": "'-'",
        "$END": "the end of the file",
    }
    return names.get(tok_type, tok_type.lower().replace("_", " "))


def _expected(exc: lark.UnexpectedInput) -> str:
    exp = sorted({_describe(e) for e in (getattr(exc, "expected", None) or getattr(exc, "allowed", None) or [])})
    if not exp:
        return ""
    return "; expected " + (exp[0] if len(exp) == 1 else ", ".join(exp[:-1]) + " or " + exp[-1])


def _syntax_error(exc: lark.UnexpectedInput, text: str, file: str) -> HybSyntaxError:
    # Labels describe parser states; a stray character says nothing about the state, so it gets none.
    label = None
    if not isinstance(exc, lark.UnexpectedCharacters):
        try:
            label = exc.match_examples(_parser().parse, _EXAMPLES, use_accepts=True)
        except Exception:  # lark's matcher itself can fail on odd parser states; the plain message remains
            label = None
    line, col = max(exc.line, 1) if exc.line != -1 else 1, max(exc.column, 1) if exc.column != -1 else 1
    if isinstance(exc, lark.UnexpectedEOF) or getattr(getattr(exc, "token", None), "type", "") == "$END":
        lines = text.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
        what = "unexpected end of input"
    elif isinstance(exc, lark.UnexpectedCharacters):
        what = f"unexpected character {text[exc.pos_in_stream]!r}"
    else:
        tok = exc.token  # type: ignore[attr-defined]
        what = "unexpected new line" if tok.type == "_NL" else f"unexpected '{tok}'"
    msg = f"{label}: {what}" if label else what + _expected(exc)
    return HybSyntaxError(msg, Span(line, col, 1, file), text)


# One cheap pass over the text before lark sees it: comments and strings are skipped, brackets nest.
_SCAN = re.compile(r"#[^\n]*|\"[^\"\n]*\"|'[^'\n]*'|[()\[\]]|[A-Za-z_]\w*|\d[\d.]*(?:[eE][+-]?\d+)?|\S")


def _at(text: str, pos: int, length: int, file: str) -> Span:
    line = text.count("\n", 0, pos) + 1
    return Span(line, pos - text.rfind("\n", 0, pos), max(1, length), file)


def check_limits(text: str, file: str = "<string>") -> None:
    """Refuse, before parsing, a text over the limits (:mod:`hybriddsl.limits`): its size, its number of
    tokens, its bracket nesting and the length of its numbers. Parsing is then bounded in time and depth."""
    from hybriddsl import limits

    lim = limits.current()
    if len(text) > lim.max_source_bytes or len(text.encode("utf-8", "surrogatepass")) > lim.max_source_bytes:
        size = len(text.encode("utf-8", "surrogatepass"))
        span = Span(0, 0, 1, file)
        raise limits.exceeded("the source's size in bytes", size, "max_source_bytes", lim.max_source_bytes, span)
    depth = tokens = 0
    for m in _SCAN.finditer(text):
        tok = m.group()
        if tok[0] in "#\"'":
            continue
        tokens += 1
        if tokens > lim.max_tokens:
            span = _at(text, m.start(), len(tok), file)
            raise limits.exceeded("the source's number of tokens", tokens, "max_tokens", lim.max_tokens, span)
        if tok in "([":
            depth += 1
            if depth > lim.max_depth:
                span = _at(text, m.start(), 1, file)
                raise limits.exceeded("bracket nesting", depth, "max_depth", lim.max_depth, span)
        elif tok in ")]":
            depth = max(0, depth - 1)
        elif tok[0].isdigit() and len(tok) > lim.max_number_length:
            span = _at(text, m.start(), len(tok), file)
            raise limits.exceeded("a number's length", len(tok), "max_number_length", lim.max_number_length, span)


def parse(text: str, file: str = "<string>") -> Program:
    """Parse .hyb source into a :class:`Program`. Raises HybSyntaxError with file:line:col.

    The text is checked against the limits first (size, tokens, nesting, number length: ``check_limits``)."""
    if not isinstance(text, str):
        raise HybSyntaxError(f"expected .hyb source text, got {type(text).__name__}", Span.none(file))
    text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark, as some Windows editors write
    try:
        check_limits(text, file)  # size, tokens, bracket nesting (within Python's recursion limit), numbers
    except HybError as e:
        raise e.with_source(text, file) from None
    try:
        tree = _parser().parse(text + ("\n" if not text.endswith("\n") else ""))
    except lark.UnexpectedInput as exc:
        err = _syntax_error(exc, text, file)
        err.hint = err.hint or _space_hint(text, err.span)
        raise err from None
    try:
        prog = _ToAST(file).transform(tree)
    except lark.exceptions.VisitError as exc:  # errors raised inside transformer methods arrive wrapped
        inner = exc.orig_exc
        if isinstance(inner, HybError):
            raise inner.with_source(text, file) from None
        raise HybSyntaxError(f"cannot read this text: {type(inner).__name__}: {inner}", Span(0, 0, 1, file)) from None
    prog.source, prog.file = text, file
    _check_duplicates(prog)
    return prog


def _space_hint(text: str, span: Span | None) -> str:
    """The hint for ``A (heads=4)``: options attach to the name, without a space before '('."""
    if span is None or not span.line:
        return ""
    lines = text.splitlines()
    if span.line > len(lines):
        return ""
    before = lines[span.line - 1][: max(span.column - 1, 0)]
    import re

    m = re.search(r"([A-Za-z_*-][\w.]*)\s+\(\s*[A-Za-z_]\w*\s*$", before)
    if not m or not lines[span.line - 1][span.column - 1 :].startswith("="):
        return ""
    return f"options attach to the layer name with no space before '(': write {m.group(1)}(...)"


def _check_duplicates(prog: Program) -> None:
    """A setting written twice is an error naming both places (which one should win is not obvious)."""
    seen: dict[tuple[str | None, str], Setting] = {}
    for st in prog.settings:
        key = (st.scope, st.name)
        if key in seen:
            first = seen[key].span
            name = f"{st.scope}.{st.name}" if st.scope else st.name
            raise HybOptionError(
                f"setting '{name}' is given twice: at line {first.line}, column {first.column} and here",
                st.span,
                prog.source,
                hint="keep one of them (--set on the command line overrides a file's setting)",
            )
        seen[key] = st
