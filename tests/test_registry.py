"""The layer registry: user kinds next to the built-in ones, building nested kinds."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hybriddsl import registry
from hybriddsl.registry import LayerSpec

ROOT = Path(__file__).resolve().parents[1]


def test_register_before_the_first_lookup_keeps_the_built_in_kinds():
    # A fresh interpreter: in this one the built-ins are loaded already. Regression: registering first made the
    # registry look non-empty, so the built-ins were never imported and compile("M") said "unknown layer".
    code = textwrap.dedent(
        """
        import torch
        from hybriddsl import compile, registry

        class Scale(torch.nn.Module):  # the layer contract, without importing hybriddsl.layers
            def __init__(self, hidden):
                super().__init__()
                self.w = torch.nn.Parameter(torch.ones(hidden))
            def forward(self, x):
                return x * self.w
            def state_bytes(self, seq_len, dtype_bytes=4):
                return 0

        registry.register(registry.LayerSpec(name="my_scale", aliases=("MYS",), letter="S", summary="", factory=Scale))
        g = compile("M MYS", hidden=16, **{"mamba.state": 4})
        print(sorted(g[n]["kind"] for n in g.mixers()))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['mamba', 'my_scale']"


def test_register_refuses_a_built_in_name():
    spec = registry.get("ffn")
    with pytest.raises(ValueError, match="already used by 'mamba'"):
        registry.register(LayerSpec(name="mine", aliases=("M",), letter="X", summary="", factory=spec.factory))
    assert registry.canonical("mine") is None  # nothing half-registered


def test_build_fills_defaults_and_builds_one_layer():
    import torch

    from hybriddsl.layers.mamba2 import Mamba2

    m = registry.build("M2", {"state": 8, "head_dim": 16}, 32)
    assert isinstance(m, Mamba2) and m.state == 8 and m.head_dim == 16
    assert m.chunk == registry.get("mamba2").option("chunk").default  # not given: the spec's default
    assert m(torch.randn(2, 5, 32)).shape == (2, 5, 32)


def test_build_makes_branch_modules_first():
    import torch

    from hybriddsl.layers.ffn import FFN
    from hybriddsl.layers.gru import GRU

    branches = [[{"kind": "ffn", "opts": {"mult": 2.0}}], [{"kind": "gru", "opts": {}}, {"kind": "ffn", "opts": {}}]]
    p = registry.build("parallel", {"branches": branches, "mix": "sum"}, 16)
    assert [[type(m) for m in b] for b in p.branches] == [[FFN], [GRU, FFN]]
    assert p.branches[0][0].up.out_features == 32  # the branch's own option; the other FFN keeps mult = 4
    assert p.branches[1][1].up.out_features == 64
    x = torch.randn(2, 3, 16)
    want = p.branches[0][0](x) + p.branches[1][1](p.branches[1][0](x))  # mix = sum, each branch in series
    torch.testing.assert_close(p(x), want)


def test_build_names_the_kind_when_a_factory_fails(monkeypatch):
    import dataclasses

    from hybriddsl import lower
    from hybriddsl.errors import LoweringError

    def broken(hidden_size, **opts):
        raise RuntimeError("no luck")

    spec = registry.get("gru")
    monkeypatch.setitem(registry._SPECS, "gru", dataclasses.replace(spec, factory=broken))
    with pytest.raises(LoweringError, match="building a gru layer failed: RuntimeError: no luck"):
        registry.build("gru", {}, 8)
    assert lower.build_module is registry.build  # the old name, for callers of lowering


def test_the_registry_types_stand_alone():
    """Specs and layers import the types without the table: importing them registers nothing."""
    code = textwrap.dedent(
        """
        import sys
        import hybriddsl.specs.mamba2, hybriddsl.layer_spec
        print("hybriddsl.registry" in sys.modules, "torch" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
