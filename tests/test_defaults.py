"""Each option's default is written once, in its kind's ``Option``: resolve, the layer classes, the cross-option
checks and the FLOP formulas all take it from there."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch

import hybriddsl
from hybriddsl import registry
from hybriddsl.ir import Op

# Option-free kinds (their modules take no spec options) and custom (its factory is the user's).
KINDS = [s for s in registry.specs() if s.name != "custom"]


@contextmanager
def default_of(kind: str, name: str, value: Any) -> Iterator[None]:
    """The registered Option ``name`` of ``kind`` with another default, for the block (specs are frozen)."""
    spec = registry.get(kind) if kind != "rwkv_channel_mix" else registry._SPECS[kind]
    old = spec.options
    new = tuple(dataclasses.replace(o, default=value) if o.name == name else o for o in old)
    object.__setattr__(spec, "options", new)
    try:
        yield
    finally:
        object.__setattr__(spec, "options", old)


def _mixers(model: Any, kind: str) -> list[torch.nn.Module]:
    g = model.graph
    return [model.blocks[g[n]["weights"]] for n in g.nodes(Op.MIXER) if g[n]["kind"] == kind]


def test_a_changed_default_reaches_every_reader():
    """mamba2's state size N, changed in the Option only: the compiled model, a layer built directly, the FLOP
    count and the cross-option check all use the new value (no literal 64 left behind)."""
    from hybriddsl.layers.mamba2 import Mamba2

    hidden, n = 64, 8
    with default_of("mamba2", "state", n):
        model = hybriddsl.parse_and_build(f"hidden = {hidden}\nM2(head_dim=32)")
        (m,) = _mixers(model, "mamba2")
        d_inner, heads = 2 * hidden, 2 * hidden // 32
        # in_proj: z and x (2 D_in), B and C (2 G N), one Δ per head
        assert m.in_proj.out_features == 2 * d_inner + 2 * n + heads
        assert Mamba2(hidden, head_dim=32).state == n
        g = hybriddsl.compile(f"hidden = {hidden}\nM2(head_dim=32)")
        (nid,) = [x for x in g.nodes(Op.MIXER) if g[x]["kind"] == "mamba2"]
        params = sum(p.numel() for p in m.parameters())
        assert g[nid]["params"] == params
        assert g[nid]["flops"] == 2 * params + 4 * d_inner * n  # the formula read N from the Option
    with default_of("mamba2", "state", 0):  # the check reads the same value: a bad default is refused
        with pytest.raises(ValueError, match="state"):
            Mamba2(hidden, head_dim=32)


def test_a_changed_default_reaches_a_companion_and_a_branch():
    with default_of("ffn", "mult", 2.0), default_of("attention", "heads", 2):
        model = hybriddsl.parse_and_build("hidden = 32\nA [M | A(ffn=false)]")
        (ffn,) = _mixers(model, "ffn")  # attention's companion, from the ffn Option's default
        assert sum(p.numel() for p in ffn.parameters()) == 2 * 32 * 64 + 64 + 32
        (par,) = _mixers(model, "parallel")
        assert par.branches[1][0].heads == 2
        assert all(a.heads == 2 for a in _mixers(model, "attention"))


@pytest.mark.parametrize("spec", KINDS, ids=lambda s: s.name)
def test_layer_classes_declare_no_option_defaults(spec):
    """The module's own signature names the options without defaults; building one fills them from the spec."""
    cls = spec.factory.resolve()
    params = inspect.signature(cls.__init__.__wrapped__).parameters
    names = {o.name for o in spec.options}
    assert names <= set(params), f"{cls.__name__} does not take {names - set(params)}"
    with_default = [n for n in names if params[n].default is not inspect.Parameter.empty]
    assert not with_default, f"{cls.__name__} repeats the defaults of {with_default}"


class _NoFallbacks(dict):
    """Complete options whose ``get`` fails: a check or formula that reads one must not carry a fallback."""

    def get(self, key, default=None):
        raise AssertionError(f"opts.get({key!r}): options are complete after resolve, read opts[{key!r}]")


def _fitting_opts(spec: registry.LayerSpec, hidden: int) -> dict[str, Any]:
    opts = spec.defaults()
    if spec.name == "mamba2":
        opts["head_dim"] = 16
    if spec.name == "custom":
        opts["fn"] = "pkg.mod:make"
    if spec.name == "parallel":
        opts["branches"] = [[{"kind": "ffn", "opts": registry.complete("ffn", {})}]] * 2
    return opts


@pytest.mark.parametrize("spec", registry.specs(), ids=lambda s: s.name)
def test_checks_formulas_and_companions_read_complete_options(spec):
    hidden = 64
    opts = _NoFallbacks(_fitting_opts(spec, hidden))
    if spec.validate is not None:
        assert spec.validate(opts, hidden) is None
    if spec.name not in ("custom", "parallel"):  # those two count by building
        assert spec.flops(opts, hidden, 1000, 128) > 0
    if spec.companions is not None:
        spec.companions(opts)


def test_resolve_gives_every_declared_option():
    src = "hidden = 64\nM M2(head_dim=32) A G R D GD griffin gru F K E [M | A]\nshared Z@1"  # Z: a side block
    g = hybriddsl.compile(src)
    seen = set()
    for nid in g.nodes(Op.MIXER):
        kind, opts = g[nid]["kind"], g[nid]["opts"]
        seen.add(kind)
        assert set(registry.complete(kind, {})) <= set(opts), kind
        for b in opts.get("branches", ()):
            for sub in b:
                assert set(registry.complete(sub["kind"], {})) <= set(sub["opts"])
    assert seen >= {s.name for s in KINDS}


def test_complete_fills_only_what_is_missing():
    got = registry.complete("M2", {"state": 8, "branches": "passes through"})
    assert got["state"] == 8 and got["branches"] == "passes through"
    assert {k: v for k, v in got.items() if k not in ("state", "branches")} == {
        o.name: o.default for o in registry.get("mamba2").options if o.name != "state"
    }


# --- choices ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "src, bad, hint",
    [
        ("hidden = 64\nM2(head_dim=32, chunk=48)", "48", "did you mean 32 or 64?"),
        ("hidden = 64\nmamba2.chunk = 8\nM2(head_dim=32)", "8", "did you mean 16?"),
        ("hidden = 64\nG(chunk = 100)", "100", "did you mean 64?"),
        ("hidden = 64\nR(head_size=16, chunk=24)", "24", "did you mean 16 or 32?"),
    ],
)
def test_a_value_outside_the_choices_points_at_it_and_lists_them(src, bad, hint):
    with pytest.raises(hybriddsl.HybOptionError) as err:
        hybriddsl.compile(src)
    e = err.value
    line = next(i for i, ln in enumerate(src.splitlines(), 1) if "chunk" in ln)
    text = src.splitlines()[line - 1]
    assert (e.span.line, e.span.column) == (line, text.index(bad, text.index("chunk")) + 1)
    assert "option 'chunk' must be one of 16, 32, 64, got " + bad in e.message
    assert e.message.endswith(hint)


def test_named_choices_still_suggest_by_spelling():
    with pytest.raises(hybriddsl.HybOptionError, match="did you mean 'gate'"):
        hybriddsl.compile("hidden = 32\n[M | A](mix=gat)")


def _kernel_accepts(kind: str, chunk: int) -> bool:
    """Whether the kernel a ``kind`` layer calls takes ``chunk`` (the real wrappers, on tiny CPU inputs)."""
    from hybriddsl.kernels.delta_rule import chunk_delta_rule
    from hybriddsl.kernels.gla import chunk_gla
    from hybriddsl.kernels.ssd import ssd

    q = torch.randn(1, 4, 1, 8)
    g = -torch.rand(1, 4, 1)
    try:
        if kind == "mamba2":
            ssd(q, q, q, g, chunk_size=chunk)
        elif kind in ("delta_net", "gated_delta_net"):
            chunk_delta_rule(q, q, q, torch.rand(1, 4, 1), g=g if kind == "gated_delta_net" else None, chunk_size=chunk)
        elif kind == "gla":
            chunk_gla(q, q, q, -torch.rand(1, 4, 1, 8), chunk_size=chunk)
        else:  # rwkv: GLA with the bonus u
            chunk_gla(q, q, q, -torch.rand(1, 4, 1, 8), u=torch.randn(1, 8), chunk_size=chunk)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("kind", ["mamba2", "gla", "rwkv", "delta_net", "gated_delta_net"])
def test_the_chunk_option_allows_what_the_kernel_takes(kind):
    """The spec's checks (option and cross-option) accept exactly the chunk lengths its kernel runs."""
    spec = registry.get(kind)
    for chunk in [1, 8, 15, 16, 24, 32, 48, 63, 64, 65, 96, 128, 256]:
        allowed = spec.check(registry.complete(kind, {"chunk": chunk}), 64) is None
        assert allowed == _kernel_accepts(kind, chunk), chunk


def test_hybdsl_layers_lists_the_choices(capsys):
    from hybriddsl.cli import main

    assert main(["layers", "mamba2"]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()[2:] if ln.strip()}
    assert "16 | 32 | 64" in lines["chunk"] and "default 64" in lines["chunk"]
    assert "gated | before_gate | off" in lines["out_norm"]  # plain text: no Markdown escapes
