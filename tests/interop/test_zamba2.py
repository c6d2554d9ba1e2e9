"""Zamba2 checkpoints in and out (transformers' Zamba2ForCausalLM as the reference): Mamba-2 backbone, shared
transformer blocks on [stream, embeddings] used in turn (num_mem_blocks), per-use LoRA adapters (MLP and, with
use_shared_attention_adapter, q/k/v), the per-hybrid-layer linear added to the Mamba layer's norm input, RoPE."""

from __future__ import annotations

import pytest
import torch
import transformers

import hybriddsl
from hybriddsl import api
from hybriddsl.interop import ConvertError, from_hf
from tests.interop.harness import roundtrip, written


def zamba2(**kw):
    base = dict(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=6,
        layers_block_type=["mamba", "hybrid", "mamba", "hybrid", "hybrid", "mamba"],
        mamba_d_state=8,
        mamba_d_conv=3,
        n_mamba_heads=4,
        mamba_ngroups=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=40,
        num_mem_blocks=2,
        use_shared_attention_adapter=True,
        adapter_rank=4,
        use_mem_rope=True,
        max_position_embeddings=64,
        rope_parameters={"rope_type": "default", "rope_theta": 50.0},
        rms_norm_eps=1e-5,
    )
    return transformers.Zamba2Config(**{**base, **kw})


def test_zamba2_adapters_rope_two_blocks(tmp_path):
    print(roundtrip(zamba2(), tmp_path))


def test_zamba2_gqa_silu_biases_one_block(tmp_path):
    cfg = zamba2(
        num_mem_blocks=1,
        use_shared_attention_adapter=False,
        num_key_value_heads=2,
        hidden_act="silu",
        add_bias_linear=True,
        use_mem_rope=False,
    )
    print(roundtrip(cfg, tmp_path))


def test_zamba2_untied_one_block_per_use(tmp_path):
    """Untied embeddings: transformers ties no shared block then, so each hybrid layer needs its own block."""
    print(roundtrip(zamba2(num_mem_blocks=3, tie_word_embeddings=False), tmp_path, float64=False))
    d = written(zamba2(num_mem_blocks=2, tie_word_embeddings=False))
    with pytest.raises(ConvertError, match="tie_word_embeddings = false with fewer num_mem_blocks"):
        from_hf(d)


def test_zamba2_parameter_count_and_text(tmp_path):
    cfg = zamba2()
    hf = transformers.AutoModelForCausalLM.from_config(cfg)
    hf.save_pretrained(tmp_path)
    ours = hybriddsl.from_pretrained(tmp_path)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in hf.parameters())
    text = from_hf(written(cfg))
    assert text.count("shared Z(") == 2 and "@1,4" in text and "@3" in text  # blocks used in turn
    g = api.compile(text)
    assert g.totals["params"] == sum(p.numel() for p in hf.parameters())
    dot = api.render(text, tmp_path / "z.dot").read_text()  # the diagram draws the side blocks
    assert dot.count("zamba_shared") >= 3
    ns: dict = {}
    exec(ours.code, ns)  # the generated source computes the same (side steps printed, not refused)
    gen = ns["Model"]()
    gen.load_state_dict(ours.state_dict())
    ids = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        assert torch.allclose(gen(ids), ours(ids), atol=1e-6)


def test_zamba2_rope_scaling_is_refused_by_field():
    d = written(zamba2())
    d["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 50.0, "factor": 2.0}
    with pytest.raises(ConvertError, match="rope_parameters.rope_type 'yarn' is not supported for Zamba2"):
        from_hf(d)


def test_zamba_block_outside_shared_is_an_error():
    from hybriddsl.errors import HybOptionError

    with pytest.raises(HybOptionError, match="side block"):
        api.compile("hidden = 32; vocab = 64; norm = rmsnorm; M2 Z M2")


def test_hybrid_layer_feeds_the_norm_not_the_stream():
    """The structure itself, against a plain-PyTorch reading of the .hyb model: h1 = h + M(norm(h + Z(h, x0)))."""
    m = api.parse_and_build(
        "hidden = 16; vocab = 20; norm = rmsnorm; mamba2.head_dim = 8; mamba2.state = 4\nM2 M2\n"
        "shared Z(heads=2, rank=2, inner=24)@1"
    )
    m = m[-1] if isinstance(m, tuple) else m
    torch.manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ids = torch.randint(0, 20, (2, 7))
    b = m.blocks
    keys = list(b.keys())
    z = next(k for k in keys if "zamba" in k)
    mix = [k for k in keys if k.startswith("mamba2")]
    norms = [k for k in keys if "norm" in k and "shared" not in k]
    with torch.no_grad():
        x0 = m.embed(ids)
        h = x0 + b[mix[0]](b[norms[0]](x0))
        t = b[z](h, x0, 0)
        h = h + b[mix[1]](b[norms[1]](h + t))
        want = m.head(b[norms[2]](h))
        assert torch.allclose(m(ids), want, atol=1e-5)


def test_zamba2_missing_adapter_and_wrong_shape_are_named(tmp_path):
    from safetensors.torch import load_file, save_file

    from hybriddsl.errors import HybFileError

    transformers.AutoModelForCausalLM.from_config(zamba2()).save_pretrained(tmp_path)
    f = tmp_path / "model.safetensors"
    sd = load_file(f)
    name = "model.layers.1.shared_transformer.feed_forward.gate_up_proj_adapter_list.2.1.weight"  # block 0, use 2
    t = sd.pop(name)
    save_file(sd, f, metadata={"format": "pt"})
    with pytest.raises(HybFileError, match=f"tensor '{name}' is missing"):
        hybriddsl.from_pretrained(tmp_path)
    sd[name] = t[:, :2].contiguous()
    save_file(sd, f, metadata={"format": "pt"})
    with pytest.raises(HybFileError, match=r"has shape \[80, 2\], the config says \[80, 4\]"):
        hybriddsl.from_pretrained(tmp_path)
