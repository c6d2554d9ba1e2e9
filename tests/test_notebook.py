"""Notebook display: ``_repr_svg_`` gives the diagram (None without dot), ``_repr_pretty_`` the layer table."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

from hybriddsl import api, notebook
from hybriddsl.lower import lower

SRC = "hidden = 32\nM A GLA\nshared A(ffn=false)@1\n"


class Printer:
    """The part of IPython's PrettyPrinter that _repr_pretty_ uses."""

    def __init__(self):
        self.out = ""

    def text(self, s: str) -> None:
        self.out += s


def _labels(svg: str) -> str:
    return " ".join(t.text or "" for t in ET.fromstring(svg).iter() if t.tag.endswith("text"))


def test_svg_of_graph_and_model_is_the_diagram():  # needs Graphviz's dot, which .ci/run installs
    g = api.compile(SRC)
    svg = g._repr_svg_()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    labels = _labels(svg)
    for kind in ("mamba", "attention", "gla"):
        assert kind in labels
    model = api.parse_and_build(SRC)
    assert _labels(model._repr_svg_()) == labels


def test_svg_is_none_without_dot(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)  # rendering.svg looks dot up through shutil.which
    assert api.compile(SRC)._repr_svg_() is None
    assert api.parse_and_build(SRC)._repr_svg_() is None


def test_text_form_is_the_layer_table():
    g = api.compile(SRC)
    p = Printer()
    g._repr_pretty_(p, False)
    rows = [line.split()[:2] for line in p.out.splitlines()[3:]]
    kinds = [(g[n]["layer"], g[n]["kind"], g[n]["role"]) for n in g.mixers()]
    want = [[f"{pos}{ {'shared': 's', 'companion': '+'}.get(role, '') }", kind] for pos, kind, role in kinds]
    assert rows[: len(want)] == want
    assert f"parameters      {sum(p.numel() for p in api.parse_and_build(SRC).parameters()):,}" in p.out


def test_lowered_model_shows_its_own_graph():
    g = api.compile(SRC, hidden=48)
    model = lower(g)
    assert model.graph is g
    p = Printer()
    model._repr_pretty_(p, False)
    assert p.out.startswith("HybridModel") and "hidden 48" in p.out


def test_unfinished_graph_falls_back_to_the_ir_dump():
    g = api.compile(SRC, passes=[])  # expand only: no shapes or counts yet
    assert notebook.svg(g) is None
    assert notebook.text(g) == str(g)
