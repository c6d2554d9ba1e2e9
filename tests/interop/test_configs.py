"""Config files as transformers writes them (its config classes' save_pretrained): read, sized and written back.

The reference for sizes is transformers itself: the model it builds from a config (on the meta device) must have
exactly our parameter count, for the configs we read and for the configs we write. Issue 14's config-reading
bugs for Jamba, Nemotron-H, the Llama family and Megatron patterns are pinned here.
"""

from __future__ import annotations

import pytest
import torch
import transformers

from hybriddsl import api
from hybriddsl.interop import ConvertError, from_hf, from_megatron, to_hf
from tests.interop.harness import written


def hf_params(cfg: dict) -> int:
    """Parameters of transformers' own model for a config dict (built on the meta device)."""
    config = transformers.AutoConfig.for_model(**cfg)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def ours(cfg: dict) -> int:
    return api.compile(from_hf(cfg)).totals["params"]


def both_ways(config) -> dict:
    """Read a written config, check our size against transformers', write it back and check again."""
    cfg = written(config)
    assert ours(cfg) == hf_params(cfg)
    back = to_hf(from_hf(cfg), cfg["model_type"])
    assert hf_params(back) == ours(cfg)
    return back


def nemotron(**kw) -> transformers.NemotronHConfig:
    base = dict(
        vocab_size=96,
        hidden_size=48,
        intermediate_size=80,
        layers_block_type=["linear_attention", "mlp", "full_attention", "moe", "linear_attention", "mlp"],
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=12,
        ssm_state_size=8,
        mamba_num_heads=10,
        mamba_head_dim=8,  # width 80: not a multiple of 48 (item 4)
        n_groups=2,  # items 3: read under its real name
        conv_kernel=3,
        n_routed_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=20,
        moe_shared_expert_intermediate_size=36,
    )
    return transformers.NemotronHConfig(**{**base, **kw})


def test_nemotron_h_v5_layers_block_type_groups_conv_width_shared_expert():
    back = both_ways(nemotron())
    assert back["layers_block_type"] == written(nemotron())["layers_block_type"]  # item 1
    assert back["n_groups"] == 2 and back["conv_kernel"] == 3  # item 3
    assert back["mamba_num_heads"] * back["mamba_head_dim"] == 80  # item 4
    assert back["moe_shared_expert_intermediate_size"] == 36  # item 5
    g = api.compile(from_hf(written(nemotron())))
    m2 = [g[n]["opts"] for n in g.mixers() if g[n]["kind"] == "mamba2"][0]
    assert (m2["groups"], m2["conv"], m2["inner"]) == (2, 3, 80)


def test_nemotron_h_older_field_names():
    new = written(nemotron())
    old = {k: v for k, v in new.items() if k not in ("layers_block_type", "n_groups", "conv_kernel")}
    old.update(hybrid_override_pattern="M-*EM-", mamba_n_groups=2, mamba_d_conv=3)
    assert from_hf(old).split("\n", 1)[1] == from_hf(new).split("\n", 1)[1]
    legacy = {**new, "layers_block_type": ["mamba", "mlp", "attention", "moe", "mamba", "mlp"]}
    assert from_hf(legacy) == from_hf(new)


def test_nemotron_h_sliding_window_is_not_a_window():  # item 9
    g = api.compile(from_hf(written(nemotron(sliding_window=4))))
    assert all(g[n]["opts"]["window"] is None for n in g.mixers() if g[n]["kind"] == "attention")


def test_nemotron_h_latent_moe_both_ways():
    cfg = written(nemotron(moe_latent_size=16))
    g = api.compile(from_hf(cfg))
    assert {g[n]["opts"]["latent"] for n in g.mixers() if g[n]["kind"] == "moe"} == {16}
    back = to_hf(from_hf(cfg), "nemotron_h")
    assert back["moe_latent_size"] == 16 and hf_params(back) == hf_params(cfg)


def jamba(**kw) -> transformers.JambaConfig:
    base = dict(
        vocab_size=96,
        hidden_size=96,
        intermediate_size=100,  # item 8: not a multiple of hidden
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        attn_layer_period=2,
        attn_layer_offset=1,
        num_experts=4,
        mamba_d_state=8,
    )
    return transformers.JambaConfig(**{**base, **kw})


def test_jamba_exact_widths_no_biases_no_window():
    back = both_ways(jamba(sliding_window=8))  # items 7, 8: sizes equal transformers' both ways
    assert back["intermediate_size"] == 100
    g = api.compile(from_hf(written(jamba(sliding_window=8))))
    assert all(g[n]["opts"]["window"] is None for n in g.mixers() if g[n]["kind"] == "attention")  # item 9
    assert not any(g[n]["opts"].get("bias") for n in g.mixers() if g[n]["kind"] in ("ffn", "moe"))


def test_jamba_export_refuses_mlp_biases():
    src = "norm = rmsnorm; norm_eps = 1e-6; hidden = 32; M(bc_norm=true) FFN(act=swiglu, bias=true)"
    with pytest.raises(ConvertError, match="no biases"):
        to_hf(src, "jamba")


@pytest.mark.parametrize(
    "config",
    [
        transformers.LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=40,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_parameters={"rope_type": "default", "rope_theta": 123.0},
        ),
        transformers.MistralConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=40,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        ),
        transformers.Qwen3Config(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=40,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            head_dim=8,
        ),
        transformers.MambaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, state_size=8),
        transformers.Mamba2Config(
            vocab_size=64, hidden_size=32, num_hidden_layers=2, state_size=8, num_heads=4, head_dim=16, n_groups=2
        ),
    ],
    ids=["llama", "mistral", "qwen3", "mamba", "mamba2"],
)
def test_plain_families_sizes(config):
    back = both_ways(config)
    if config.model_type == "llama":  # item 6: rope_theta survives both ways (transformers 5's rope_parameters)
        assert back["rope_parameters"]["rope_theta"] == 123.0


def test_rope_theta_older_top_level_field():
    cfg = written(transformers.LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4))
    old = {k: v for k, v in cfg.items() if k != "rope_parameters"}
    old["rope_theta"] = 77.0
    g = api.compile(from_hf(old))
    assert {g[n]["opts"]["rope_theta"] for n in g.mixers() if g[n]["kind"] == "attention"} == {77.0}
    with pytest.raises(ConvertError, match="rope_parameters.rope_type 'longrope' is not supported"):
        from_hf({**cfg, "rope_parameters": {"rope_type": "longrope", "rope_theta": 1e4, "factor": 4.0}})


# ------------------------------------------------------------------------------------------------ Megatron
@pytest.mark.parametrize(
    "pattern, kinds",
    [
        ("M-M*-/*-", ["mamba2", "ffn", "mamba2", "attention", "ffn"]),  # after '/': MTP layers, not the model
        ("MG-|*E", ["mamba2", "gated_delta_net", "ffn", "attention", "moe"]),
    ],
)
def test_megatron_mtp_separator_and_gated_deltanet(pattern, kinds):
    g = api.compile(from_megatron(pattern, hidden=32))
    assert [g[n]["kind"] for n in g.mixers()] == kinds


@pytest.mark.parametrize(
    "pattern, message",
    [
        ("||", "no layers"),
        ("/M", "no layers"),
        ("M-m*", "upper case"),
        ("M- M", "whitespace"),
        ("MD-", "DSA"),
        ("M+-", "MLA"),
    ],
)
def test_megatron_refuses_what_megatron_refuses(pattern, message):
    with pytest.raises(ConvertError, match=message):
        from_megatron(pattern)


def test_qwen3_older_file_without_layer_types():
    """Older Qwen3 files have no layer_types: windows on layers >= max_window_layers (as Qwen3Config derives)."""
    cfg = written(
        transformers.Qwen3Config(
            vocab_size=64,
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=4,
            head_dim=8,
            use_sliding_window=True,
            sliding_window=6,
            max_window_layers=2,
        )
    )
    old = {k: v for k, v in cfg.items() if k != "layer_types"}
    g = api.compile(from_hf(old))
    windows = [g[n]["opts"]["window"] for n in g.mixers() if g[n]["kind"] == "attention"]
    assert windows == [None if t == "full_attention" else 6 for t in cfg["layer_types"]] == [None, None, 6, 6]
