"""Our gated DeltaNet and attention against transformers' Qwen3-Next modules, weights copied over.

Built from ``Qwen3NextConfig`` with more value heads than key heads (``linear_num_value_heads = 2 x
linear_num_key_heads``), partial RoPE (``partial_rotary_factor`` 0.25), QK-norm and the gated attention output.
float32: transformers' delta rule and its (1 + w) RMSNorms compute in float32 whatever the input dtype.
"""

from __future__ import annotations

import torch
import transformers  # a test dependency (the dev extra): these tests must run, not skip
from transformers.models.qwen3_next import modeling_qwen3_next as qn  # noqa: E402

from hybriddsl.layers.attention import Attention  # noqa: E402
from hybriddsl.layers.gated_delta_net import GatedDeltaNet  # noqa: E402


def _config(**kw):
    base = dict(
        hidden_size=48,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        linear_key_head_dim=8,
        linear_value_head_dim=12,
        linear_conv_kernel_dim=4,
        num_hidden_layers=4,
        vocab_size=64,
        intermediate_size=64,
        moe_intermediate_size=16,
        shared_expert_intermediate_size=24,
        num_experts=4,
        num_experts_per_tok=2,
    )
    base.update(kw)
    cfg = transformers.Qwen3NextConfig(**base)
    cfg._attn_implementation = "eager"
    return cfg


def _randomize(module: torch.nn.Module, seed: int, std: float = 0.3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 2e-5) -> None:
    err = (a - b).abs().max().item()
    assert err <= rel * b.abs().max().item(), f"max abs difference {err:.2e} (scale {b.abs().max().item():.2e})"


def gdn_from_hf(theirs, cfg) -> GatedDeltaNet:
    """Our layer with the weights of a Qwen3NextGatedDeltaNet (its fused, per-key-head interleaved projections
    split into ours)."""
    nk, nv = cfg.linear_num_key_heads, cfg.linear_num_value_heads
    dk, dv, r = cfg.linear_key_head_dim, cfg.linear_value_head_dim, nv // nk
    ours = GatedDeltaNet(
        cfg.hidden_size,
        heads=nk,
        head_dim=dk,
        expand_v=dv / dk,
        v_heads=nv,
        conv=cfg.linear_conv_kernel_dim,
        out_eps=cfg.rms_norm_eps,
    )
    sd = theirs.state_dict()
    h = cfg.hidden_size
    q, k, v, z = sd["in_proj_qkvz.weight"].view(nk, 2 * dk + 2 * r * dv, h).split([dk, dk, r * dv, r * dv], 1)
    b, a = sd["in_proj_ba.weight"].view(nk, 2 * r, h).split([r, r], 1)
    cq, ck, cv = sd["conv1d.weight"].split([nk * dk, nk * dk, nv * dv])
    with torch.no_grad():
        for name, w in (("q_proj", q), ("k_proj", k), ("v_proj", v), ("g_proj", z), ("b_proj", b), ("a_proj", a)):
            getattr(ours, name).weight.copy_(w.reshape(-1, h))
        ours.q_conv.conv.weight.copy_(cq)
        ours.k_conv.conv.weight.copy_(ck)
        ours.v_conv.conv.weight.copy_(cv)
        ours.A_log.copy_(sd["A_log"])
        ours.dt_bias.copy_(sd["dt_bias"])
        ours.o_norm.weight.copy_(sd["norm.weight"])
        ours.o_proj.weight.copy_(sd["out_proj.weight"])
    return ours


def test_gated_delta_net_equals_qwen3_next_gated_delta_net():
    cfg = _config()
    theirs = qn.Qwen3NextGatedDeltaNet(cfg, 0).eval()
    _randomize(theirs, 0)
    with torch.no_grad():
        theirs.A_log.uniform_(-1.0, 1.0)  # decays between exp(-e) and 1 per unit of softplus
    ours = gdn_from_hf(theirs, cfg).eval()
    x = torch.randn(2, 21, cfg.hidden_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = theirs(x)
        _close(ours(x), ref)
        state = ours.init_state(2)
        steps = []
        for t in range(x.shape[1]):
            y, state = ours.step(x[:, t], state)
            steps.append(y)
    _close(torch.stack(steps, 1), ref)


def test_attention_equals_qwen3_next_attention():
    cfg = _config()
    theirs = qn.Qwen3NextAttention(cfg, 3).eval()
    _randomize(theirs, 2)
    rope = qn.Qwen3NextRotaryEmbedding(cfg)
    d, nh = cfg.head_dim, cfg.num_attention_heads
    ours = Attention(
        cfg.hidden_size,
        heads=nh,
        kv_heads=cfg.num_key_value_heads,
        head_dim=d,
        qk_norm=True,
        rope=True,
        rope_theta=cfg.rope_parameters["rope_theta"],
        rope_dim=int(d * cfg.rope_parameters["partial_rotary_factor"]),
        out_gate=True,
        ffn=False,
    ).eval()
    sd = theirs.state_dict()
    q, g = sd["q_proj.weight"].view(nh, 2 * d, -1).split([d, d], 1)  # per head: query rows, then gate rows
    with torch.no_grad():
        ours.q_proj.weight.copy_(q.reshape(nh * d, -1))
        ours.gate_proj.weight.copy_(g.reshape(nh * d, -1))
        ours.k_proj.weight.copy_(sd["k_proj.weight"])
        ours.v_proj.weight.copy_(sd["v_proj.weight"])
        ours.out_proj.weight.copy_(sd["o_proj.weight"])
        ours.q_norm.weight.copy_(1.0 + sd["q_norm.weight"])  # Qwen3-Next's RMSNorm scales by (1 + w)
        ours.k_norm.weight.copy_(1.0 + sd["k_norm.weight"])
    t = 13
    x = torch.randn(2, t, cfg.hidden_size, generator=torch.Generator().manual_seed(3))
    pos = torch.arange(t)[None]
    mask = torch.full((t, t), float("-inf")).triu(1)[None, None]
    with torch.no_grad():
        ref, _ = theirs(x, rope(x, pos), mask)
        _close(ours(x), ref)
        state = ours.init_state(2)
        steps = []
        for s in range(t):
            y, state = ours.step(x[:, s], state)
            steps.append(y)
    _close(torch.stack(steps, 1), ref)
