"""Mamba and Mamba-2 checkpoints in and out (transformers' MambaForCausalLM / Mamba2ForCausalLM as reference)."""

from __future__ import annotations

import transformers  # noqa: E402  (a test dependency: the dev extra installs it)

from tests.interop.harness import roundtrip  # noqa: E402


def test_mamba(tmp_path):
    cfg = transformers.MambaConfig(
        vocab_size=64, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4, time_step_rank=4
    )
    print(roundtrip(cfg, tmp_path))


def test_mamba_untied_with_biases(tmp_path):
    cfg = transformers.MambaConfig(
        vocab_size=64,
        hidden_size=32,
        state_size=4,
        num_hidden_layers=2,
        expand=3,
        conv_kernel=3,
        use_bias=True,
        tie_word_embeddings=False,
        layer_norm_epsilon=1e-6,
    )
    print(roundtrip(cfg, tmp_path, float64=False))


def test_mamba2(tmp_path):
    cfg = transformers.Mamba2Config(
        vocab_size=64,
        hidden_size=32,
        state_size=8,
        num_hidden_layers=2,
        expand=2,
        num_heads=4,
        head_dim=16,
        n_groups=2,
        conv_kernel=4,
        layer_norm_epsilon=1e-6,
    )
    print(roundtrip(cfg, tmp_path))
