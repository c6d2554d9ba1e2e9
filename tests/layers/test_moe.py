"""moe: against a per-token loop over its top-k experts, the Switch balance loss by its formula, shared checks.

check_trains needs memory (predict the token two steps back), which a position-wise block cannot have; the
position-wise learning test here fits a fixed random teacher instead.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hybriddsl.layers.moe import SPEC, MoE, moe_flops
from tests.layers.checks import check_causal, check_dtypes, check_gradcheck, check_step_matches_forward


def reference(m: MoE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token by token: softmax router, k largest, renormalize, sum of weighted experts; and the aux loss."""
    flat = x.reshape(-1, x.shape[-1])
    ys, all_probs, chosen = [], [], []
    for tok in flat:
        p = torch.softmax(m.router.weight.double() @ tok.double(), -1)
        order = sorted(range(m.n_experts), key=lambda e: -float(p[e]))[: m.top_k]
        total = sum(float(p[e]) for e in order)
        ys.append(sum(float(p[e]) / total * m.experts[e](tok.unsqueeze(0))[0].double() for e in order))
        all_probs.append(p)
        chosen += order
    probs = torch.stack(all_probs)
    f = torch.tensor([chosen.count(e) / len(chosen) for e in range(m.n_experts)], dtype=torch.float64)
    aux = m.aux_weight * m.n_experts * (f * probs.mean(0)).sum()
    return torch.stack(ys).reshape(x.shape), aux


CASES = {
    "E8-K2-gelu": dict(experts=8, top_k=2),
    "E4-K1-swiglu": dict(experts=4, top_k=1, act="swiglu", mult=2.0),
    "E3-K3-bias": dict(experts=3, top_k=3, bias=True, aux_weight=0.1),
}


@pytest.mark.parametrize("opts", list(CASES.values()), ids=list(CASES))
def test_matches_per_token_loop(opts):
    torch.manual_seed(0)
    m = MoE(16, **opts)
    with torch.no_grad():  # a wider router so that tokens really spread over the experts
        m.router.weight.mul_(10)
    x = torch.randn(2, 9, 16)
    with torch.no_grad():
        y = m(x)
        ref, aux = reference(m, x)
    assert (y.double() - ref).abs().max() < 1e-5
    assert abs(m.aux_loss.item() - aux.item()) < 1e-6


def test_every_expert_used_and_aux_backprops():
    torch.manual_seed(0)
    m = MoE(16, experts=4, top_k=2)
    with torch.no_grad():
        m.router.weight.mul_(10)
    x = torch.randn(4, 16, 16)
    m(x)
    _, idx, _ = m.route(x.reshape(-1, 16))
    assert set(idx.unique().tolist()) == {0, 1, 2, 3}
    m.aux_loss.backward()
    assert m.router.weight.grad is not None and m.router.weight.grad.abs().sum() > 0


def test_uniform_router_gives_aux_weight():
    m = MoE(8, experts=4, top_k=4, aux_weight=0.5)
    with torch.no_grad():
        m.router.weight.zero_()
    m(torch.randn(2, 5, 8))
    assert abs(m.aux_loss.item() - 0.5) < 1e-6


def test_deterministic():
    torch.manual_seed(0)
    m = MoE(16, experts=8, top_k=2)
    x = torch.randn(3, 11, 16)
    a, b = m(x), m(x)
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "opts", [dict(experts=4, top_k=2), dict(experts=3, top_k=1, act="swiglu")], ids=["E4-K2", "E3-K1-swiglu"]
)
def test_shared_checks(opts):
    check_step_matches_forward(MoE(16, **opts), 16, seq=9)
    check_causal(MoE(16, **opts), 16)
    check_gradcheck(MoE(4, **opts, mult=1.0), 4, seq=3)
    # bf16/fp32 finiteness and gradients everywhere: enough tokens that every expert is chosen
    torch.manual_seed(0)
    m = MoE(16, **opts)
    with torch.no_grad():
        m.router.weight.mul_(10)
    check_dtypes(m, 16, seq=48)


def test_param_count_and_flops():
    h, e, k = 16, 4, 2
    m = MoE(h, experts=e, top_k=k, mult=2.0, act="swiglu")
    inner = 2 * h
    per_expert = h * 2 * inner + inner * h  # swiglu: up [2 inner, h], down [h, inner], no biases
    p = sum(x.numel() for x in m.parameters())
    assert p == h * e + e * per_expert
    assert moe_flops(SPEC.complete(dict(experts=e, top_k=k)), h, p, 100) == 2 * (h * e + k * per_expert)


def test_learns_a_pointwise_function():
    """An MoE block fits a fixed random tanh teacher; the MSE falls below a third of the start."""
    torch.manual_seed(0)
    h = 8
    teacher = nn.Sequential(nn.Linear(h, 16), nn.Tanh(), nn.Linear(16, h))
    m = MoE(h, experts=4, top_k=2, mult=2.0)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(120):
        x = torch.randn(64, 4, h)
        with torch.no_grad():
            y = teacher(x)
        loss = (m(x) - y).pow(2).mean() + m.aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.33 * sum(losses[:5]) / 5


def test_bad_options():
    assert SPEC.validate(SPEC.complete({"experts": 4, "top_k": 5}), 16) == "top_k (5) must be <= experts (4)"
    assert "capacity" in SPEC.validate(SPEC.complete({"experts": 4, "top_k": 2, "capacity": 1.25}), 16)
    assert SPEC.validate(SPEC.complete({"experts": 4, "top_k": 2, "capacity": None}), 16) is None
    assert SPEC.option("act").check("relu").startswith("option 'act' must be one of gelu, swiglu, geglu")
    with pytest.raises(ValueError, match="top_k"):
        MoE(8, experts=2, top_k=3)


def routed_reference(m: MoE, x: torch.Tensor) -> torch.Tensor:
    """Token by token, the checkpoints' routing rules written out (float64): scores (softmax or sigmoid), a
    choice score with the bias, the best ``topk_groups`` groups by their top-2 sums, the top-k of the rest,
    weights = scores (renormalized when norm_topk) times scale, plus the shared expert."""
    flat = x.reshape(-1, x.shape[-1]).double()
    per = m.n_experts // m.groups
    ys = []
    for tok in flat:
        logits = m.router.weight.double() @ tok
        s = torch.softmax(logits, -1) if m.score == "softmax" else torch.sigmoid(logits)
        c = s + (m.score_bias.double() if m.score_bias is not None else 0.0)
        gscore = [sorted(c[g * per : (g + 1) * per].tolist(), reverse=True)[:2] for g in range(m.groups)]
        groups = sorted(range(m.groups), key=lambda g: -sum(gscore[g]))[: m.topk_groups]
        allowed = [e for e in range(m.n_experts) if e // per in groups]
        chosen = sorted(allowed, key=lambda e: -float(c[e]))[: m.top_k]
        w = {e: float(s[e]) for e in chosen}
        if m.norm_topk:
            total = sum(w.values())
            w = {e: v / total for e, v in w.items()}
        y = sum(m.scale * w[e] * m.experts[e].double()(tok[None])[0] for e in chosen)
        if m.shared is not None:
            y = y + m.shared.double()(tok[None])[0]
        ys.append(y)
    return torch.stack(ys).reshape(x.shape)


@pytest.mark.parametrize(
    "opts",
    [
        dict(experts=4, top_k=2, norm_topk=False, act="swiglu", inner=12),  # Jamba / OLMoE norm_topk_prob=false
        dict(experts=8, top_k=3, score="sigmoid", score_bias=True, groups=4, topk_groups=2, scale=2.5, shared=20),
        dict(experts=6, top_k=2, score="sigmoid", act="relu2", shared=8, shared_bias=True, norm_topk=False),
    ],
    ids=["no-renorm", "deepseek-v3-groups", "sigmoid-relu2-shared"],
)
def test_checkpoint_routers_match_their_rules(opts):
    torch.manual_seed(0)
    m = MoE(16, **opts)
    if m.score_bias is not None:
        m.score_bias.normal_(0, 0.3)
    x = torch.randn(2, 7, 16)
    with torch.no_grad():
        got = m(x)
        want = routed_reference(m, x.double())
    assert torch.allclose(got.double(), want, atol=1e-5), (got.double() - want).abs().max()
    assert m.experts[0].up.out_features == (24 if opts.get("act") == "swiglu" else m.experts[0].down.in_features)
    m.float()
    check_step_matches_forward(m, 16)


def test_checkpoint_router_options_checked():
    with pytest.raises(ValueError, match="groups .* must divide experts"):
        MoE(8, experts=6, groups=4)
    with pytest.raises(ValueError, match="topk_groups"):
        MoE(8, experts=8, groups=2, topk_groups=3)


@pytest.mark.parametrize("norm_topk", [False, True])
def test_matches_transformers_olmoe_block(norm_topk):
    """OLMoE's sparse MoE block (norm_topk_prob false and true) with our weights: the same outputs."""
    import transformers
    from transformers.models.olmoe.modeling_olmoe import OlmoeSparseMoeBlock

    cfg = transformers.OlmoeConfig(
        hidden_size=16, intermediate_size=12, num_experts=6, num_experts_per_tok=2, norm_topk_prob=norm_topk
    )
    torch.manual_seed(0)
    ours = MoE(16, experts=6, top_k=2, act="swiglu", inner=12, norm_topk=norm_topk)
    ref = OlmoeSparseMoeBlock(cfg)
    with torch.no_grad():
        ref.gate.weight.copy_(ours.router.weight)
        for e, ex in enumerate(ours.experts):
            ref.experts.gate_up_proj[e].copy_(ex.up.weight)  # [gate; up] in both
            ref.experts.down_proj[e].copy_(ex.down.weight)
        x = torch.randn(2, 9, 16)
        assert torch.allclose(ours(x), ref(x), atol=1e-6)
