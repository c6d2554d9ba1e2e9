"""The .hyb language: every statement parses to the AST it means; mistakes give positioned errors."""

from __future__ import annotations

import pytest

from hybriddsl import HybError, HybNameError, HybOptionError, HybSyntaxError, compile, parse
from hybriddsl.syntax import Group, Layer, Parallel, Repeat


def names(items):
    return [i.name for i in items]


def test_stack_settings_and_statements():
    p = parse("hidden = 512, heads = 8\nM M A M GLA FFN; shared attn@2,4,6\ntie A@1,3\nblock local = A(window=64) FFN")
    assert [(s.name, s.value.value) for s in p.settings] == [("hidden", 512), ("heads", 8)]
    assert names(p.stack) == ["M", "M", "A", "M", "GLA", "FFN"]
    assert p.shared[0].item.name == "attn" and [x for x, _ in p.shared[0].positions] == [2, 4, 6]
    assert p.ties[0].name == "A" and [x for x, _ in p.ties[0].positions] == [1, 3]
    assert names(p.blocks["local"].items) == ["A", "FFN"]
    assert p.blocks["local"].items[0].options["window"].value == 64


def test_repeat_group_parallel_and_options():
    p = parse("(M M A)*4 M*3 [M | A](mix=gate) A(heads=8, window=128, rope=true, act=swiglu, x=-1.5e-3)")
    rep, m3, par, a = p.stack
    assert isinstance(rep, Repeat) and rep.count == 4 and isinstance(rep.item, Group)
    assert names(rep.item.items) == ["M", "M", "A"]
    assert isinstance(m3, Repeat) and m3.count == 3 and m3.item.name == "M"
    assert isinstance(par, Parallel) and [names(b) for b in par.branches] == [["M"], ["A"]]
    assert par.options["mix"].value == "gate"
    opts = {k: v.value for k, v in a.options.items()}
    assert opts == {"heads": 8, "window": 128, "rope": True, "act": "swiglu", "x": -1.5e-3}


def test_options_attach_only_without_space():
    # `M (M A)*2` is a layer M followed by a repeated group, not M with options
    p = parse("M (M A)*2")
    assert isinstance(p.stack[0], Layer) and p.stack[0].options == {}
    assert isinstance(p.stack[1], Repeat)


def test_star_is_attention_unless_a_count_follows():
    p = parse("M* A")
    assert names(p.stack) == ["M", "*", "A"]
    p = parse("M * 2")
    assert isinstance(p.stack[0], Repeat) and p.stack[0].count == 2


def test_comments_newlines_semicolons_and_empty():
    p = parse("# a comment\n\nM  # trailing\n;;\nA\n")
    assert names(p.stack) == ["M", "A"]
    assert parse("").stack == [] and parse("# nothing\n").stack == []


def test_kind_scoped_setting():
    p = parse("mamba.state = 32")
    assert (p.settings[0].scope, p.settings[0].name, p.settings[0].value.value) == ("mamba", "state", 32)


NEMOTRON = "M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M-M-"


@pytest.mark.parametrize("pattern", ["M-M*-", "M-M-M-MM-M-M*-", NEMOTRON, "MM*-E-"])
def test_megatron_patterns_convert_letter_by_letter(pattern):
    letters = {"M": "mamba", "*": "attention", "-": "ffn", "E": "moe"}
    g = compile(pattern, hidden=16, heads=2, **{"attention.ffn": False, "mamba.state": 4})
    kinds = [g[n]["kind"] for n in g.mixers()]
    assert kinds == [letters[c] for c in pattern]


def test_aliases_are_case_insensitive():
    g = compile("m SSM attn * Ffn mlp - gla G", hidden=16, heads=2, **{"attention.ffn": False})
    assert [g[n]["kind"] for n in g.mixers()] == [
        "mamba",
        "mamba",
        "attention",
        "attention",
        "ffn",
        "ffn",
        "ffn",
        "gla",
        "gla",
    ]


# ---------------------------------------------------------------------------------------------- errors
def where(text: str, needle: str, occurrence: int = 1) -> tuple[int, int]:
    """1-based (line, column) of the n-th occurrence of needle in text: the position an error must name."""
    idx = -1
    for _ in range(occurrence):
        idx = text.index(needle, idx + 1)
    line = text.count("\n", 0, idx) + 1
    col = idx - (text.rfind("\n", 0, idx) + 1) + 1
    return line, col


@pytest.mark.parametrize(
    "text, needle, error, words",
    [
        ("M M\nA(heads 8)", "8", HybSyntaxError, "expected '='"),
        ("hidden =\nM", "\n", HybSyntaxError, "value"),
        ("M $ A", "$", HybSyntaxError, "unexpected character"),
        ("M M\nmamab A", "mamab", HybNameError, "did you mean 'mamba'"),
        ("M\nM(stat=8)", "stat", HybNameError, "did you mean 'state'"),
        ("M(state=1.5)", "1.5", HybOptionError, "integer"),
        ("M(state=true)", "true", HybOptionError, "integer"),
        ("A(heads=3)", "A", HybOptionError, "divide"),
        ("hidden = 64; A(heads=8, kv_heads=3)", "A", HybOptionError, "kv_heads"),
        ("M*0", "*0", HybOptionError, "at least 1"),
        ("M M; shared attn@2,7", "7", HybOptionError, "outside the stack"),
        ("M A M; tie A@1,2", "2", HybOptionError, "only 1 attention"),
        ("A(window=4) A(window=8); tie A", "tie", HybOptionError, "options differ"),
        ("block x = y\nblock y = x\nx", ("x", 2), HybNameError, "uses itself"),
        ("hiden = 64\nM", "hiden", HybNameError, "did you mean 'hidden'"),
        ("norm = batchnorm\nM", "batchnorm", HybOptionError, "layernorm"),
        ("output = logits\nM", "logits", HybOptionError, "vocab"),
        ("M(state=-4)", "-4", HybOptionError, ">= 1"),
        ("A(window=0)", "0", HybOptionError, "window"),
    ],
)
def test_errors_name_file_line_column(text, needle, error, words):
    with pytest.raises(error) as info:
        compile(text, hidden=64) if "hidden" not in text else compile(text)
    e = info.value
    assert words in e.message, e.message
    line, col = where(text, *needle) if isinstance(needle, tuple) else where(text, needle)
    assert (e.span.line, e.span.column) == (line, col), str(e)
    shown = str(e)
    assert shown.startswith(f"<string>:{line}:{col}:")
    assert "^" in shown.splitlines()[-1]  # the caret line under the source line


def test_error_in_file_names_the_file(tmp_path):
    f = tmp_path / "bad.hyb"
    f.write_text("M M\nM(states=3)\n")
    with pytest.raises(HybNameError) as info:
        compile(f)
    assert str(info.value).startswith(f"{f}:2:3:")


def test_setting_written_as_layer_is_explained():
    with pytest.raises(HybError, match="is a setting"):
        compile("hidden")
