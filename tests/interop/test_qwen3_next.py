"""Qwen3-Next checkpoints in and out (transformers' Qwen3NextForCausalLM as the reference): gated DeltaNet with
more value heads than key heads, gated attention output with partial RoPE and (1 + w) q/k norms, dense SwiGLU
MLPs and the sparse MoE with its gated shared expert."""

from __future__ import annotations

import transformers

from tests.interop.harness import roundtrip

BASE = dict(
    vocab_size=64,
    hidden_size=48,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    linear_num_key_heads=2,
    linear_num_value_heads=4,
    linear_key_head_dim=8,
    linear_value_head_dim=12,
    linear_conv_kernel_dim=3,
    num_hidden_layers=4,
    intermediate_size=40,
    layer_types=["linear_attention", "full_attention", "linear_attention", "full_attention"],
)


def test_qwen3_next_dense(tmp_path):
    cfg = transformers.Qwen3NextConfig(**BASE, num_experts=0, mlp_only_layers=[0, 1, 2, 3])
    print(roundtrip(cfg, tmp_path))


def test_qwen3_next_moe(tmp_path):
    """MoE on layers 1-3 (layer 0 dense): renormalized top-2 of 4 experts and the gated shared expert."""
    cfg = transformers.Qwen3NextConfig(
        **BASE,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=16,
        shared_expert_intermediate_size=24,
        mlp_only_layers=[0],
    )
    print(roundtrip(cfg, tmp_path))


def test_qwen3_next_moe_without_renormalization_with_attention_biases(tmp_path):
    cfg = transformers.Qwen3NextConfig(
        **BASE,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=16,
        shared_expert_intermediate_size=20,
        norm_topk_prob=False,
        attention_bias=True,
    )
    print(roundtrip(cfg, tmp_path, float64=False, decode=False))


def test_qwen3_next_yarn_on_partial_rope(tmp_path):
    """YaRN on the rotated quarter of each head (yarn's dimensions are the rotated ones), beyond the original
    context of 16."""
    rp = {
        "rope_type": "yarn",
        "rope_theta": 100.0,
        "factor": 4.0,
        "original_max_position_embeddings": 16,
        "partial_rotary_factor": 0.5,
    }
    cfg = transformers.Qwen3NextConfig(
        **BASE, num_experts=0, mlp_only_layers=[0, 1, 2, 3], rope_parameters=rp, max_position_embeddings=64
    )
    print(roundtrip(cfg, tmp_path, seq=32))
