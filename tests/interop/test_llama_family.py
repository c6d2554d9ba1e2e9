"""Llama, Mistral and Qwen3 checkpoints in and out: GQA, RoPE (rope_parameters), sliding windows, q/k norms."""

from __future__ import annotations

import pytest
import torch
import transformers

from hybriddsl.interop import ConvertError, from_hf
from tests.interop.harness import SMALL_LLAMA, roundtrip, written

SMALL = dict(SMALL_LLAMA, max_position_embeddings=64)


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


# RoPE scaling (transformers' rope_parameters): sequences beyond the original context, where the scalings differ
ROPE = dict(SMALL, hidden_size=64, max_position_embeddings=64)


def test_llama_rope_linear(tmp_path):
    cfg = transformers.LlamaConfig(**ROPE, rope_parameters={"rope_type": "linear", "rope_theta": 100.0, "factor": 4.0})
    print(roundtrip(cfg, tmp_path, seq=40))


def test_llama_rope_llama3(tmp_path):
    rp = {
        "rope_type": "llama3",
        "rope_theta": 500.0,
        "factor": 8.0,
        "low_freq_factor": 0.5,  # wavelengths above 32 scaled, below 8 kept (Llama 3.1: 1, 4 of 8192)
        "high_freq_factor": 2.0,
        "original_max_position_embeddings": 16,
    }
    cfg = transformers.LlamaConfig(**ROPE, rope_parameters=rp)
    # the scaling reaches every kind of frequency: kept, interpolated and divided by factor
    inv = transformers.models.llama.modeling_llama.LlamaRotaryEmbedding(cfg).inv_freq
    plain = 1.0 / 500.0 ** (torch.arange(0, 16, 2) / 16)
    ratio = plain / inv
    assert (ratio - 1).abs().min() < 1e-6 and (ratio - 8).abs().min() < 1e-5 and ((ratio > 1.01) & (ratio < 7.9)).any()
    print(roundtrip(cfg, tmp_path, seq=40))


def test_llama_rope_yarn(tmp_path):
    rp = {"rope_type": "yarn", "rope_theta": 100.0, "factor": 4.0, "original_max_position_embeddings": 16}
    cfg = transformers.LlamaConfig(**ROPE, rope_parameters=rp)
    print(roundtrip(cfg, tmp_path, seq=40))


def test_llama_rope_yarn_attention_factor_betas_untruncated(tmp_path):
    rp = {
        "rope_type": "yarn",
        "rope_theta": 100.0,
        "factor": 3.0,
        "original_max_position_embeddings": 16,
        "beta_fast": 8.0,
        "beta_slow": 0.5,
        "attention_factor": 1.3,
        "truncate": False,
    }
    cfg = transformers.LlamaConfig(**ROPE, rope_parameters=rp)
    print(roundtrip(cfg, tmp_path, seq=40))


def test_qwen3_rope_yarn_older_rope_scaling_field(tmp_path):
    """An older config: rope_theta at the top level, the scaling in rope_scaling with 'type'."""
    cfg = transformers.Qwen3Config(**ROPE, head_dim=16)
    d = written(cfg)
    d.pop("rope_parameters", None)
    d["rope_theta"] = 100.0
    d["rope_scaling"] = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}
    text = from_hf(d)
    assert "rope_scaling = yarn" in text.replace('"', "") and "rope_original = 16" in text


@pytest.mark.parametrize("kind", ["dynamic", "longrope"])
def test_unsupported_rope_type_names_the_field(kind):
    d = written(transformers.LlamaConfig(**SMALL))
    d["rope_parameters"] = {"rope_type": kind, "rope_theta": 100.0, "factor": 2.0}
    with pytest.raises(ConvertError, match=f"rope_parameters.rope_type '{kind}' is not supported"):
        from_hf(d)


def test_llama3_without_its_factors_is_an_error():
    d = written(transformers.LlamaConfig(**SMALL))
    d["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 100.0, "factor": 2.0}
    with pytest.raises(ConvertError, match="low_freq_factor is missing"):
        from_hf(d)
