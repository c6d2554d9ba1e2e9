"""Jamba and Nemotron-H checkpoints in and out (transformers' JambaForCausalLM / NemotronHForCausalLM)."""

from __future__ import annotations

import transformers

from tests.interop.harness import roundtrip


def test_jamba_moe_dt_bc_norms(tmp_path):
    cfg = transformers.JambaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=40,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_experts=4,
        num_experts_per_tok=2,
        attn_layer_period=2,
        attn_layer_offset=1,
        expert_layer_period=2,
        expert_layer_offset=1,
        mamba_d_state=8,
        mamba_dt_rank=4,
        rms_norm_eps=1e-5,
    )
    print(roundtrip(cfg, tmp_path))


def nemotron(**kw):
    base = dict(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        layers_block_type=["linear_attention", "moe", "full_attention", "mlp", "linear_attention", "moe"],
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        mamba_num_heads=5,
        mamba_head_dim=8,  # width 40: not a multiple of hidden (issue 14, item 4)
        ssm_state_size=8,
        n_groups=5,
        conv_kernel=3,
        n_routed_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=24,
        moe_shared_expert_intermediate_size=40,
        n_group=2,
        topk_group=1,
        routed_scaling_factor=1.5,
        layer_norm_epsilon=1e-6,
        time_step_min=0.01,
    )
    return transformers.NemotronHConfig(**{**base, **kw})


def test_nemotron_h_relu2_moe_shared_groups(tmp_path):
    print(roundtrip(nemotron(), tmp_path))


def test_nemotron_h_unnormalized_topk_gelu_biases(tmp_path):
    cfg = nemotron(norm_topk_prob=False, mlp_hidden_act="gelu", mlp_bias=True, attention_bias=True, n_group=1)
    print(roundtrip(cfg, tmp_path, float64=False))
