"""Model-level initialization (hybriddsl/init.py): embedding and head scales, depth-scaled residual outputs.

References are the published formulas, not the code's output: ln(vocab) for a model that starts uniform,
xavier/kaiming stds from their definitions divided by sqrt(#residual blocks) (GPT-2, mamba_ssm), Mamba's dt and
A inits from mamba_ssm.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hybriddsl import parse_and_build

V = 256


def _first_loss(src: str, **settings) -> float:
    torch.manual_seed(0)
    model = parse_and_build(src, vocab=V, output="logits", **settings).eval()
    x = torch.randint(0, V, (8, 32))
    y = torch.randint(0, V, (8, 32))
    with torch.no_grad():
        return F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()


@pytest.mark.parametrize("src", ["pos = rope\nA A", "M A", "D GLA L"], ids=["attention", "mamba", "recurrent"])
@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_first_loss_is_near_ln_vocab(src, tie):
    # uniform prediction costs ln(V) = 5.55; GPT-2's N(0, 1) embedding under a tied head would start near 5 + 8
    assert abs(_first_loss(src, hidden=64, heads=4, tie_embeddings=tie) - math.log(V)) < 0.1


@pytest.mark.parametrize(("settings", "std"), [({}, 1.0), ({"tie_embeddings": True}, 0.02), ({"embed_std": 0.3}, 0.3)])
def test_embedding_std_follows_the_setting(settings, std):
    torch.manual_seed(0)
    model = parse_and_build("A", vocab=1000, hidden=64, heads=4, **settings)
    assert model.embed.weight.std().item() == pytest.approx(std, rel=0.03)
    assert model.embed.weight.mean().abs().item() < 0.01 * std + 1e-4
    head = model.head.weight
    if settings.get("tie_embeddings"):
        assert head is model.embed.weight
    else:  # muP's readout: std 1 / fan_in
        assert head.std().item() == pytest.approx(1 / 64, rel=0.03)


def _xavier_std(fan_in: int, fan_out: int) -> float:
    return math.sqrt(2.0 / (fan_in + fan_out))


def _kaiming_default_std(fan_in: int) -> float:  # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    return 1.0 / math.sqrt(3 * fan_in)


def test_residual_outputs_are_scaled_by_sqrt_of_the_number_of_blocks():
    torch.manual_seed(0)
    h = 64
    model = parse_and_build("A*8", hidden=h, heads=4)  # 8 attention + 8 FFN residual blocks
    n = sum(st.op == "mixer" for st in model.plan)
    assert n == 16
    attn = [m for m in model.blocks.values() if hasattr(m, "out_proj")]
    ffn = [m for m in model.blocks.values() if hasattr(m, "down")]
    assert len(attn) == len(ffn) == 8
    out = torch.cat([m.out_proj.weight.flatten() for m in attn])
    q = torch.cat([m.q_proj.weight.flatten() for m in attn])
    down = torch.cat([m.down.weight.flatten() for m in ffn])
    up = torch.cat([m.up.weight.flatten() for m in ffn])
    assert out.std().item() == pytest.approx(_xavier_std(h, h) / math.sqrt(n), rel=0.02)
    assert down.std().item() == pytest.approx(_kaiming_default_std(4 * h) / math.sqrt(n), rel=0.02)
    assert q.std().item() == pytest.approx(_xavier_std(h, h), rel=0.02)  # inputs to a block keep their init
    assert up.std().item() == pytest.approx(_kaiming_default_std(h), rel=0.02)


def test_a_shared_block_is_scaled_once_by_its_number_of_uses():
    torch.manual_seed(0)
    model = parse_and_build("A(ffn=false)*4\ntie A", hidden=64, heads=4)
    (block,) = {id(m): m for m in model.blocks.values() if hasattr(m, "out_proj")}.values()
    # one module, four residual blocks: scaled by 1/2 once (1/4 if scaled at every use)
    assert block.out_proj.weight.std().item() == pytest.approx(_xavier_std(64, 64) / 2, rel=0.05)


def test_mamba_keeps_its_published_init_and_only_out_proj_is_scaled():
    torch.manual_seed(0)
    model = parse_and_build("M*4", hidden=64, **{"mamba.state": 16})
    n = sum(st.op == "mixer" for st in model.plan)
    for m in model.blocks.values():
        if not hasattr(m, "dt_proj"):
            continue
        d_inner = m.out_proj.in_features
        # mamba_ssm: dt = softplus(b) log-uniform in [1e-3, 1e-1] (floored at 1e-4), A = 1..N per channel
        dt = F.softplus(m.dt_proj.bias.detach())
        assert dt.min().item() >= 1e-3 * 0.999 and dt.max().item() <= 1e-1 * 1.001
        a_log = m.A_log.detach()
        torch.testing.assert_close(a_log, torch.log(torch.arange(1, 17.0)).expand(d_inner, 16))
        assert m.out_proj.weight.std().item() == pytest.approx(_kaiming_default_std(d_inner) / math.sqrt(n), rel=0.03)
        assert m.in_proj.weight.std().item() == pytest.approx(_kaiming_default_std(64), rel=0.03)
