"""Passes and lowering: lint after every pass, exact counts, shared/tied weights, fusion, output modes, step."""

from __future__ import annotations

import copy

import pytest
import torch

from hybriddsl import HybOptionError, IRError, compile, parse, parse_and_build
from hybriddsl.ir import Op
from hybriddsl.passes import PIPELINE, expand, fuse_add_norm

SMALL = {"hidden": 32, "heads": 4, "mamba.state": 4}


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_lint_after_every_pass():
    seen = []
    g = compile(
        "M M A M GLA FFN; shared attn@2,4,6; tie M@1,2",
        debug=True,
        dump=lambda name, g: seen.append((name, g.lint())),
        **SMALL,
    )
    assert [n for n, _ in seen] == [
        "expand",
        "resolve",
        "insert_shared",
        "tie",
        "infer_shapes",
        "fuse_add_norm",
        "count",
    ]
    assert g.totals["params"] > 0


def test_lint_catches_broken_graphs():
    g = compile("M A", **SMALL)
    bad = g.copy()
    m = bad.mixers()[0]
    (add,) = bad.succs(m)
    bad.g.remove_edge(m, add)  # a mixer that feeds nothing
    with pytest.raises(IRError, match="mixer"):
        bad.lint()
    bad = g.copy()
    a, b = bad.mixers()[:2]
    bad[b]["weights"] = bad[a]["weights"]  # one weight group, two kinds
    with pytest.raises(IRError, match="weight group"):
        bad.lint()
    bad = g.copy()
    first, last = bad.order()[1], bad.order()[-2]
    bad.connect(last, first)  # a cycle
    with pytest.raises(IRError, match="cycle"):
        bad.lint()


@pytest.mark.parametrize(
    "src",
    [
        "M M A M GLA FFN; shared attn@2,4,6",
        "(M A)*3; tie A",
        "M A(window=4) [M | A](mix=gate) [GLA | FFN](mix=concat) FFN(act=swiglu)",
        "vocab = 50\nM A GLA",
        "vocab = 50, tie_embeddings = false\nM A",
        "pre_norm = false\nM A FFN",
        "norm = rmsnorm; embed_dim = 12\nM GLA",
    ],
)
def test_param_count_is_exact(src):
    torch.manual_seed(0)
    model = parse_and_build(src, **SMALL)
    assert model.graph.totals["params"] == n_params(model)


def test_shared_block_is_one_module_with_one_set_of_weights():
    model = parse_and_build("M M M M M M; shared attn(ffn=false)@2,4,6", **SMALL)
    g = model.graph
    uses = [n for n in g.mixers() if g[n]["role"] == "shared"]
    assert len(uses) == 3 and len({g[n]["weights"] for n in uses}) == 1
    # applied right after layers 2, 4, 6 of the stack, in that order along the residual stream
    order = [g[n]["layer"] for n in g.mixers()]
    kinds = [g[n]["kind"] for n in g.mixers()]
    assert list(zip(order, kinds)) == [
        (1, "mamba"),
        (2, "mamba"),
        (2, "attention"),
        (3, "mamba"),
        (4, "mamba"),
        (4, "attention"),
        (5, "mamba"),
        (6, "mamba"),
        (6, "attention"),
    ]
    without = parse_and_build("M M M M M M", **SMALL)
    one_attn = parse_and_build("A(ffn=false)", **SMALL).graph
    attn_params = sum(one_attn[n]["params"] for n in one_attn.mixers())
    norm_params = 2 * 32
    assert n_params(model) == n_params(without) + attn_params + norm_params


def _plan_keys(model):
    return [st.key for st in model.plan if st.op in ("norm", "mixer", "add_norm")]


def test_shared_weights_receive_gradient_from_every_use():
    """Reference: the same network with separate copies of the shared block; the shared gradient is their sum."""
    torch.manual_seed(0)
    shared = parse_and_build("FFN FFN FFN; shared FFN@1,3", **SMALL, output="sequence")
    copies = parse_and_build("FFN FFN FFN FFN FFN", **SMALL, output="sequence")
    pairs = list(zip(_plan_keys(shared), _plan_keys(copies)))
    assert len(_plan_keys(shared)) == len(_plan_keys(copies))
    for ks, kc in pairs:  # same weights at every position of the plan
        copies.blocks[kc].load_state_dict(shared.blocks[ks].state_dict())
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(shared(x), copies(x))
    ct = torch.randn(2, 5, 32)  # one random cotangent for both
    shared(x).backward(ct)
    copies(x).backward(ct)
    uses = [kc for ks, kc in pairs if ks == "shared0_ffn_0"]
    assert len(uses) == 2
    expected = sum(copies.blocks[k].up.weight.grad for k in uses)
    torch.testing.assert_close(shared.blocks["shared0_ffn_0"].up.weight.grad, expected)


def test_tie_shares_weights_and_companions():
    model = parse_and_build("A M A; tie A", **SMALL)
    g = model.graph
    attn = [n for n in g.mixers() if g[n]["kind"] == "attention"]
    ffn = [n for n in g.mixers() if g[n]["kind"] == "ffn"]
    assert len({g[n]["weights"] for n in attn}) == 1
    assert len({g[n]["weights"] for n in ffn}) == 1  # the attention's FFN sub-blocks are tied along
    untied = parse_and_build("A M A", **SMALL)
    per_attn = sum(g[n]["params"] for n in attn[:1] + ffn[:1])
    assert n_params(untied) - n_params(model) == per_attn


def test_fusion_does_not_change_outputs():
    src = "M A GLA FFN; shared FFN@2"
    torch.manual_seed(0)
    fused = parse_and_build(src, **SMALL, output="sequence")
    plain_graph = compile(src, passes=[p for p in PIPELINE if p is not fuse_add_norm], **SMALL, output="sequence")
    from hybriddsl.lower import lower

    plain = lower(plain_graph)
    assert not list(plain_graph.nodes(Op.ADD_NORM)) and list(fused.graph.nodes(Op.ADD_NORM))
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(2, 9, 32)
    torch.testing.assert_close(fused(x), plain(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "settings, shape",
    [
        ({}, (2, 32)),
        ({"output": "sequence"}, (2, 7, 32)),
        ({"vocab": 11}, (2, 7, 11)),
        ({"vocab": 11, "output": "last"}, (2, 11)),
        ({"embed_dim": 5}, (2, 32)),
    ],
)
def test_output_modes(settings, shape):
    model = parse_and_build("M A", **SMALL, **settings)
    x = torch.randint(0, 11, (2, 7)) if "vocab" in settings else torch.randn(2, 7, settings.get("embed_dim", 32))
    assert model(x).shape == shape


def test_forward_backward_on_the_mission_example():
    model = parse_and_build("M M A M GLA FFN; shared attn@2,4,6", embed_dim=32)
    x = torch.randn(2, 16, 32)
    y = model(x)
    assert y.shape == (2, 256)
    y.backward(torch.randn_like(y))
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(
    "src",
    [
        "M A(window=3) GLA FFN; shared attn(ffn=false)@1",
        "pre_norm = false\nM A",
        "pos = sinusoidal\nvocab = 13\nM A",
        "[M | A](mix=gate) GLA",
    ],
)
def test_step_equals_forward_for_whole_models(src):
    torch.manual_seed(0)
    model = parse_and_build(src, **SMALL, output="sequence" if "vocab" not in src else "logits").eval()
    if "vocab" in src:
        x = torch.randint(0, 13, (2, 10))
    else:
        x = torch.randn(2, 10, 32)
    with torch.no_grad():
        full = model(x)
        state = model.init_state(2)
        outs = []
        for t in range(x.shape[1]):
            y, state = model.step(x[:, t], state)
            outs.append(y)
    torch.testing.assert_close(torch.stack(outs, 1), full, rtol=1e-4, atol=1e-4)


def test_macro_and_repeat_expansion():
    g = compile("block local = A(window=8, ffn=false) FFN\n(M local)*2 local", **SMALL)
    kinds = [g[n]["kind"] for n in g.mixers()]
    assert kinds == ["mamba", "attention", "ffn", "mamba", "attention", "ffn", "attention", "ffn"]
    assert all(g[n]["opts"]["window"] == 8 for n in g.mixers() if g[n]["kind"] == "attention")


def test_settings_precedence():
    g = compile("heads = 2\nattention.heads = 4\nA A(heads=8, ffn=false)", hidden=32)
    heads = [g[n]["opts"]["heads"] for n in g.mixers() if g[n]["kind"] == "attention"]
    assert heads == [4, 8]


def _snapshot(g) -> tuple:
    """Everything a pass could change in a graph, deep-copied: node and edge attributes, settings, totals."""
    return (
        copy.deepcopy({n: dict(d) for n, d in g.g.nodes(data=True)}),
        copy.deepcopy(sorted((u, v, dict(d)) for u, v, d in g.g.edges(data=True))),
        copy.deepcopy(g.settings),
        dict(g.totals),
        copy.deepcopy(g.statements),
        copy.deepcopy(g.compiled),
    )


def test_passes_do_not_modify_their_input():
    src = "hidden = 32\nheads = 4\npos = sinusoidal\nvocab = 13\nM M A GLA [M | A](mix=gate) FFN; shared attn@2; tie M"
    g = expand(parse(src))
    for p in PIPELINE:
        before = _snapshot(g)
        out = p(g)
        assert out is not g
        assert _snapshot(g) == before, f"pass {p.__name__} changed its input"
        g = out


def test_the_snapshot_sees_a_changed_option():  # the check above can fail
    g = compile("M A", **SMALL)
    before = _snapshot(g)
    g[g.mixers()[0]]["opts"]["state"] = 99
    assert _snapshot(g) != before


def test_every_error_is_found_before_allocation(monkeypatch):
    import hybriddsl.lower as lower_mod

    monkeypatch.setattr(lower_mod.HybridModel, "__init__", lambda *a, **k: pytest.fail("allocated"))
    with pytest.raises(HybOptionError):
        parse_and_build("A(heads=5)", hidden=32)


ALL_KINDS = "M M2(head_dim=16) A(window=3) GLA R(head_size=16) D GD L GRU K E(experts=4) [M | A](mix=concat) FFN"


def test_step_equals_forward_for_a_model_of_every_kind():
    torch.manual_seed(0)
    model = parse_and_build(ALL_KINDS, **SMALL, output="sequence").eval()
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        full = model(x)
        state = model.init_state(2)
        steps = []
        for t in range(x.shape[1]):
            y, state = model.step(x[:, t], state)
            steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-4, atol=1e-4)


def test_bf16_long_sequence_stays_finite():
    torch.manual_seed(0)
    model = parse_and_build(ALL_KINDS, **SMALL, output="sequence", dtype=torch.bfloat16)
    x = torch.randn(1, 2048, 32, dtype=torch.bfloat16) * 4
    y = model(x)
    assert torch.isfinite(y).all()
    y.backward(torch.randn_like(y))
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_moe_aux_loss_reaches_the_model():
    model = parse_and_build("M E(experts=4)", **SMALL)
    model(torch.randn(2, 5, 32))
    aux = model.aux_loss()
    assert isinstance(aux, torch.Tensor) and aux.requires_grad and aux.item() > 0


def test_pos_rope_turns_on_rotary_attention():
    g = compile("pos = rope\nM A A(rope=false)", **SMALL)
    ropes = [g[n]["opts"]["rope"] for n in g.mixers() if g[n]["kind"] == "attention"]
    assert ropes == [True, False]
