"""Llama, Mistral and Qwen3 checkpoints in and out: GQA, RoPE (rope_parameters), sliding windows, q/k norms."""

from __future__ import annotations

import transformers

from tests.interop.harness import roundtrip

SMALL = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=40,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)


def test_llama_gqa_rope_theta(tmp_path):
    cfg = transformers.LlamaConfig(**SMALL, rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    print(roundtrip(cfg, tmp_path))


def test_llama_biases_head_dim_tied(tmp_path):
    cfg = transformers.LlamaConfig(
        **{**SMALL, "num_key_value_heads": 4}, head_dim=12, attention_bias=True, mlp_bias=True, tie_word_embeddings=True
    )
    print(roundtrip(cfg, tmp_path, float64=False))


def test_mistral_sliding_window(tmp_path):
    cfg = transformers.MistralConfig(**SMALL, sliding_window=5)
    print(roundtrip(cfg, tmp_path))


def test_qwen3_qk_norm_and_window_per_layer(tmp_path):
    cfg = transformers.Qwen3Config(
        **SMALL,
        head_dim=16,
        use_sliding_window=True,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
        rms_norm_eps=1e-5,
    )
    print(roundtrip(cfg, tmp_path))
