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


def test_nemotron_h_latent_moe(tmp_path):
    """moe_latent_size: experts run at width 16 between fc1/fc2 latent projections (with mlp_bias)."""
    # noise 0.05: at 0.1 transformers' own cached decoding drifts 1.06e-4 from its own parallel logits (ours equal
    # the parallel ones exactly), just past the bound
    print(roundtrip(nemotron(moe_latent_size=16, mlp_bias=True), tmp_path, noise=0.05))


def test_nemotron_h_mtp_tensors_are_skipped_by_name(tmp_path):
    import pytest
    import torch
    from safetensors.torch import load_file, save_file

    import hybriddsl

    cfg = nemotron()
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    hf.save_pretrained(tmp_path)
    plain = hybriddsl.from_pretrained(tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    sd["mtp.layers.0.norm.weight"] = torch.ones(32)
    sd["mtp.layers.0.mixer.up_proj.weight"] = torch.ones(48, 32)
    save_file(sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.warns(UserWarning, match=r"2 tensors of the multi-token-prediction \(MTP\) layers \(mtp\.\*"):
        ours = hybriddsl.from_pretrained(tmp_path)
    ids = torch.randint(0, 64, (1, 6))
    with torch.no_grad():
        assert torch.equal(ours(ids), plain(ids))
        ref = hf(input_ids=ids).logits
        assert (ours(ids) - ref).abs().max() <= 1e-4 * max(1.0, ref.abs().max().item())
    sd["backbone.extra.weight"] = torch.ones(2)  # anything else is still an extra tensor
    save_file(sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(hybriddsl.HybFileError, match="'backbone.extra.weight' is not part of the model"):
        hybriddsl.from_pretrained(tmp_path)
