"""RecurrentGemma checkpoints in and out (transformers' RecurrentGemmaForCausalLM as the reference): RG-LRU
blocks with block-diagonal gates and the reset at position 0, local attention with partial RoPE, tanh-GELU MLPs,
(1 + w) RMSNorms, the bfloat16 sqrt(hidden) embedding scale and the logit soft-cap."""

from __future__ import annotations

import transformers

from tests.interop.harness import roundtrip


def test_recurrent_gemma(tmp_path):
    cfg = transformers.RecurrentGemmaConfig(
        vocab_size=64,
        hidden_size=48,
        lru_width=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=96,
        num_hidden_layers=3,
        attention_window_size=5,
        conv1d_width=3,
        logits_soft_cap=2.0,  # small, so the cap bends the logits of this tiny model
    )
    print(roundtrip(cfg, tmp_path, seq=12, prompt=3))


def test_recurrent_gemma_exact_gelu_untied_with_attention_bias(tmp_path):
    cfg = transformers.RecurrentGemmaConfig(
        vocab_size=64,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=48,
        num_hidden_layers=2,
        block_types=["attention", "recurrent"],
        attention_window_size=4,
        hidden_activation="gelu",
        attention_bias=True,
        tie_word_embeddings=False,
    )
    print(roundtrip(cfg, tmp_path, seq=9, prompt=2, float64=False))
