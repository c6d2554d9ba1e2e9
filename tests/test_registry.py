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
