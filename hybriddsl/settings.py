"""Model-wide settings (``hidden = 512``) and how settings reach layer options.

A setting is either one of :data:`MODEL_SETTINGS`, or the name of an option that some layer kinds take (it
becomes the default for every kind that has that option: ``heads = 8``), or ``kind.option`` (the default for one
kind: ``mamba.state = 32``). Layer options written on a layer override all of these.
"""

from __future__ import annotations

from hybriddsl.registry import Option

MODEL_SETTINGS: tuple[Option, ...] = (
    Option("hidden", int, 256, "width of the residual stream", min=1),
    Option(
        "embed_dim",
        int,
        None,
        "input feature size for feature inputs (default: hidden)",
        min=1,
        optional=True,
    ),
    Option("vocab", int, None, "vocabulary size: token-id input, embedding in, LM head out", min=1, optional=True),
    Option("norm", str, "layernorm", "norm of every residual block", choices=("layernorm", "rmsnorm")),
    Option("norm_eps", float, 1e-5, "epsilon of every norm", min=0.0),
    Option("pre_norm", bool, True, "x + block(norm(x)) (true) or norm(x + block(x)) (false)"),
    Option(
        "pos",
        str,
        "none",
        "positional encoding: sinusoidal (added to the input) or rope (rotary, inside every attention layer)",
        choices=("none", "sinusoidal", "rope"),
    ),
    Option(
        "output",
        str,
        None,
        "last: [B, hidden] at the last position; sequence: [B, T, hidden]; "
        "logits: [B, T, vocab] (default: last, or logits with vocab)",
        choices=("last", "sequence", "logits"),
        optional=True,
    ),
    Option(
        "dropout",
        float,
        0.0,
        "dropout on each block's output (and attention probabilities)",
        min=0.0,
        max=0.99,
    ),
    Option("seq_len", int, 2048, "sequence length assumed for FLOP and state-size counts", min=1),
    Option("tie_embeddings", bool, False, "the LM head reuses the embedding matrix (with vocab)"),
    Option("embed_scale", float, 1.0, "token embeddings are multiplied by this (RecurrentGemma: sqrt(hidden))"),
    Option("logit_scale", float, 1.0, "logits are multiplied by this (Falcon-H1's lm_head_multiplier)"),
    Option(
        "logit_softcap",
        float,
        None,
        "logits become c tanh(logits / c) (RecurrentGemma's logits_soft_cap)",
        min=1e-6,
        optional=True,
    ),
    Option(
        "embed_std",
        float,
        None,
        "std of the token embedding's normal init (default: 1, or GPT-2's 0.02 with a tied head)",
        min=0.0,
        optional=True,
    ),
)

_BY_NAME = {o.name: o for o in MODEL_SETTINGS}


def model_setting(name: str) -> Option | None:
    """The model-wide setting of that name, or None."""
    return _BY_NAME.get(name)
