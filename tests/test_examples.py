"""Every example compiles, builds, runs forward and backward, and renders; docs/layers.md is current."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import hybriddsl
from hybriddsl.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.hyb"))


def test_there_are_examples():
    names = {p.stem for p in EXAMPLES}
    assert {"jamba", "zamba", "griffin", "nemotron_h", "mamba_gla", "everything"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_compiles_runs_and_renders(path, tmp_path, capsys):
    assert main(["check", str(path)]) == 0
    # the examples' own sizes, shrunk so the forward/backward stays fast on CPU
    model = hybriddsl.parse_and_build(path, hidden=64, seq_len=64)
    assert model.graph.totals["params"] == sum(p.numel() for p in model.parameters())
    s = model.graph.settings
    x = torch.randint(0, s["vocab"], (2, 12)) if s["vocab"] else torch.randn(2, 12, s["embed_dim"])
    y = model(x)
    assert torch.isfinite(y).all()
    y.backward(torch.randn_like(y))
    out = tmp_path / f"{path.stem}.svg"
    assert main(["render", str(path), "-o", str(out)]) == 0
    assert out.read_text().lstrip().startswith("<?xml") or "<svg" in out.read_text()[:500]


def test_layers_reference_is_current():
    from hybriddsl.cli.layers import markdown

    assert (ROOT / "docs" / "layers.md").read_text() == markdown(), "run: hybdsl layers --markdown > docs/layers.md"
