"""The token embedding and LM head of a checkpoint that scales them: RecurrentGemma multiplies embeddings by
sqrt(hidden) and soft-caps its logits, Falcon-H1 multiplies both by a constant.

Both classes are the plain ``nn.Embedding`` / ``nn.Linear`` (same parameters, same state_dict keys, tying works),
with the scaling in ``forward``. :class:`~hybriddsl.lower.HybridModel` uses them only when a setting asks
(``embed_scale``, ``logit_scale``, ``logit_softcap``), so other models keep the plain classes.
"""

from __future__ import annotations

import torch
from torch import nn


class ScaledEmbedding(nn.Embedding):
    """``embedding(ids) * scale``: ids [...] -> [..., dim]. The product is taken in the weight's dtype."""

    def __init__(self, num: int, dim: int, scale: float = 1.0):
        super().__init__(num, dim)
        self.scale = scale

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids) * self.scale

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale!r}"


class LMHead(nn.Linear):
    """Logits ``c * tanh(scale * W y / c)`` with soft-cap ``c``, or ``scale * W y`` without: y [..., hidden] ->
    [..., vocab] (no bias)."""

    def __init__(self, hidden: int, vocab: int, scale: float = 1.0, softcap: float | None = None):
        super().__init__(hidden, vocab, bias=False)
        self.scale, self.softcap = scale, softcap

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        z = super().forward(y)
        if self.scale != 1.0:
            z = z * self.scale
        if self.softcap is not None:
            z = torch.tanh(z / self.softcap) * self.softcap
        return z

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale!r}, softcap={self.softcap!r}"


def embedding(vocab: int, hidden: int, scale: float) -> nn.Embedding:
    """A plain ``nn.Embedding``, or a :class:`ScaledEmbedding` when ``scale != 1``."""
    return nn.Embedding(vocab, hidden) if scale == 1.0 else ScaledEmbedding(vocab, hidden, scale)


def head(hidden: int, vocab: int, scale: float, softcap: float | None) -> nn.Linear:
    """A plain bias-free ``nn.Linear``, or an :class:`LMHead` when the logits are scaled or capped."""
    if scale == 1.0 and softcap is None:
        return nn.Linear(hidden, vocab, bias=False)
    return LMHead(hidden, vocab, scale, softcap)
