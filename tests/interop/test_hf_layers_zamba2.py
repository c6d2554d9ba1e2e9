"""Our zamba_shared module against transformers' Zamba2 shared transformer block + per-layer linear, use by use:
the same weights (core shared, LoRA adapters and linear per use), the same [stream, embeddings] input."""

from __future__ import annotations

import pytest
import torch
import transformers

from hybriddsl.layers.zamba_shared import ZambaShared


def config(**kw):
    base = dict(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=6,
        layers_block_type=["mamba", "hybrid", "mamba", "hybrid", "hybrid", "hybrid"],
        mamba_d_state=8,
        n_mamba_heads=4,
        num_attention_heads=4,
        num_key_value_heads=4,  # transformers' k/v adapters are 2 x hidden wide: no GQA with them
        intermediate_size=40,
        num_mem_blocks=2,
        use_shared_attention_adapter=True,
        adapter_rank=4,
        use_mem_rope=True,
        max_position_embeddings=64,
        rope_parameters={"rope_type": "default", "rope_theta": 50.0},
    )
    return transformers.Zamba2Config(**{**base, **kw})


def ours_from(model, cfg, block: int, dtype=torch.float32) -> tuple[ZambaShared, list[int]]:
    """Our module for shared block ``block`` with the weights of transformers' model; the decoder layers it is
    used at, in order."""
    ids = cfg.hybrid_layer_ids
    slots = [j for j in range(len(ids)) if j % cfg.num_mem_blocks == block]
    layers = [ids[j] for j in slots]
    act = {"gelu": "geglu", "silu": "swiglu"}[cfg.hidden_act]
    m = ZambaShared(
        cfg.hidden_size,
        heads=cfg.num_attention_heads,
        kv_heads=cfg.num_key_value_heads,
        inner=cfg.intermediate_size,
        act=act,
        bias=cfg.add_bias_linear,
        rank=cfg.adapter_rank,
        attn_adapter=cfg.use_shared_attention_adapter,
        rope=cfg.use_mem_rope,
        rope_theta=cfg.rope_parameters["rope_theta"],
        eps=cfg.rms_norm_eps,
        uses=len(slots),
    ).to(dtype)
    st = model.model.layers[layers[0]].shared_transformer
    sa, ff = st.self_attn, st.feed_forward
    sd = {
        "in_norm.weight": st.input_layernorm.weight,
        "ff_norm.weight": st.pre_ff_layernorm.weight,
        "q_proj.weight": sa.q_proj.weight,
        "k_proj.weight": sa.k_proj.weight,
        "v_proj.weight": sa.v_proj.weight,
        "o_proj.weight": sa.o_proj.weight,
        "gate_up.weight": ff.gate_up_proj.weight,
        "down.weight": ff.down_proj.weight,
    }
    if cfg.add_bias_linear:
        sd["gate_up.bias"], sd["down.bias"] = ff.gate_up_proj.bias, ff.down_proj.bias
    for u, (j, layer) in enumerate(zip(slots, layers)):
        sd[f"uses.{u}.linear.weight"] = model.model.layers[layer].linear.weight
        for i in (0, 1):
            if cfg.adapter_rank:
                sd[f"uses.{u}.gate_up.{i}.weight"] = ff.gate_up_proj_adapter_list[j][i].weight
            if cfg.use_shared_attention_adapter:
                for n in "qkv":
                    sd[f"uses.{u}.{n}.{i}.weight"] = getattr(sa, f"linear_{n}_adapter_list")[j][i].weight
    m.load_state_dict({k: v.detach().to(dtype) for k, v in sd.items()}, strict=True)
    return m.eval(), layers


def reference(model, layer: int, h, x0):
    """transformers: t = linear(shared_transformer([h, x0])) of decoder layer ``layer`` (causal, no cache)."""
    hl = model.model.layers[layer]
    pos = torch.arange(h.shape[1])[None]
    pe = model.model.rotary_emb(h, pos) if model.config.use_mem_rope else None
    with torch.no_grad():
        t = hl.shared_transformer(h, original_hidden_states=x0, layer_idx=layer, position_embeddings=pe)
        return hl.linear(t)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        dict(use_shared_attention_adapter=False, num_key_value_heads=2, hidden_act="silu", add_bias_linear=True),
        dict(num_mem_blocks=1, use_mem_rope=False),
    ],
    ids=["adapters-rope", "gqa-mlp-adapter-only-silu-bias", "one-block-no-rope"],
)
def test_every_use_matches_transformers(kw):
    cfg = config(**kw)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))  # adapters and norms away from their init
    g = torch.Generator().manual_seed(1)
    h, x0 = torch.randn(2, 9, 32, generator=g), torch.randn(2, 9, 32, generator=g)
    for block in range(cfg.num_mem_blocks):
        ours, layers = ours_from(model, cfg, block)
        for u, layer in enumerate(layers):
            ref = reference(model, layer, h, x0)
            with torch.no_grad():
                got = ours(h, x0, u)
            err = (got - ref).abs().max().item() / max(1.0, ref.abs().max().item())
            assert err < 1e-5, (block, u, err)
            # step by step with the KV cache: the same outputs
            st = ours.init_state(2)
            steps = []
            with torch.no_grad():
                for t in range(h.shape[1]):
                    y, st = ours.step(h[:, t], st, x0=x0[:, t], use=u)
                    steps.append(y)
            assert (torch.stack(steps, 1) - got).abs().max().item() / max(1.0, got.abs().max().item()) < 1e-5


def test_uses_differ_and_parameter_count():
    """Each use has its own adapters and linear: uses give different outputs; the parameter count is the core
    plus per-use parts, against the formula from the shapes."""
    cfg = config()
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    ours, layers = ours_from(model, cfg, 0)
    h, x0 = torch.randn(1, 5, 32), torch.randn(1, 5, 32)
    with torch.no_grad():
        assert not torch.allclose(ours(h, x0, 0), ours(h, x0, 1))
    hid, w, r, inner = 32, 64, 4, 40
    core = 3 * w * w + w * hid + w + hid + hid * 2 * inner + inner * hid
    per_use = 3 * (w * r + r * w) + hid * r + r * 2 * inner + hid * hid
    assert sum(p.numel() for p in ours.parameters()) == core + len(layers) * per_use


def test_state_bytes_is_the_kv_cache_after_n_steps():
    m = ZambaShared(16, heads=2, kv_heads=1, rank=2)
    st = m.init_state(1)
    with torch.no_grad():
        for _ in range(5):
            _, st = m.step(torch.randn(1, 16), st, x0=torch.randn(1, 16), use=0)
    cache = sum(t.numel() * t.element_size() for k, t in st.items() if k != "row_pos")
    assert m.state_bytes(5) == cache == 2 * 1 * 16 * 5 * 4
