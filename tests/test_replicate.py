"""Lowering builds a repeated layer as a replica of the first (layers/replicate.py): the replica must be the layer
that construction would have built from the same random state, bit for bit, and share nothing with the first."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hybriddsl
import hybriddsl.layers.replicate as replicate_mod
from hybriddsl import registry
from hybriddsl.layers.base import reset_linear
from hybriddsl.layers.replicate import replica, replicable
from tests.layers.checks import run_steps

H = 32
# every kind but custom (the user's factory), with options that switch on its optional parts
CASES = [
    ("mamba", {"state": 4}),
    ("mamba", {"state": 4, "bc_norm": True}),
    ("mamba2", {"state": 8, "head_dim": 16, "chunk": 16}),
    ("attention", {"heads": 4}),
    ("attention", {"heads": 4, "kv_heads": 2, "qk_norm": True, "bias": True, "out_gate": True}),
    ("attention", {"heads": 4, "window": 3}),
    ("gla", {"heads": 2}),
    ("rwkv", {"head_size": 16}),
    ("rwkv_channel_mix", {}),
    ("delta_net", {"heads": 2}),
    ("gated_delta_net", {"heads": 2}),
    ("griffin", {}),
    ("griffin", {"gate_blocks": 4, "reset": True}),
    ("gru", {"size": 24}),
    ("ffn", {"act": "swiglu"}),
    ("kan", {}),
    ("moe", {"experts": 4, "top_k": 2, "shared": 16, "shared_gate": True, "score_bias": True}),
    (
        "parallel",
        {"mix": "gate", "branches": [[{"kind": "mamba", "opts": {"state": 4}}], [{"kind": "ffn", "opts": {}}]]},
    ),
    (
        "parallel",
        {
            "mix": "concat",
            "branches": [[{"kind": "gla", "opts": {"heads": 2}}], [{"kind": "attention", "opts": {"heads": 4}}]],
        },
    ),
    ("zamba_shared", {"heads": 4, "rank": 4, "attn_adapter": True, "uses": 2}),
]
IDS = [f"{k}-{i}" for i, (k, _) in enumerate(CASES)]


def _build(kind: str, opts: dict, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return registry.build(kind, {k: v for k, v in opts.items()}, H)


def _same(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _run(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if getattr(m, "reads_embeddings", False):
        return m(x, x, 0)
    return m(x)


@pytest.mark.parametrize(("kind", "opts"), CASES, ids=IDS)
def test_a_replica_is_the_layer_construction_builds(kind, opts):
    """Seed 0: building the layer, and replicating another one (built from seed 1), give the same weights and
    outputs; the replica shares no storage with its original; reset_parameters() undoes any change."""
    first = _build(kind, opts, seed=1)
    built = _build(kind, opts, seed=0)
    assert replicable(first)
    torch.manual_seed(0)
    copy = replica(first)
    assert type(copy) is type(built)
    _same(copy, built)
    ptrs = {t.data_ptr() for t in first.state_dict().values() if t.numel()}
    assert not any(t.data_ptr() in ptrs for t in copy.state_dict().values() if t.numel())
    x = torch.randn(2, 5, H)
    if kind == "zamba_shared":
        y_copy, y_built = copy(x, x, 1), built(x, x, 1)
    else:
        y_copy, y_built = _run(copy, x), _run(built, x)
    torch.testing.assert_close(y_copy, y_built, rtol=0, atol=0)
    # the first layer's weights moving (training) leaves the replica alone
    with torch.no_grad():
        for p in first.parameters():
            p.add_(1.0)
    torch.testing.assert_close(_run(copy, x) if kind != "zamba_shared" else copy(x, x, 1), y_built, rtol=0, atol=0)
    # reset_parameters() is complete: every parameter, random or not, comes back
    with torch.no_grad():
        for p in copy.parameters():
            p.fill_(7.0)
    torch.manual_seed(0)
    copy.reset_parameters()
    _same(copy, built)


def test_a_replica_steps_with_its_own_state():
    """A replica's recurrent step and caches are its own (Mamba keeps a cache of -exp(A_log))."""
    first = _build("mamba", {"state": 4}, seed=1)
    copy = replica(first)
    x = torch.randn(2, 6, H)
    y = copy(x)
    torch.testing.assert_close(run_steps(copy, x), y, rtol=1e-5, atol=1e-5)
    first(x)  # fills the first one's cache
    with torch.no_grad():
        first.A_log.add_(1.0)
    first(x)
    torch.testing.assert_close(copy(x), y, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(8, 5, True), (3, 1, False), (16, 64, True)])
def test_reset_linear_draws_what_nn_linear_draws(shape):
    out_f, in_f, bias = shape
    a, b = nn.Linear(in_f, out_f, bias=bias), nn.Linear(in_f, out_f, bias=bias)
    torch.manual_seed(3)
    a.reset_parameters()
    torch.manual_seed(3)
    reset_linear(b)
    _same(a, b)


SOURCE = """hidden = 32, heads = 4, vocab = 50
M M A GLA FFN M A [M | FFN](mix=gate) E(experts=4) M M A
shared A@2,3
"""


def test_a_model_built_with_replicas_equals_one_built_layer_by_layer(monkeypatch):
    """The whole model (repeated kinds, shared and parallel blocks, norms) from one seed: identical weights with
    and without replicas, and the repeated layers are separate modules."""
    torch.manual_seed(0)
    fast = hybriddsl.parse_and_build(SOURCE)
    monkeypatch.setattr(replicate_mod, "replicable", lambda m: False)
    torch.manual_seed(0)
    slow = hybriddsl.parse_and_build(SOURCE)
    _same(fast, slow)
    mambas = [b for b in fast.blocks.values() if type(b).__name__ == "Mamba"]
    assert len(mambas) >= 5 and len({id(b.in_proj.weight) for b in mambas}) == len(mambas)
    x = torch.randint(0, 50, (2, 7))
    torch.testing.assert_close(fast(x), slow(x), rtol=0, atol=0)


def test_custom_layers_are_built_every_time(tmp_path, monkeypatch):
    """A custom factory is the user's code: each use runs it (a factory may count, register or seed)."""
    (tmp_path / "factories.py").write_text(
        "import torch\nCALLS = []\n"
        "def make(hidden_size):\n    CALLS.append(hidden_size)\n    return torch.nn.Linear(hidden_size, hidden_size)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import factories

    hybriddsl.parse_and_build('hidden = 16\ncustom(fn="factories:make") custom(fn="factories:make")', trust_custom=True)
    assert factories.CALLS == [16, 16]
