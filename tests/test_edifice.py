"""The Edifice-compatible API: the seeds' examples as written, exact param_count, patterns, visualize."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hybriddsl import HybNameError, HybOptionError, edifice


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run(model: nn.Module, embed_dim: int, hidden: int) -> None:
    x = torch.randn(2, 8, embed_dim)
    y = model(x)
    assert y.shape == (2, hidden) and torch.isfinite(y).all()


# ----------------------------------------------------------------------------------- Hybrid (seed 000)
def test_seed_hybrid_examples_run_as_written():
    # Hybrid.build(embed_dim: 256, hidden_size: 256, num_layers: 8, attention_every: 4)
    m = edifice.build(embed_dim=256, hidden_size=256, num_layers=8, attention_every=4)
    run(m, 256, 256)
    # Hybrid.build(embed_dim: 256, num_layers: 6, backbone: :gru, attention_every: 3)
    run(edifice.build(embed_dim=256, num_layers=6, backbone=":gru", attention_every=3), 256, 256)
    # Hybrid.build(embed_dim: 256, num_layers: 6, backbone: :gated_delta_net, attention_every: 3)
    run(edifice.build(embed_dim=256, num_layers=6, backbone="gated_delta_net", attention_every=3), 256, 256)


def test_seed_layer_pattern_examples():
    assert edifice.layer_pattern(num_layers=6, attention_every=3) == [
        "mamba",
        "mamba",
        "attention",
        "mamba",
        "mamba",
        "attention",
    ]
    assert edifice.layer_pattern(num_layers=6, attention_every=3, backbone="gru") == [
        "gru",
        "gru",
        "attention",
        "gru",
        "gru",
        "attention",
    ]


def my_backbone(hidden_size: int, **opts) -> nn.Module:
    return nn.Linear(hidden_size, hidden_size)  # position-wise, so trivially causal


@pytest.mark.parametrize(
    "backbone",
    [
        "mamba",
        "gru",
        "rwkv",
        "delta_net",
        "gated_delta_net",
        "griffin_lru",
        (__name__, "my_backbone"),
        my_backbone,
        lambda h, **o: nn.Linear(h, h),
    ],
)
def test_every_backbone_builds_with_exact_param_count(backbone):
    opts = dict(
        embed_dim=24,
        hidden_size=64,
        num_layers=3,
        attention_every=3,
        backbone=backbone,
        num_heads=4,
        head_dim=16,
        window_size=8,
    )
    if backbone == "rwkv":
        opts["hidden_size"] = 128  # RWKV-6 heads are 64 wide
    model = edifice.build(**opts)
    assert edifice.param_count(**opts) == n_params(model)
    run(model, 24, opts["hidden_size"])
    assert edifice.output_size(**opts) == opts["hidden_size"]


def test_hybrid_options_reach_the_layers():
    opts = dict(
        embed_dim=16,
        hidden_size=64,
        num_layers=3,
        state_size=8,
        expand_factor=3,
        conv_size=2,
        num_heads=2,
        head_dim=8,
        window_size=5,
        qk_layernorm=False,
        dropout=0.0,
        chunked_attention=True,
        chunk_size=4,
    )
    g = edifice.build(**opts).graph
    mamba = next(g[n]["opts"] for n in g.mixers() if g[n]["kind"] == "mamba")
    attn = next(g[n]["opts"] for n in g.mixers() if g[n]["kind"] == "attention")
    assert (mamba["state"], mamba["expand"], mamba["conv"]) == (8, 3, 2)
    assert (attn["heads"], attn["head_dim"], attn["window"], attn["qk_norm"], attn["chunk"]) == (2, 8, 5, False, 4)
    g = edifice.build(**{**opts, "use_sliding_window": False}).graph
    assert next(g[n]["opts"] for n in g.mixers() if g[n]["kind"] == "attention")["window"] is None


def test_to_hyb_shows_the_text_and_compiles_the_same():
    import hybriddsl

    text = edifice.to_hyb(embed_dim=16, num_layers=3)
    assert "mamba mamba attention" in text
    assert hybriddsl.compile(text).totals["params"] == edifice.param_count(embed_dim=16, num_layers=3)


def test_recommended_defaults_build():
    opts = edifice.recommended_defaults()
    assert opts["window_size"] == 60
    model = edifice.build(embed_dim=32, **opts)
    run(model, 32, opts["hidden_size"])


@pytest.mark.parametrize(
    "bad, err, words",
    [
        (dict(num_layers=6), HybOptionError, "embed_dim"),
        (dict(embed_dim=8, backbone="mamab"), HybNameError, "did you mean 'mamba'"),
        (dict(embed_dim=8, num_layer=6), HybNameError, "did you mean 'num_layers'"),
        (dict(embed_dim=8, num_layers=0), HybOptionError, "positive"),
        (dict(embed_dim=8, backbone="custom"), HybOptionError, "needs the function"),
        (dict(embed_dim=8, num_heads=3, head_dim=None), HybOptionError, "heads"),
    ],
)
def test_bad_hybrid_options(bad, err, words):
    with pytest.raises(err, match=words):
        edifice.build(**bad)


# ----------------------------------------------------------------------------------- HybridBuilder (seed 003)
def test_seed_patterns():
    assert edifice.pattern("jamba_like", 6) == ["mamba", "attention"] * 3
    assert edifice.pattern("zamba_like", 6) == ["mamba"] * 6
    assert edifice.pattern("mamba_gla", 6) == ["mamba", "mamba", "gla", "mamba", "mamba", "gla"]
    assert edifice.pattern("full_hybrid", 6) == ["mamba", "attention", "gla", "rwkv", "mamba", "attention"]
    assert edifice.pattern("ssm_stack", 4) == ["mamba"] * 4
    assert set(edifice.pattern("rwkv_attention", 6)) == {"rwkv", "attention"}
    with pytest.raises(HybNameError, match="did you mean 'jamba_like'"):
        edifice.pattern("jamba", 6)


def test_seed_builder_examples_run_as_written():
    # HybridBuilder.build([:mamba, :mamba, :attention, :mamba, :gla, :ffn], embed_dim: 287, hidden_size: 256)
    m = edifice.build(["mamba", "mamba", "attention", "mamba", "gla", "ffn"], embed_dim=287, hidden_size=256)
    run(m, 287, 256)
    # HybridBuilder.build([:mamba x6], embed_dim: 287, shared_layers: %{attention: [2, 4, 6]})
    m = edifice.build(["mamba"] * 6, embed_dim=287, shared_layers={"attention": [2, 4, 6]})
    run(m, 287, 256)
    g = m.graph
    shared = [n for n in g.mixers() if g[n]["role"] == "shared" and g[n]["kind"] == "attention"]
    assert len(shared) == 3 and len({g[n]["weights"] for n in shared}) == 1
    # HybridBuilder.build_pattern(:jamba_like, 6, embed_dim: 287)
    run(edifice.build_pattern("jamba_like", 6, embed_dim=287), 287, 256)


@pytest.mark.parametrize(
    "name", ["jamba_like", "zamba_like", "mamba_gla", "rwkv_attention", "full_hybrid", "ssm_stack"]
)
def test_builder_param_count_exact_for_every_pattern(name):
    opts = dict(
        embed_dim=20,
        hidden_size=64,
        rwkv_head_size=32,
        attention_num_heads=2,
        mamba_state_size=4,
        gla_num_heads=2,
        kan_grid_size=3,
    )
    layers = edifice.pattern(name, 4)
    model = edifice.build(layers, **opts)
    assert edifice.param_count(layers, **opts) == n_params(model)


def test_builder_prefixed_options_reach_layers():
    g = edifice.build(
        ["mamba", "attention", "gla", "rwkv", "kan"],
        embed_dim=8,
        hidden_size=64,
        mamba_state_size=8,
        mamba_expand_factor=1,
        attention_num_heads=8,
        attention_window_size=7,
        gla_num_heads=2,
        rwkv_head_size=16,
        kan_grid_size=4,
    ).graph
    opts = {g[n]["kind"]: g[n]["opts"] for n in g.mixers() if g[n]["role"] == "main"}
    assert (opts["mamba"]["state"], opts["mamba"]["expand"]) == (8, 1)
    assert (opts["attention"]["heads"], opts["attention"]["window"]) == (8, 7)
    assert opts["gla"]["heads"] == 2 and opts["rwkv"]["head_size"] == 16 and opts["kan"]["grid"] == 4


def test_builder_errors():
    with pytest.raises(HybNameError, match="did you mean"):
        edifice.build(["mamba", "atention"], embed_dim=8)
    with pytest.raises(HybNameError, match="mamba_state_size"):
        edifice.build(["mamba"], embed_dim=8, mamba_state_sise=4)
    with pytest.raises(HybOptionError, match="outside the stack"):
        edifice.build(["mamba"] * 2, embed_dim=8, shared_layers={"attention": [3]})


def test_visualize_in_edifice_format():
    text = edifice.visualize(["mamba", "attention", "gla", "rwkv", "mamba", "ffn"])
    assert text.splitlines()[0] == "Layer pattern: M → A → G → R → M → F"
    assert text.splitlines()[1] == "Legend: M=Mamba, A=Attention, G=GLA, R=RWKV, F=FFN"
