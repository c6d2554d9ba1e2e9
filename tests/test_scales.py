"""embed_scale, logit_scale, logit_softcap: a model with them against the same weights without, scaled by hand."""

from __future__ import annotations

import torch

import hybriddsl


def test_scaled_embedding_and_capped_logits_against_plain_model():
    src = "hidden = 32, vocab = 50, tie_embeddings = false\nM A"
    plain = hybriddsl.parse_and_build(src).eval()
    scaled = hybriddsl.parse_and_build(
        src.replace("false", "false, embed_scale = 5.65625, logit_scale = 0.5, logit_softcap = 3.0")
    ).eval()
    scaled.load_state_dict(plain.state_dict())
    ids = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        plain.embed.weight.mul_(5.65625)
        ref = torch.tanh(0.5 * plain(ids) / 3.0) * 3.0  # plain logits of scaled embeddings, scaled and capped
        got = scaled(ids)
        state = scaled.init_state(2)
        steps = []
        for t in range(7):
            y, state = scaled.step(ids[:, t], state)
            steps.append(y)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(torch.stack(steps, 1), ref, atol=1e-5, rtol=1e-5)
    assert got.abs().max() < 3.0


def test_parallel_sum_is_twice_the_mean():
    """mix=sum (Falcon-H1 adds its attention and Mamba-2 outputs) against mix=mean with the same weights."""
    mean = hybriddsl.parse_and_build("hidden = 32, output = sequence\n[M2(head_dim=16) | A](mix=mean)").eval()
    summed = hybriddsl.parse_and_build("hidden = 32, output = sequence\n[M2(head_dim=16) | A](mix=sum)").eval()
    summed.load_state_dict(mean.state_dict())
    pm, ps = (next(b for b in m.blocks.values() if hasattr(b, "branches")) for m in (mean, summed))
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        torch.testing.assert_close(ps(x), 2 * pm(x))


def test_scales_need_a_vocabulary():
    import pytest

    from hybriddsl.errors import HybOptionError

    with pytest.raises(HybOptionError, match="logit_softcap scales token embeddings or logits"):
        hybriddsl.compile("hidden = 32, logit_softcap = 30.0\nM")
