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
