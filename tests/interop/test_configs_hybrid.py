"""RecurrentGemma, Qwen3-Next, Falcon-H1 and Zamba2 config files as transformers writes them (its config classes'
save_pretrained): layouts read by each family's documented rule, sizes equal to transformers' own model, and
configs written back that transformers builds at the same size. Issue 14's config bugs for these families
(Zamba2's ``linear_attention``, Falcon-H1's exact SSM width, Qwen3-Next's shared-expert width and Zamba2's
adapter rank on export, ``rope_theta`` in ``rope_parameters``, bias-free MLPs) are pinned here."""

from __future__ import annotations

import pytest
import transformers

from hybriddsl import api
from hybriddsl.interop import ConvertError, detect, from_hf, to_hf
from tests.interop.harness import written
from tests.interop.test_configs import both_ways, hf_params


def kinds(cfg: dict) -> list[str]:
    g = api.compile(from_hf(cfg))
    return [g[n]["kind"] for n in g.mixers()]


def recurrent_gemma(**kw):
    base = dict(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=5,
        num_attention_heads=4,
        num_key_value_heads=1,
        attention_window_size=16,
        lru_width=96,
        rope_parameters={"rope_type": "default", "rope_theta": 50000.0, "partial_rotary_factor": 0.5},
    )
    return transformers.RecurrentGemmaConfig(**{**base, **kw})


def qwen3_next(**kw):
    base = dict(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=112,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"],
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        linear_key_head_dim=16,
        linear_value_head_dim=24,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=40,
        shared_expert_intermediate_size=56,
        mlp_only_layers=[0],
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0, "partial_rotary_factor": 0.25},
    )
    return transformers.Qwen3NextConfig(**{**base, **kw})


def falcon_h1(**kw):
    base = dict(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        mamba_d_ssm=96,  # 1.5 x hidden (item 4: no rounding of expand)
        mamba_n_heads=4,
        mamba_n_groups=2,
        mamba_d_state=16,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
    )
    return transformers.FalconH1Config(**{**base, **kw})


def zamba2(**kw):
    base = dict(
        vocab_size=96,
        hidden_size=64,
        num_hidden_layers=8,
        layers_block_type=["mamba", "mamba", "hybrid", "mamba", "mamba", "hybrid", "mamba", "hybrid"],
        num_mem_blocks=2,
        mamba_d_state=16,
        n_mamba_heads=4,
        num_attention_heads=4,
        intermediate_size=128,
    )
    return transformers.Zamba2Config(**{**base, **kw})


def test_recurrent_gemma_block_types_cycle_and_sizes():
    cfg = written(recurrent_gemma())
    want = []
    for i in range(5):
        want += ["griffin" if cfg["block_types"][i % 3] == "recurrent" else "attention", "ffn"]
    assert kinds(cfg) == want
    g = api.compile(from_hf(cfg))
    attn = [g[n]["opts"] for n in g.mixers() if g[n]["kind"] == "attention"]
    assert {(a["window"], a["rope_theta"], a["rope_dim"]) for a in attn} == {(16, 50000.0, 8)}  # item 6
    assert {g[n]["opts"]["inner"] for n in g.mixers() if g[n]["kind"] == "ffn"} == {96}  # intermediate // 2
    back = both_ways(recurrent_gemma())
    assert back["rope_parameters"]["rope_theta"] == 50000.0 and back["lru_width"] == 96


def test_qwen3_next_layers_moe_and_shared_expert_width():
    cfg = written(qwen3_next())
    want = []
    for i, t in enumerate(cfg["layer_types"]):
        want += ["gated_delta_net" if t == "linear_attention" else "attention", "ffn" if i == 0 else "moe"]
    assert kinds(cfg) == want
    back = both_ways(qwen3_next())
    assert back["shared_expert_intermediate_size"] == 56  # item 5
    assert back["moe_intermediate_size"] == 40 and back["linear_num_value_heads"] == 4  # item 8: exact widths
    assert back["rope_parameters"]["rope_theta"] == 500000.0  # item 6
    g = api.compile(from_hf(cfg))
    assert not any(g[n]["opts"].get("bias") for n in g.mixers() if g[n]["kind"] in ("ffn", "moe"))  # item 7


def test_falcon_h1_exact_ssm_width_and_sizes():
    back = both_ways(falcon_h1())
    assert back["mamba_d_ssm"] == 96 and back["mamba_n_heads"] * back["mamba_d_head"] == 96  # item 4
    assert back["rope_parameters"]["rope_theta"] == 1e6  # item 6
    cfg = written(falcon_h1())
    g = api.compile(from_hf(cfg))
    assert kinds(cfg) == ["parallel", "ffn"] * 3
    par = g[g.mixers()[0]]["opts"]
    assert [b[0]["kind"] for b in par["branches"]] == ["attention", "mamba2"] and par["mix"] == "sum"
    assert not any(g[n]["opts"].get("bias") for n in g.mixers() if g[n]["kind"] == "ffn")  # item 7


def test_zamba2_v5_linear_attention_layers_and_adapter_rank():
    cfg = written(zamba2())
    assert "linear_attention" in cfg["layers_block_type"]  # transformers 5 writes Mamba layers so (item 2)
    g = api.compile(from_hf(cfg))
    assert [g[n]["kind"] for n in g.mixers() if g[n]["role"] == "main"] == ["mamba2"] * 8
    shared = [(g[n]["layer"], g[n]["kind"], g[n]["weights"]) for n in g.mixers() if g[n]["role"] == "shared"]
    hybrid = [i for i, t in enumerate(cfg["layers_block_type"]) if t == "hybrid"]
    assert sorted({pos for pos, _, _ in shared}) == hybrid  # hybrid layer i: after stack layer i (1-based)
    blocks = [w for _, k, w in sorted(shared) if k == "zamba_shared"]
    assert len(blocks) == 3 and blocks[0] == blocks[2] != blocks[1]  # two memory blocks, used in turn
    assert not any(g[n]["opts"].get("bias") for n in g.mixers() if g[n]["kind"] in ("zamba_shared", "mamba2"))
    back = to_hf(from_hf(cfg), "zamba2")
    assert back["add_bias_linear"] is False
    assert back["adapter_rank"] == cfg["adapter_rank"]  # item 5: the LoRA adapters are ours too now
    assert back["use_shared_attention_adapter"] == cfg["use_shared_attention_adapter"]
    assert hf_params(back) == hf_params(cfg) == g.totals["params"]


@pytest.mark.parametrize("make", [recurrent_gemma, qwen3_next, falcon_h1, zamba2])
def test_detect_by_fields_without_model_type(make):
    cfg = written(make())
    assert detect({k: v for k, v in cfg.items() if k != "model_type"}) == cfg["model_type"]


@pytest.mark.parametrize(
    "src, family, reason",
    [
        ("norm=rmsnorm; hidden=32; L A(ffn=false) FFN(act=geglu)", "hf-recurrentgemma", "local"),
        ("norm=rmsnorm; hidden=32; L F", "hf-recurrentgemma", "MLP after an MLP"),
        (
            "norm=rmsnorm; hidden=32; L(gate_blocks=4, mlp=false) FFN(act=geglu_tanh, bias=true)",
            "recurrentgemma",
            "reset",
        ),
        ("norm=rmsnorm; hidden=32; GD F M F", "hf-qwen3-next", "no 'mamba' layer"),
        (
            "norm=rmsnorm; hidden=32; A(rope=true, qk_norm=true, ffn=false) FFN(act=swiglu, bias=false)",
            "qwen3-next",
            "out_gate",
        ),
        ("norm=rmsnorm; hidden=32; M2 M2; shared A(ffn=false)@2", "hf-zamba2", "none follows"),
        ("norm=rmsnorm; hidden=32; M2 G", "hf-zamba2", "Mamba-2 layers only"),
        ("norm=rmsnorm; hidden=32; [A | M2](mix=gate) FFN(act=swiglu)", "hf-falcon-h1", "mix=sum"),
        ("norm=rmsnorm; hidden=32; [M2 | A](mix=sum) FFN(act=swiglu)", "hf-falcon-h1", "attention first"),
    ],
)
def test_to_hf_says_why_it_cannot(src, family, reason):
    with pytest.raises(ConvertError, match=reason):
        to_hf(src, family)


@pytest.mark.parametrize("make", [recurrent_gemma, qwen3_next, falcon_h1])
def test_older_top_level_rope_fields(make):
    """Files from before transformers 5 keep rope_theta (and partial_rotary_factor) at the top level."""
    new = written(make())
    rp = new["rope_parameters"]
    old = {k: v for k, v in new.items() if k != "rope_parameters"}
    old.update({k: v for k, v in rp.items() if k != "rope_type"})
    assert from_hf(old) == from_hf(new)
