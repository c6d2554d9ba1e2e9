"""Model-level initialization: the rules that need the whole model, applied once after its layers are built.

Each layer initializes its own weights as its paper does (Mamba's ``dt`` bias and ``A_log``, Griffin's ``Λ``,
RWKV-6's schedules...). What a layer cannot know is where it sits: how deep the residual stream is, and how
tokens enter and leave it. :func:`init_model` adds exactly that, one function per rule:

- :func:`init_embedding` — token embedding ``N(0, embed_std)``; ``embed_std`` defaults to 1 with an untied
  head (PyTorch's ``nn.Embedding`` and T5's scale: a token's identity is as loud in the residual stream as the
  blocks' outputs) and 0.02 with a tied one (GPT-2's, so the tied head's first logits stay small).
- :func:`init_head` — an untied LM head starts small, ``N(0, 1/hidden)`` (std ``1/fan_in``: muP's readout,
  Yang et al. 2021, "Tensor Programs V", Table 3): the first logits have std ``hidden^-1/2``, so the first loss
  is ``ln(vocab)`` to within ~``1/(2 hidden)``, whatever the embedding's scale.
- :func:`scale_residual_outputs` — every residual block's output projection is multiplied by
  ``1 / sqrt(n_blocks)``, ``n_blocks`` the number of residual additions in the plan (GPT-2, Radford et al. 2019:
  ``1/sqrt(2 n_layer)`` for its 2 blocks a layer; mamba_ssm's ``rescale_prenorm_residual`` with
  ``n_residuals_per_layer``), so the residual stream's variance at the top stays O(1) at any depth.

The choice was made by measurement (docs/workbench.md, "Initialization"): with GPT-2's tied N(0, 0.02)
embedding an attention-only model stays on the MQAR plateau where Zoology's attention solves it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

GPT2_EMBED_STD = 0.02  # GPT-2's embedding std: the default when the head is tied to the embedding
# names of the linear maps that write a block's output into the residual stream, per kind: attention, Mamba,
# Mamba-2, GLA, Griffin, GRU, RWKV time mix ``out_proj``; DeltaNet / Gated DeltaNet ``o_proj``; FFN ``down``;
# RWKV channel mix ``value`` (its W_v); a parallel block with ``mix = concat`` ``proj``
RESIDUAL_OUT = ("out_proj", "o_proj", "down", "value", "proj")


def embed_std(settings: dict[str, Any]) -> float:
    """The embedding's init std: the ``embed_std`` setting, else 1 (untied head) or GPT-2's 0.02 (tied head)."""
    std = settings.get("embed_std")
    if std is not None:
        return float(std)
    return GPT2_EMBED_STD if settings.get("tie_embeddings") else 1.0


@torch.no_grad()
def init_embedding(embed: nn.Embedding, std: float) -> None:
    """``embed.weight`` [vocab, hidden] ~ N(0, std)."""
    nn.init.normal_(embed.weight, std=std)


@torch.no_grad()
def init_head(head: nn.Linear) -> None:
    """An untied LM head [vocab, hidden] ~ N(0, 1/hidden) (muP's readout): logits ~ N(0, 1/hidden) at unit-RMS
    input, first loss ~ ln(vocab)."""
    nn.init.normal_(head.weight, std=1.0 / head.in_features)


def residual_outputs(block: nn.Module) -> list[nn.Linear]:
    """The linear maps whose output is ``block``'s output (what the model adds to the residual stream).

    A parallel block: ``proj`` (concat), each branch's last layer's (mean), none for ``gate`` (each branch is
    RMS-normed and weighted by beta = 1/n, which already sets the output scale). An MoE block: every expert's.
    """
    from hybriddsl.layers.moe import MoE
    from hybriddsl.layers.parallel import Parallel

    if isinstance(block, Parallel):
        if block.mix == "gate":
            return []
        if block.mix == "concat":
            return [block.proj]
        return [lin for branch in block.branches for lin in residual_outputs(branch[-1])]
    if isinstance(block, MoE):
        return [lin for e in block.experts for lin in residual_outputs(e)]
    return [m for name in RESIDUAL_OUT if isinstance(m := getattr(block, name, None), nn.Linear)]


@torch.no_grad()
def scale_residual_outputs(blocks: list[nn.Module], n_blocks: int) -> None:
    """Multiply the output projection weights of each distinct block by ``1 / sqrt(n_blocks)`` (GPT-2).

    ``blocks``: the mixer modules in plan order (a shared block appears once per use and is scaled once);
    ``n_blocks``: the number of residual additions (``len(blocks)``). Biases are left alone (they start at 0
    where a layer has them by its paper's init; PyTorch's default otherwise).
    """
    if n_blocks <= 1:
        return
    weights = [lin.weight for b in {id(b): b for b in blocks}.values() for lin in residual_outputs(b)]
    if weights:  # one foreach call: a 1,000-layer model has ~1,000 of them
        torch._foreach_mul_(weights, 1.0 / math.sqrt(n_blocks))


def init_model(model: nn.Module, settings: dict[str, Any]) -> None:
    """Apply the model-level rules to a freshly built :class:`~hybriddsl.lower.HybridModel` (in place)."""
    if isinstance(model.embed, nn.Embedding):
        init_embedding(model.embed, embed_std(settings))
    if model.head is not None and model.head.weight is not getattr(model.embed, "weight", None):
        init_head(model.head)
    mixers = [model.blocks[st.key] for st in model.plan if st.op == "mixer"]
    scale_residual_outputs(mixers, len(mixers))
