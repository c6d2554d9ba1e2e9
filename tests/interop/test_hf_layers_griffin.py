"""Our Griffin block and attention against transformers' RecurrentGemma modules, weights copied over.

The modules are built from ``RecurrentGemmaConfig`` (transformers' own config class) and given random weights;
ours is built with the options a RecurrentGemma checkpoint needs (block-diagonal gates, reset at position 0,
tanh GELU; partial RoPE and an output bias for attention). Both run in float32: transformers' RG-LRU scans in
float32 whatever the input dtype, so float64 would compare our float64 against its float32.
"""

from __future__ import annotations

import torch
import transformers  # a test dependency (the dev extra): these tests must run, not skip
from transformers.models.recurrent_gemma import modeling_recurrent_gemma as rg  # noqa: E402

from hybriddsl.layers.attention import Attention  # noqa: E402
from hybriddsl.layers.ffn import FFN  # noqa: E402
from hybriddsl.layers.griffin import GriffinBlock  # noqa: E402


def _config(**kw):
    base = dict(
        hidden_size=48,
        lru_width=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=96,
        conv1d_width=4,
        attention_window_size=6,
        vocab_size=50,
        num_hidden_layers=3,
    )
    base.update(kw)
    cfg = transformers.RecurrentGemmaConfig(**base)
    cfg._attn_implementation = "eager"
    return cfg


def _randomize(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> None:
    err = (a - b).abs().max().item()
    assert err <= rel * b.abs().max().item(), f"max abs difference {err:.2e} (scale {b.abs().max().item():.2e})"


def _our_griffin(cfg) -> GriffinBlock:
    return GriffinBlock(
        cfg.hidden_size,
        width=cfg.lru_width,
        conv=cfg.conv1d_width,
        gelu_tanh=True,
        gate_blocks=cfg.num_attention_heads,
        reset=True,
    )


def _copy_griffin(ours: GriffinBlock, theirs) -> None:
    sd = theirs.state_dict()
    with torch.no_grad():
        for a, b in (("in_y", "linear_y"), ("in_x", "linear_x"), ("out_proj", "linear_out")):
            getattr(ours, a).weight.copy_(sd[f"{b}.weight"])
            getattr(ours, a).bias.copy_(sd[f"{b}.bias"])
        ours.conv.conv.weight.copy_(sd["conv_1d.weight"])
        ours.conv.conv.bias.copy_(sd["conv_1d.bias"])
        ours.gate_i.weight.copy_(sd["rg_lru.input_gate_weight"])
        ours.gate_i.bias.copy_(sd["rg_lru.input_gate_bias"])
        ours.gate_a.weight.copy_(sd["rg_lru.recurrent_gate_weight"])
        ours.gate_a.bias.copy_(sd["rg_lru.recurrent_gate_bias"])
        ours.lam.copy_(-sd["rg_lru.recurrent_param"])  # theirs: log a = -8 r softplus(p); ours: softplus(-lam)


def test_griffin_block_equals_recurrent_gemma_block():
    cfg = _config()
    theirs = rg.RecurrentGemmaRecurrentBlock(cfg, 0).eval()
    _randomize(theirs, 0)
    ours = _our_griffin(cfg).eval()
    _copy_griffin(ours, theirs)
    x = torch.randn(2, 11, cfg.hidden_size, generator=torch.Generator().manual_seed(1))
    pos = torch.arange(11)[None].expand(2, -1)
    with torch.no_grad():
        ref, _ = theirs(x, pos, None, use_cache=False)
        _close(ours(x), ref)
        # their cached decoding: a prefill of 5 tokens, then one token at a time; ours steps from the start
        out = [theirs(x[:, :5], pos[:, :5], None, use_cache=True)[0]]
        for t in range(5, 11):
            out.append(theirs(x[:, t : t + 1], pos[:, t : t + 1], None, use_cache=True)[0])
        cached = torch.cat(out, 1)
        state = ours.init_state(2)
        steps = []
        for t in range(11):
            y, state = ours.step(x[:, t], state)
            steps.append(y)
    _close(cached, ref)
    _close(torch.stack(steps, 1), cached)


def test_griffin_block_gradients_equal_recurrent_gemma_block():
    """Gradients of the input and of every weight, ours (chunked scan, fused gate coefficients, hand-written
    backwards) against autograd through transformers' block, over a sequence long enough to be chunked."""
    cfg = _config()
    theirs = rg.RecurrentGemmaRecurrentBlock(cfg, 0).train()
    _randomize(theirs, 5)
    ours = _our_griffin(cfg).train()
    _copy_griffin(ours, theirs)
    g = torch.Generator().manual_seed(6)
    t = 50
    x = torch.randn(2, t, cfg.hidden_size, generator=g)
    w = torch.randn(2, t, cfg.hidden_size, generator=g)
    pos = torch.arange(t)[None].expand(2, -1)
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    (ours(xs[0]) * w).sum().backward()
    (theirs(xs[1], pos, None, use_cache=False)[0] * w).sum().backward()
    _close(xs[0].grad, xs[1].grad, rel=1e-4)
    sd = dict(theirs.named_parameters())
    pairs = {"in_y.weight": "linear_y.weight", "in_x.bias": "linear_x.bias", "out_proj.weight": "linear_out.weight"}
    pairs |= {"conv.conv.weight": "conv_1d.weight", "gate_i.weight": "rg_lru.input_gate_weight"}
    pairs |= {"gate_a.weight": "rg_lru.recurrent_gate_weight", "gate_a.bias": "rg_lru.recurrent_gate_bias"}
    for name, their_name in pairs.items():
        _close(ours.get_parameter(name).grad, sd[their_name].grad, rel=1e-4)
    _close(ours.lam.grad, -sd["rg_lru.recurrent_param"].grad, rel=1e-4)  # ours is Λ = -theirs


def test_attention_equals_recurrent_gemma_attention():
    cfg = _config()
    theirs = rg.RecurrentGemmaAttention(cfg, 2).eval()
    _randomize(theirs, 2)
    d = cfg.head_dim
    ours = Attention(
        cfg.hidden_size,
        heads=cfg.num_attention_heads,
        kv_heads=cfg.num_key_value_heads,
        head_dim=d,
        window=cfg.attention_window_size,
        rope=True,
        rope_theta=cfg.rope_parameters["rope_theta"],
        rope_dim=int(d * cfg.rope_parameters["partial_rotary_factor"]),
        bias=cfg.attention_bias,
        out_bias=True,
        ffn=False,
    ).eval()
    sd = theirs.state_dict()
    with torch.no_grad():
        for n in ("q", "k", "v"):
            getattr(ours, f"{n}_proj").weight.copy_(sd[f"{n}_proj.weight"])
        ours.out_proj.weight.copy_(sd["o_proj.weight"])
        ours.out_proj.bias.copy_(sd["o_proj.bias"])
    t = 13
    x = torch.randn(2, t, cfg.hidden_size, generator=torch.Generator().manual_seed(3))
    i, j = torch.arange(t)[:, None], torch.arange(t)[None]
    keep = (j <= i) & (i - j < cfg.attention_window_size)  # transformers' sliding-window mask, counting t itself
    mask = torch.zeros(t, t).masked_fill(~keep, float("-inf"))[None, None]
    with torch.no_grad():
        ref, _ = theirs(x, torch.arange(t)[None], mask)
        _close(ours(x), ref)
        state = ours.init_state(2)
        steps = []
        for s in range(t):
            y, state = ours.step(x[:, s], state)
            steps.append(y)
    _close(torch.stack(steps, 1), ref)


def test_gated_mlp_equals_recurrent_gemma_mlp():
    cfg = _config()
    theirs = rg.RecurrentGemmaMlp(cfg).eval()
    _randomize(theirs, 4)
    ours = FFN(cfg.hidden_size, inner=cfg.intermediate_size // 2, act="geglu_tanh", bias=True)
    sd = theirs.state_dict()
    with torch.no_grad():
        ours.up.weight.copy_(torch.cat([sd["gate_proj.weight"], sd["up_proj.weight"]]))
        ours.up.bias.copy_(torch.cat([sd["gate_proj.bias"], sd["up_proj.bias"]]))
        ours.down.weight.copy_(sd["down_proj.weight"])
        ours.down.bias.copy_(sd["down_proj.bias"])
    x = torch.randn(2, 7, cfg.hidden_size)
    with torch.no_grad():
        _close(ours(x), theirs(x))
