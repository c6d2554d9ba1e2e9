"""Falcon-H1 checkpoints in and out (transformers' FalconH1ForCausalLM as the reference): attention and Mamba-2
side by side, an SSM width that is not a multiple of hidden (taken exactly), every muP multiplier away from 1,
with and without the Mamba-2 RMSNorm."""

from __future__ import annotations

import pytest
import transformers

from tests.interop.harness import roundtrip

MULTIPLIERS = dict(
    embedding_multiplier=1.5,
    lm_head_multiplier=0.75,
    key_multiplier=0.5,
    attention_in_multiplier=1.25,
    attention_out_multiplier=0.8,
    ssm_in_multiplier=1.1,
    ssm_out_multiplier=0.9,
    ssm_multipliers=[1.2, 0.7, 1.3, 0.6, 1.1],
    mlp_multipliers=[1.4, 0.6],
)


@pytest.mark.parametrize("rms_norm,before_gate", [(False, True), (True, True), (True, False)])
def test_falcon_h1(tmp_path, rms_norm, before_gate):
    cfg = transformers.FalconH1Config(
        vocab_size=64,
        hidden_size=48,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        num_hidden_layers=2,
        mamba_d_ssm=72,  # 1.5 x hidden: no whole expand
        mamba_n_heads=6,
        mamba_d_state=8,
        mamba_n_groups=2,
        mamba_d_conv=3,
        mamba_rms_norm=rms_norm,
        mamba_norm_before_gate=before_gate,
        **MULTIPLIERS,
    )
    print(roundtrip(cfg, tmp_path))
